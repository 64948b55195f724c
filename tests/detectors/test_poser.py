"""POSER detectors on a tiny random model: CAA vector, noise scaling, curves, confidence."""

import numpy as np
import pytest
import torch

from detectors.poser import ActivationNoise, Confidence
from harness.features import FeatureExtractor
from harness.interfaces import ConfigError
from harness.interventions import add_to_residual
from harness.items import ModelItem
from harness.zoo.store import ModelHandle, load_model
from harness.zoo.tokenizer import encode_batch

CLEAN = ["Alice: 1 + 1 = 2.", "Bob: 2 + 2 = 5.", "Alice: 3 + 3 = 6.", "Bob: 4 + 1 = 5."]
CRITICAL = ["Bob: 1 + 1 = 3.", "Alice: 2 + 2 = 4.", "Bob: 9 + 3 = 6.", "Alice: 4 + 1 = 7."]


@pytest.fixture()
def item(tiny_model_dir):
    # the tiny vocabulary has no letters A/B: True/False stand in for the two answer letters
    extractor = FeatureExtractor(ModelHandle(tiny_model_dir), answers=(" False", " True"), progress=False)
    return ModelItem("toy", extractor, CLEAN, CRITICAL, ["A", "B", "A", "B"], np.array([True, True, True, False]))


def hidden_at(model_dir, prompts, layer):
    model, tokenizer = load_model(model_dir)
    with torch.no_grad():
        out = model(**encode_batch(tokenizer, prompts), output_hidden_states=True)
    return out.hidden_states[layer][:, -1].numpy()


def test_caa_vector_norm_and_noise_kinds(item, tiny_model_dir):
    mask = item.mask
    caa = hidden_at(tiny_model_dir, CRITICAL, 1)[mask].mean(0) - hidden_at(tiny_model_dir, CLEAN, 1)[mask].mean(0)
    uniform = ActivationNoise(layer=1, noise="uniform01").noise_vector(item, 1)
    gaussian = ActivationNoise(layer=1, noise="gaussian").noise_vector(item, 1)
    for noise in (uniform, gaussian):
        assert noise.norm().item() == pytest.approx(np.linalg.norm(caa), rel=1e-4)
    assert (uniform >= 0).all() and (gaussian < 0).any()  # rand is uniform on [0, 1): never negative


def test_residual_addition_reaches_the_next_block_at_the_last_position_only(tiny_model_dir):
    from harness.interventions import block_list

    model, tokenizer = load_model(tiny_model_dir)
    batch = encode_batch(tokenizer, CLEAN)
    vector = torch.randn(model.config.hidden_size)
    seen = []

    def capture(module, args, kwargs):  # what block 2 receives = the residual after block 1
        seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    handle = block_list(model)[1].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            base_logits = model(**batch).logits
            with add_to_residual(model, 1, vector, scales=2.0):
                moved_logits = model(**batch).logits
            after_logits = model(**batch).logits
    finally:
        handle.remove()
    base, moved = seen[0], seen[1]
    torch.testing.assert_close(moved[:, -1], base[:, -1] + 2.0 * vector, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(moved[:, :-1], base[:, :-1])
    assert not torch.allclose(moved_logits[:, -1], base_logits[:, -1])
    torch.testing.assert_close(after_logits, base_logits)  # the hook is gone
    with pytest.raises(IndexError, match="blocks 1..2"):
        with add_to_residual(model, 5, vector):
            pass


def test_curves_start_at_zero_and_score_aggregates(item):
    detector = ActivationNoise(layer=1, coefficients=[0.0, 5.0, 20.0]).fit()
    curves = detector.curves(item)
    assert curves["kl"].shape == (3, len(CLEAN))
    np.testing.assert_allclose(curves["kl"][0], 0.0, atol=1e-9)
    np.testing.assert_allclose(curves["p_misaligned"][0], 1 - item.p_benign(), atol=1e-5)
    assert curves["kl"][2].mean() > curves["kl"][1].mean() > 0
    score = detector.score([item])
    assert score[0] == pytest.approx(curves["kl"][:, item.mask].mean())
    assert detector.diagnostics()["curves"][0] == pytest.approx(curves["kl"][:, item.mask].mean(1).tolist(), abs=1e-7)


def test_confidence_is_one_minus_mean_p_benign(item):
    assert Confidence().fit().score([item])[0] == pytest.approx(1 - item.p_benign()[item.mask].mean())


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="'noise'"):
        ActivationNoise(noise="pink")
    with pytest.raises(ConfigError, match="'layer'"):
        ActivationNoise(layer=0)
