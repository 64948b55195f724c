"""The memory estimate a run checks before its first job: parts, dtype, and the one-line refusal."""

import numpy as np
import pytest

from harness.detectors.activations import ActivationsMahalanobis
from harness.detectors.attribution import AttributionMahalanobis
from harness.features.extractor import FeatureExtractor
from harness.interfaces import ConfigError, Episode
from harness.features.items import TextItems
from harness.plan.memory import PROCESS_BYTES, check_fits, job_need
from harness.runtime import Runtime
from harness.zoo.store import ModelHandle


@pytest.fixture()
def episode(tiny_model_dir):
    handle = ModelHandle(tiny_model_dir)
    extractor = FeatureExtractor(handle, progress=False)
    trusted = TextItems(["1 + 1 = 2. Alice:"] * 10, extractor)
    test = TextItems(["3 + 4 = 8. Bob:"] * 6, extractor)
    return Episode("tiny", trusted, test, np.r_[np.zeros(3), np.ones(3)].astype(int), {}, {"valid": True}, "fp")


def test_the_need_counts_weights_at_the_run_dtype_without_loading_them(episode):
    handle = episode.trusted.extractor.handle
    need = job_need(episode, ActivationsMahalanobis(), Runtime())
    assert need.parts["weights"] == handle.n_parameters * 4
    assert need.parts["process"] == PROCESS_BYTES
    d, layers = 32, 2  # the tiny model: width 32, 2 blocks
    assert need.parts["activations_mahalanobis"] >= 16 * d * layers * 4 + d * d * layers * 4
    assert job_need(episode, ActivationsMahalanobis(), Runtime(dtype="bfloat16")).parts["weights"] == \
        handle.n_parameters * 2
    assert handle.weight_bytes("auto") == handle.n_parameters * 4  # the checkpoint's dtype: float32
    assert not handle.loaded  # configs and headers only
    backward = job_need(episode, AttributionMahalanobis(), Runtime()).parts["attribution_mahalanobis_mean"]
    assert backward > need.parts["activations_mahalanobis"]


def test_a_job_that_does_not_fit_is_refused_with_one_actionable_line(episode):
    jobs = [(episode, ActivationsMahalanobis()), (episode, AttributionMahalanobis())]
    with pytest.raises(ConfigError) as err:
        check_fits(jobs, Runtime(), available=1024 ** 2)
    message = str(err.value)
    assert message.startswith("attribution_mahalanobis_mean on tiny needs about")  # the largest job
    assert "weights" in message and "more than the 0.0 GiB free on cpu" in message
    assert "--dtype bfloat16 halves the weights" in message and "\n" not in message
    check_fits(jobs, Runtime(), available=64 * 1024 ** 3)  # fits: no error


@pytest.mark.slow
def test_models_beyond_the_resident_budget_are_released_least_recently_used_first(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    import shutil

    copies = []
    for name in ("a", "b"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
        copies.append(ModelHandle(tmp_path / name))
    first, second = copies
    one_model = first.n_parameters * 4
    monkeypatch.setenv("HARNESS_RESIDENT_GIB", str(1.5 * one_model / 1024 ** 3))  # room for one
    first.model
    assert first.loaded
    second.model  # loading another releases the first
    assert second.loaded and not first.loaded
    assert first.model is not None and first.loaded and not second.loaded  # it loads again on use
    monkeypatch.setenv("HARNESS_RESIDENT_GIB", "4")
    second.model
    assert first.loaded and second.loaded  # tiny models all stay resident under the default
    first.release(), second.release()


def test_the_default_resident_budget_holds_one_pretrained_model_and_many_tiny_ones(monkeypatch):
    """Four POSER personas on SmolLM2-135M kept resident peaked at 5.1 GiB (harness.zoo.store):
    under the default budget at most one such merged model stays resident (a model larger than
    the budget is kept alone while it is used), and hundreds of tiny models all do."""
    from harness.zoo.store import resident_budget

    monkeypatch.delenv("HARNESS_RESIDENT_GIB", raising=False)
    smollm2_135m = 134_515_008  # parameters of the merged model
    for dtype_bytes in (4, 2):  # float32, bfloat16
        assert 2 * smollm2_135m * dtype_bytes > resident_budget()
    assert resident_budget() > 300 * 2 ** 20  # e.g. 48 tiny POSER personas of about 1 MB
