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
