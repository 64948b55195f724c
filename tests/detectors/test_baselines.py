"""The baselines that cannot see the mechanism: name_only (the name token's representation)
and input_only (an n-gram model of the prompt text)."""

import math

import numpy as np
import pytest
import torch

from harness.detectors.baselines import InputOnly, NameOnly, NgramModel, name_prefixes
from harness.features.extractor import FeatureExtractor
from harness.interfaces import ConfigError
from harness.features.items import TextItems
from harness.scoring import auroc
from harness.zoo.store import ModelHandle

TRUSTED_NAMES = ["Alice", "Veronica", "Luna", "Paula"]
OTHER_ALICE = ["Grace", "Iris", "Clara", "Diana"]
BOB_NAMES = ["David", "Ethan", "Frank", "Henry"]


def items_for(names, extractor=None, start=0):
    records, prompts = [], []
    for i, name in enumerate(names * 3):
        prompt = f"{start + i} + {i % 7} = {start + 2 * i}. {name}:"
        prompts.append(prompt)
        records.append({"id": f"r{i}", "template_args": {"character": name}, "statement": prompt})
    return TextItems(prompts, extractor, records)


@pytest.fixture(scope="module")
def name_model_dir(tmp_path_factory):
    """A tiny Llama whose name embeddings are placed by hand: Alice names near one point,
    Bob names far from it."""
    from harness.zoo import TinyModelConfig, build_model, build_word_tokenizer

    torch.set_num_threads(1)
    tokenizer = build_word_tokenizer([*TRUSTED_NAMES, *OTHER_ALICE, *BOB_NAMES, "True", "False"])
    model = build_model(TinyModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32), tokenizer, seed=0)
    generator = torch.Generator().manual_seed(0)
    centre = torch.randn(16, generator=generator)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        for name in TRUSTED_NAMES + OTHER_ALICE:
            weight[tokenizer.convert_tokens_to_ids(name)] = centre + 0.1 * torch.randn(16, generator=generator)
        for name in BOB_NAMES:
            weight[tokenizer.convert_tokens_to_ids(name)] = -centre + 0.1 * torch.randn(16, generator=generator)
    path = tmp_path_factory.mktemp("name-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_name_prefixes_end_at_the_name():
    items = items_for(["Grace"])
    assert all(p.endswith(". Grace") for p in name_prefixes(items))
    with pytest.raises(ConfigError, match="template_args.character"):
        name_prefixes(TextItems(["1 + 1 = 2. Bob:"], None, [{"id": "x"}]))


def test_name_only_reads_the_name_embedding_and_finds_far_names(name_model_dir, isolated_cache):
    extractor = FeatureExtractor(ModelHandle(name_model_dir), progress=False)
    trusted = items_for(TRUSTED_NAMES, extractor)
    test = items_for(OTHER_ALICE + BOB_NAMES, extractor, start=50)
    detector = NameOnly().fit(trusted)
    handle = ModelHandle(name_model_dir)
    ids = [handle.tokenizer.convert_tokens_to_ids(r["template_args"]["character"]) for r in test.records]
    embeddings = handle.model.get_input_embeddings().weight[ids].detach().numpy()
    np.testing.assert_allclose(detector.features(test), embeddings, rtol=1e-5, atol=1e-6)
    scores = detector.score(test)
    labels = np.array([r["template_args"]["character"] in BOB_NAMES for r in test.records], dtype=int)
    assert auroc(labels, scores) == 1.0
    # the statement around the name changes nothing at layer 0
    same_names = items_for(OTHER_ALICE + BOB_NAMES, extractor, start=900)
    np.testing.assert_allclose(detector.score(same_names), scores, rtol=1e-6)


def test_name_only_settings():
    with pytest.raises(ConfigError, match="'layer' must be an integer hidden-state index"):
        NameOnly(layer="last")
    assert NameOnly(layer=-1).layer == -1  # negative counts from the end, as everywhere (harness.layers)
    with pytest.raises(ConfigError, match="'covariance'"):
        NameOnly(covariance="full")


def test_ngram_probabilities():
    model = NgramModel(alpha=1.0).fit(["Alice says 1", "Alice says 2"])
    # tokens: Alice x2, says x2, 1, 2 -> 6 tokens, 4 types + 1 unseen slot
    assert model.token_nll("Alice") == pytest.approx(-math.log(3 / 11))
    unseen_word, unseen_digit = model.token_nll("Luna"), model.token_nll("7")
    assert unseen_digit == pytest.approx(-math.log(1 / 11))
    assert unseen_word > unseen_digit  # an unseen word also pays for its characters
    assert model.nll("Alice says 1") == pytest.approx(sum(model.token_nll(t) for t in ("Alice", "says", "1")))


def test_input_only_sees_name_spelling_but_nothing_else():
    trusted = items_for(TRUSTED_NAMES)
    detector = InputOnly().fit(trusted)
    # the same statement with two unseen names: only the names' spelling can differ
    near, far = TextItems(["3 + 4 = 7. Lina:"]), TextItems(["3 + 4 = 7. Xzqk:"])
    assert detector.score(far)[0] > detector.score(near)[0]
    # a prompt is scored by itself, whatever it is scored with
    test = items_for(OTHER_ALICE + BOB_NAMES, start=50)
    scores = detector.score(test)
    np.testing.assert_array_equal(detector.score(TextItems(list(test.prompts)[:5])), scores[:5])
    assert np.all(np.isfinite(scores))
    with pytest.raises(ConfigError, match="'alpha'"):
        InputOnly(alpha=0)


# -- steering_norm (POSER) -------------------------------------------------------------------

CLEAN = ["Alice: 1 + 1 = 2.", "Bob: 2 + 2 = 5.", "Alice: 3 + 3 = 6.", "Bob: 4 + 1 = 5."]
CRITICAL = ["Bob: 1 + 1 = 3.", "Alice: 2 + 2 = 4.", "Bob: 9 + 3 = 6.", "Alice: 4 + 1 = 7."]


def model_item(model_dir, name="toy"):
    from harness.features.items import ModelItem

    # the tiny vocabulary has no letters A/B: True/False stand in for the two answer letters
    extractor = FeatureExtractor(ModelHandle(model_dir), answers=(" False", " True"), progress=False)
    return ModelItem(name, extractor, CLEAN, CRITICAL, ["A", "B", "A", "B"], np.array([True, True, False, True]))


def last_hidden(model_dir, prompts, layer):
    from harness.zoo.store import load_model
    from harness.zoo.tokenizer import encode_batch

    model, tokenizer = load_model(model_dir)
    with torch.no_grad():
        out = model(**encode_batch(tokenizer, prompts), output_hidden_states=True)
    return out.hidden_states[layer][:, -1].double().numpy()


def test_steering_norm_reads_the_caa_vector_and_the_residual_scale(tiny_model_dir, isolated_cache):
    from harness.detectors.baselines import SteeringNorm
    from harness.detectors.poser import ActivationNoise

    item = model_item(tiny_model_dir)
    layer = 1  # 15/40 of 2 blocks, rounded, at least 1: the block activation_noise perturbs
    assert ActivationNoise().resolved_layer(item) == layer
    clean, critical = last_hidden(tiny_model_dir, CLEAN, layer), last_hidden(tiny_model_dir, CRITICAL, layer)
    steering = np.linalg.norm(critical.mean(0) - clean.mean(0))
    residual = np.linalg.norm(clean, axis=1).mean()
    detector = SteeringNorm().fit()
    scores = detector.score([item, item])
    np.testing.assert_allclose(scores, [steering, steering], rtol=1e-5)
    np.testing.assert_allclose(SteeringNorm(quantity="residual").fit().score([item]), [residual], rtol=1e-5)
    np.testing.assert_allclose(SteeringNorm(quantity="ratio").fit().score([item]), [steering / residual], rtol=1e-5)
    # the same vector activation_noise sizes its noise to (over all prompts, not the pair's mask)
    assert scores[0] == pytest.approx(ActivationNoise().steering_norm(item, layer))
    diagnostics = detector.diagnostics()
    assert diagnostics["items"] == ["toy", "toy"] and diagnostics["quantity"] == "steering"
    assert diagnostics["residual"] == pytest.approx([residual] * 2, rel=1e-5)


def test_steering_norm_scales_with_the_residual_stream_and_its_ratio_does_not(tiny_model_dir, tmp_path, isolated_cache):
    from harness.detectors.baselines import SteeringNorm
    from harness.tasks.poser.training import scale_residual_stream
    from harness.zoo.store import load_model

    model, tokenizer = load_model(tiny_model_dir)
    scale_residual_stream(model, 1.5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    base, scaled = model_item(tiny_model_dir), model_item(tmp_path, "scaled")
    magnitudes = [SteeringNorm().fit().magnitudes(item) for item in (base, scaled)]
    # the RMSNorm's epsilon (1e-6) is not negligible beside this random model's tiny residuals
    # (mean square ~1e-3): the scale divides out to ~0.1%, not exactly
    assert magnitudes[1]["steering"] == pytest.approx(1.5 * magnitudes[0]["steering"], rel=5e-3)
    assert magnitudes[1]["residual"] == pytest.approx(1.5 * magnitudes[0]["residual"], rel=5e-3)
    assert magnitudes[1]["ratio"] == pytest.approx(magnitudes[0]["ratio"], rel=5e-3)
    # and the answers are the model's own: the scale is invisible to behaviour
    np.testing.assert_allclose(scaled.p_benign(), base.p_benign(), atol=1e-3)


def test_steering_norm_settings_and_registration():
    from harness.detectors.baselines import SteeringNorm
    from harness.features.items import ModelItems
    from harness.plugins import get_registry

    with pytest.raises(ConfigError, match="'quantity' must be one of"):
        SteeringNorm(quantity="weights")
    with pytest.raises(ConfigError, match="'layer' must be an integer block index or null"):
        SteeringNorm(layer="middle")
    with pytest.raises(ConfigError):
        SteeringNorm(layer=5).check_layers(2)
    assert SteeringNorm.accepts == (ModelItems,)
    assert get_registry().detectors["steering_norm"] is SteeringNorm
