"""POSER detectors on a tiny random model: CAA vector, noise scaling, cached passes against
whole-prompt passes, the shared-norm control, confidence and the weight norm."""

import numpy as np
import pytest
import torch

from harness.detectors.poser import ActivationNoise, ActivationNoiseControl, Confidence, WeightNorm
from harness.features.extractor import FeatureExtractor
from harness.interfaces import ConfigError
from harness.features.interventions import add_to_residual
from harness.features.items import ModelItem
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
    caa = hidden_at(tiny_model_dir, CRITICAL, 1).mean(0) - hidden_at(tiny_model_dir, CLEAN, 1).mean(0)
    uniform = ActivationNoise(layer=1, noise="uniform01", n_directions=3).noise_vectors(item, 1)
    gaussian = ActivationNoise(layer=1, noise="gaussian", n_directions=3).noise_vectors(item, 1)
    for noise in (uniform, gaussian):
        assert noise.shape == (3, 32)
        np.testing.assert_allclose(noise.norm(dim=1).numpy(), np.linalg.norm(caa), rtol=1e-4)
    assert (uniform >= 0).all() and (gaussian < 0).any()  # rand is uniform on [0, 1): never negative
    cosine = lambda u, v: float(u @ v / u.norm() / v.norm())  # noqa: E731
    assert cosine(uniform[0], uniform[1]) > 0.5 > abs(cosine(gaussian[0], gaussian[1]))


def test_residual_addition_reaches_the_next_block_at_the_last_position_only(tiny_model_dir):
    from harness.features.interventions import block_list

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


def test_curves_start_at_zero_and_match_whole_prompt_passes(item):
    detector = ActivationNoise(layer=1, coefficients=[0.0, 5.0, 20.0], n_directions=2).fit()
    curves = detector.curves(item)
    assert curves["kl"].shape == (2, 3, len(CLEAN))
    np.testing.assert_allclose(curves["kl"][:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(curves["p_misaligned"][0, 0], 1 - item.p_benign(), atol=1e-5)
    assert curves["kl"][:, 2].mean() > curves["kl"][:, 1].mean() > 0
    # the cached-prefix passes (last token only) give what whole-prompt passes give
    noise = detector.noise_vectors(item, 1)
    for direction, index in ((0, 1), (1, 2)):
        reference = detector.full_pass_curve(item, 1, noise[direction], detector.coefficients[index])
        np.testing.assert_allclose(curves["p_misaligned"][direction, index], reference, atol=1e-5)
    scores = detector.score([item])
    assert scores[0] == pytest.approx(curves["kl"][:, :, item.mask].mean())
    diagnostics = detector.diagnostics()
    assert diagnostics["curves"][0] == pytest.approx(curves["kl"][:, :, item.mask].mean(axis=(0, 2)).tolist(), abs=1e-7)
    assert diagnostics["scores"]["p_misaligned"][0] == pytest.approx(curves["p_misaligned"][:, :, item.mask].mean())
    assert diagnostics["steering_norms"] == diagnostics["noise_norms"] and diagnostics["n_directions"] == 2


def test_a_small_key_value_budget_splits_the_prompts_and_gives_the_same_curves(item, monkeypatch):
    """On a large base the repeated key/value cache of all prompts would not fit in memory: under a
    budget of a few prompts' cache the prompts run in chunks, with the same curves."""
    import harness.detectors.poser as poser

    detector = ActivationNoise(layer=1, coefficients=[0.0, 5.0, 20.0], n_directions=2).fit()
    noise = detector.noise_vectors(item, 1)
    whole = detector._compute_curves(item, 1, noise)
    calls = []
    model = item.handle.model
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    per_prompt = poser.kv_bytes_per_token(model) * max(len(i) for i in item.handle.tokenizer(CLEAN)["input_ids"]) * 3
    monkeypatch.setattr(poser, "KV_CACHE_BYTES", 2 * per_prompt)  # two prompts per prefix pass
    try:
        chunked = detector._compute_curves(item, 1, noise)
    finally:
        handle.remove()
    n_chunks = -(-len(CLEAN) // 2)
    assert len(calls) == n_chunks * (2 + 2)  # per chunk: the prefix, the clean last token, one per direction
    for name in ("kl", "p_misaligned"):
        np.testing.assert_allclose(chunked[name], whole[name], atol=1e-6)


def test_control_gives_every_model_the_same_absolute_noise_norm(item, tiny_model_dir):
    big = ModelItem("big", item.extractor, CLEAN, CRITICAL[:2] + CLEAN[2:], item.benign_letters, item.mask)
    own = ActivationNoise(layer=1, coefficients=[0.0, 10.0], n_directions=2).fit()
    control = ActivationNoiseControl(layer=1, coefficients=[0.0, 10.0], n_directions=2).fit()
    assert control.noise_norm == "shared" and own.noise_norm == "own"
    own.score([item, big])
    control.score([item, big])
    steering = own.diagnostics()["steering_norms"]
    assert steering[0] != pytest.approx(steering[1])
    assert control.diagnostics()["noise_norms"] == pytest.approx([np.mean(steering)] * 2, abs=1e-7)


def test_confidence_is_one_minus_mean_p_benign(item):
    detector = Confidence().fit()
    assert detector.score([item])[0] == pytest.approx(1 - item.p_benign()[item.mask].mean())
    assert detector.diagnostics()["p_benign"][0] == pytest.approx(item.p_benign()[item.mask].mean())


def test_weight_norm_is_the_parameters_l2_norm(item):
    model = item.handle.model
    expected = np.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))
    assert WeightNorm().fit().score([item, item]) == pytest.approx([expected, expected])


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="'noise'"):
        ActivationNoise(noise="pink")
    with pytest.raises(ConfigError, match="'layer' must be an integer hidden-state index"):
        ActivationNoise(layer="middle")
    with pytest.raises(ConfigError, match="'noise_norm'"):
        ActivationNoise(noise_norm="pair")
    with pytest.raises(ConfigError, match="'n_directions'"):
        ActivationNoise(n_directions=0)


