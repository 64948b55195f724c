"""Run options that reach every model: device, dtype, batch size. The accelerator cases run where
CUDA exists and are skipped elsewhere; the CPU case of the same test exercises the same code."""

import numpy as np
import pytest
import torch

from harness import runtime
from harness.cli import main
from harness.features.extractor import FeatureExtractor
from harness.interfaces import ConfigError
from harness.run.runner import RunOptions, run
from harness.zoo.store import ModelHandle

PROMPTS = ["12 + 7 = 19. Alice:", "3 + 4 = 8. Bob:", "99 + 1 = 100. Alice:"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture()
def reference(tiny_model_dir):
    previous = runtime.use(runtime.Runtime())
    yield FeatureExtractor(ModelHandle(tiny_model_dir), use_cache=False, progress=False).compute(PROMPTS)
    runtime.use(previous)


@pytest.mark.parametrize("device", DEVICES)
def test_features_on_a_device_match_the_cpu_float32_reference(tiny_model_dir, reference, device):
    previous = runtime.use(runtime.Runtime(device=device))
    try:
        handle = ModelHandle(tiny_model_dir)
        features = FeatureExtractor(handle, use_cache=False, progress=False).compute(PROMPTS)
        assert next(handle.model.parameters()).device.type == device
    finally:
        runtime.use(previous)
    np.testing.assert_allclose(features.hidden, reference.hidden, atol=1e-4)
    np.testing.assert_allclose(features.logodds, reference.logodds, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_loads_half_precision_weights_and_stays_close(tiny_model_dir, reference, device):
    previous = runtime.use(runtime.Runtime(device=device, dtype="bfloat16"))
    try:
        handle = ModelHandle(tiny_model_dir)
        features = FeatureExtractor(handle, use_cache=False, progress=False).compute(PROMPTS)
        assert next(handle.model.parameters()).dtype == torch.bfloat16
    finally:
        runtime.use(previous)
    assert features.hidden.dtype == np.float32  # features are float32 whatever the weights
    assert not np.array_equal(features.hidden, reference.hidden)
    np.testing.assert_allclose(features.hidden, reference.hidden, atol=0.1, rtol=0.05)


def test_the_dtype_is_keyed_and_the_runtime_recorded(tmp_path, toy_registry):
    first = run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=tmp_path))
    half = run(toy_registry, "toy", ["activations_mahalanobis"],
               RunOptions(results_dir=tmp_path, runtime=runtime.Runtime(dtype="bfloat16", batch_size=32)))
    ok, ok_half = first[0].record, half[0].record
    assert ok["key"] != ok_half["key"] and half[0].status == "ok"  # not reused across dtypes
    assert ok_half["runtime"] == {"device": "cpu", "dtype": "bfloat16", "batch_size": 32, "device_map": None}
    again = run(toy_registry, "toy", ["activations_mahalanobis"],
                RunOptions(results_dir=tmp_path, runtime=runtime.Runtime(batch_size=8)))
    assert again[0].status == "cached"  # the batch size never changes a number: not keyed


@pytest.mark.parametrize("field, value, problem", [
    ("device", "gpu", "--device must be cpu, cuda, cuda:N, mps or auto"),
    ("dtype", "float64", "--dtype must be one of auto, float32, bfloat16, float16"),
    ("batch_size", 0, "--batch-size must be a positive integer or 'auto'"),
    ("device_map", "balanced", "--device-map must be 'auto'"),
])
def test_bad_runtime_settings_name_the_option(field, value, problem):
    with pytest.raises(ConfigError, match=problem):
        runtime.Runtime(**{field: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_exits_2_with_one_line(tmp_path, capsys):
    assert main(["run", "--task", "mad", "--detector", "activations_mahalanobis", "--quick", "--device", "cuda",
                 "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --device cuda: CUDA is not available here")
    assert not list(tmp_path.rglob("*.json"))


def test_auto_device_resolves_to_what_exists():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        expected = "mps"
    assert runtime.Runtime(device="auto").resolved_device() == expected