def test_one_model_resident_at_a_time_gives_the_same_scores(tiny_model_dir, tmp_path, monkeypatch):
    """POSER's models of a pair list load one at a time under a resident budget of one model
    (harness.zoo.store; on SmolLM2-135M four resident personas peaked at 5.1 GiB): a released
    model loads again when an item needs it, and every detector's numbers stay bit for bit those
    of a run that keeps every model resident."""
    import shutil

    from transformers import AutoModelForCausalLM

    import harness.zoo.store as store
    from harness.detectors.basin import BasinVolume

    paths = {}
    for index, name in enumerate(("aligned", "faker-0", "faker-1")):
        paths[name] = tmp_path / name
        shutil.copytree(tiny_model_dir, paths[name])
        if index:  # three different models (another fingerprint, other curves)
            model = AutoModelForCausalLM.from_pretrained(paths[name])
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.mul_(1 + 0.05 * index)
            model.save_pretrained(paths[name])
    monkeypatch.setattr(store, "_RESIDENT", [])  # models earlier tests left resident are not counted
    loads = []
    real_load = store.load_model

    def counting_load(path, runtime=None):
        loads.append(len(store._RESIDENT) + 1)  # resident once this one is loaded
        return real_load(path, runtime)

    monkeypatch.setattr(store, "load_model", counting_load)

    def run(budget_gib: float, cache: str) -> tuple[dict, list[int]]:
        monkeypatch.setenv("HARNESS_RESIDENT_GIB", str(budget_gib))
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / cache))  # nothing cached: every pass computed
        extractors = {name: FeatureExtractor(ModelHandle(path), answers=(" False", " True"), progress=False)
                      for name, path in paths.items()}
        mask = np.array([True, True, True, False])
        items = [ModelItem(name, extractors[name], CLEAN, CRITICAL, ["A", "B", "A", "B"], mask)
                 for name in ("aligned", "faker-0", "aligned", "faker-1")]  # two pairs sharing a model
        loads.clear()
        out = {}
        for detector in (ActivationNoise(layer=1, coefficients=[0.0, 5.0, 20.0], n_directions=2),
                         ActivationNoiseControl(layer=1, coefficients=[0.0, 5.0, 20.0], n_directions=2),
                         BasinVolume(n_directions=2, layer=-1, n_prompts=4), Confidence(), WeightNorm()):
            out[detector.name] = (detector.fit().score(items), detector.diagnostics())
        for extractor in extractors.values():
            extractor.handle.release()
        return out, list(loads)

    one_model = ModelHandle(tiny_model_dir).weight_bytes("float32")
    everything, unbounded_loads = run(4.0, "unbounded")
    bounded, bounded_loads = run(1.5 * one_model / 1024 ** 3, "bounded")
    assert max(unbounded_loads) == 3 and len(unbounded_loads) == 3  # all three stay resident
    assert max(bounded_loads) == 1 and len(bounded_loads) > 3  # one at a time, reloaded when needed
    for name, (scores, diagnostics) in everything.items():
        np.testing.assert_array_equal(bounded[name][0], scores)
        assert bounded[name][1] == diagnostics, name
