import numpy as np
import pytest
import torch

from harness.features.extractor import FeatureExtractor, last_logits_only
from harness.interfaces import ConfigError
from harness.features.items import TextItems
from harness.zoo.store import ModelHandle, ModelDirectoryError, load_model
from harness.zoo.tokenizer import answer_token_ids

PROMPTS = ["12 + 7 = 19. Alice:", "3 + 4 = 8. Bob:", "99 + 1 = 100. Alice:", "5 + 5 = 10. Bob:", "1 + 1 = 2. Alice:"]


def direct_features(model_dir, prompts):
    """Unbatched reference: one prompt at a time, no padding."""
    model, tokenizer = load_model(model_dir)
    neg, pos = answer_token_ids(tokenizer, (" False", " True"))
    hidden, logodds = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            out = model(ids, output_hidden_states=True)
            hidden.append(torch.stack([h[0, -1] for h in out.hidden_states]).numpy())
            logodds.append((out.logits[0, -1, pos] - out.logits[0, -1, neg]).item())
    return np.stack(hidden, axis=1), np.array(logodds)


def test_batched_extraction_matches_unpadded_forward(tiny_model_dir):
    extractor = FeatureExtractor(ModelHandle(tiny_model_dir), batch_size=2, use_cache=False, progress=False)
    features = extractor.last_token(PROMPTS)
    hidden, logodds = direct_features(tiny_model_dir, PROMPTS)
    assert features.hidden.shape == (3, len(PROMPTS), 32)  # embeddings + 2 blocks
    np.testing.assert_allclose(features.hidden, hidden, atol=1e-4)
    np.testing.assert_allclose(features.logodds, logodds, atol=1e-4)


def test_features_are_cached_by_model_and_prompts(tiny_model_dir, isolated_cache):
    handle = ModelHandle(tiny_model_dir)
    first = FeatureExtractor(handle, progress=False)
    features = first.last_token(PROMPTS)
    path = first.cache_path(PROMPTS, layer=1)
    assert path.exists() and path.is_relative_to(isolated_cache)
    # a second extractor reads the cache instead of running the model
    second = FeatureExtractor(handle, progress=False)
    second._run = lambda *args, **kwargs: pytest.fail("recomputed despite the cache")
    np.testing.assert_array_equal(second.last_token(PROMPTS).hidden, features.hidden)
    assert first.cache_path(PROMPTS[:-1], layer=1) != path
    assert FeatureExtractor(handle, answers=(" Bob", " Alice")).cache_path(PROMPTS, layer=1) != path


def counting_passes(extractor):
    """``extractor`` with its model passes recorded: the list of each pass's layers."""
    computed = []
    run = extractor._run

    def counting(prompts, layers, gradients):
        computed.append(list(layers))
        return run(prompts, layers, gradients)

    extractor._run = counting
    return computed


def test_one_pass_stores_every_layer_so_later_requests_run_nothing(tiny_model_dir, isolated_cache):
    prompts = PROMPTS[::-1]  # prompts no other test caches (the cache is per session)
    handle = ModelHandle(tiny_model_dir)
    extractor = FeatureExtractor(handle, progress=False)
    computed = counting_passes(extractor)
    logodds = extractor.logodds(prompts)  # what the validity gate asks first: no layer
    assert computed == [[0, 1, 2]]
    assert all(extractor.cache_path(prompts, layer=layer).exists() for layer in (0, 1, 2))
    layers = extractor.layers(prompts, [2, 1])
    assert computed == [[0, 1, 2]] and list(layers) == [2, 1]  # read, in the order asked
    reference = FeatureExtractor(handle, progress=False, use_cache=False).compute(prompts)
    for layer in (1, 2):
        np.testing.assert_array_equal(layers[layer], reference.hidden[layer])
    np.testing.assert_array_equal(logodds, reference.logodds)


def test_a_pass_beyond_the_byte_bound_computes_and_caches_only_the_requested_layers(
        tiny_model_dir, isolated_cache, monkeypatch):
    import harness.features.extractor as extractor_module

    monkeypatch.setattr(extractor_module, "FEATURE_PASS_BYTES", 0)
    prompts = PROMPTS[1:]
    handle = ModelHandle(tiny_model_dir)
    extractor = FeatureExtractor(handle, progress=False)
    computed = counting_passes(extractor)
    first = extractor.layers(prompts, [1])
    assert computed == [[1]] and sorted(first) == [1]
    assert not extractor.cache_path(prompts, layer=2).exists()
    second = extractor.layers(prompts, [1, 2])  # adds layer 2, reads layer 1
    assert computed == [[1], [2]]
    np.testing.assert_array_equal(second[1], first[1])
    reference = FeatureExtractor(handle, progress=False, use_cache=False).compute(prompts)
    np.testing.assert_allclose(second[2], reference.hidden[2], atol=1e-5)
    assert extractor.layers(prompts, [2, 1]) and computed == [[1], [2]]


def test_only_the_last_position_logits_are_computed(tiny_model_dir):
    model, _ = load_model(tiny_model_dir)
    assert last_logits_only(model) == {"logits_to_keep": 1}


def test_float16_storage_halves_the_file_and_returns_float32(tiny_model_dir, isolated_cache):
    handle = ModelHandle(tiny_model_dir)
    full = FeatureExtractor(handle, progress=False, storage_dtype="float32")
    half = FeatureExtractor(handle, progress=False, storage_dtype="float16")
    a, b = full.layers(PROMPTS, [2])[2], half.layers(PROMPTS, [2])[2]
    assert b.dtype == np.float32 and half.cache_path(PROMPTS, layer=2) != full.cache_path(PROMPTS, layer=2)
    np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-3)
    reread = FeatureExtractor(handle, progress=False, storage_dtype="float16").layers(PROMPTS, [2])[2]
    np.testing.assert_array_equal(reread, b)
    assert half.cache_path(PROMPTS, layer=2).stat().st_size < 0.75 * full.cache_path(PROMPTS, layer=2).stat().st_size


def test_attributions_leave_the_parameters_frozen_state_and_gradients_alone(tiny_model_dir):
    handle = ModelHandle(tiny_model_dir)
    extractor = FeatureExtractor(handle, progress=False, use_cache=False)
    attributions = extractor.attributions(PROMPTS, [2])
    assert sorted(attributions) == [2] and attributions[2].shape == (len(PROMPTS), 32)
    assert all(p.requires_grad and p.grad is None for p in handle.model.parameters())


def test_attribution_batches_keep_their_activations_under_the_bound(tiny_model_dir, monkeypatch):
    from harness.features import extractor as module

    handle = ModelHandle(tiny_model_dir)
    assert module.attribution_batch_cap(handle.model, 32) >= 256  # a tiny model: the bound never binds
    # a bound below one prompt's activations: the auto batch is cut to one prompt, an explicit one is kept
    monkeypatch.setattr(module, "ATTRIBUTION_BATCH_BYTES", 1)
    sizes = []
    extractor = FeatureExtractor(handle, progress=False, use_cache=False)
    run_batches = extractor._run_batches
    extractor._run_batches = lambda *args: sizes.append(args[-1]) or run_batches(*args)
    cut = extractor.attributions(PROMPTS, [2])
    explicit = FeatureExtractor(handle, progress=False, use_cache=False, batch_size=256)
    explicit._run_batches = lambda *args: sizes.append(args[-1]) or run_batches(*args)
    whole = explicit.attributions(PROMPTS, [2])
    assert sizes == [1, 256 // module.ATTRIBUTION_BATCH_DIVISOR]
    np.testing.assert_allclose(cut[2], whole[2], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_auto_batch_size_backs_off_on_out_of_memory(tiny_model_dir, caplog):
    extractor = FeatureExtractor(ModelHandle(tiny_model_dir), progress=False, use_cache=False)
    run_batches = extractor._run_batches
    sizes = []

    def small_memory(prompts, layers, gradients, batch_size):
        sizes.append(batch_size)
        if batch_size > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run_batches(prompts, layers, gradients, batch_size)

    extractor._run_batches = small_memory
    features = extractor.compute(PROMPTS)
    assert sizes == [256, 128, 64, 32, 16, 8, 4, 2]
    assert "retrying with 128" in caplog.text
    np.testing.assert_allclose(features.hidden, direct_features(tiny_model_dir, PROMPTS)[0], atol=1e-4)
    fixed = FeatureExtractor(ModelHandle(tiny_model_dir), progress=False, use_cache=False, batch_size=64)
    fixed._run_batches = small_memory
    with pytest.raises(ConfigError, match="ran out of memory at --batch-size 64"):
        fixed.compute(PROMPTS)


def test_damaged_cache_file_is_recomputed(tiny_model_dir):
    extractor = FeatureExtractor(ModelHandle(tiny_model_dir), progress=False)
    features = extractor.last_token(PROMPTS)
    extractor.cache_path(PROMPTS, layer=1).write_bytes(b"garbage")
    extractor.cache_path(PROMPTS).write_bytes(b"garbage")  # the log-odds
    np.testing.assert_allclose(extractor.last_token(PROMPTS).hidden, features.hidden)


def test_items_give_layers_and_logodds(tiny_model_dir):
    items = TextItems(PROMPTS, FeatureExtractor(ModelHandle(tiny_model_dir), progress=False))
    layers = items.activations()
    assert sorted(layers) == [1, 2] and layers[1].shape == (len(PROMPTS), 32)
    assert items.logodds().shape == (len(PROMPTS),)
    with pytest.raises(ConfigError, match="layer 5 out of range; this model has hidden states 0..2"):
        items.activations([5])
    assert sorted(items.activations([-1, 0])) == [0, 2]


def test_model_directory_errors_are_actionable(tmp_path, tiny_model_dir):
    with pytest.raises(ModelDirectoryError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(ModelDirectoryError, match="no weights"):
        load_model(tmp_path)


def test_fingerprint_changes_with_weights(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert ModelHandle(copy).fingerprint == ModelHandle(tiny_model_dir).fingerprint
    model, tokenizer = load_model(copy)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(copy)
    assert ModelHandle(copy).fingerprint != ModelHandle(tiny_model_dir).fingerprint


class WordTokenizer:
    """A stand-in tokenizer: whitespace words -> ids from a table (unknown words -> 0)."""

    unk_token_id = 0

    def __init__(self, table):
        self.table = table

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.table.get(word, 0) for word in text.replace(" ", " _ ").split()]}


def test_answers_with_a_split_leading_space_fall_back_to_the_bare_words():
    from harness.zoo.tokenizer import answer_tokens

    # this tokenizer splits the leading space into its own token "_": " True" is ["_", "True"]
    tokenizer = WordTokenizer({"_": 1, "True": 2, "False": 3})
    answer = answer_tokens(tokenizer, (" False", " True"))
    assert (answer.negative, answer.positive, answer.prefix, answer.how) == (3, 2, (), "single token")
    assert answer.words == ("False", "True")


def test_multi_token_answers_compare_the_first_differing_token():
    from harness.zoo.tokenizer import answer_tokens

    tokenizer = WordTokenizer({"_": 1, "very": 4, "good": 5, "bad": 6})
    answer = answer_tokens(tokenizer, ("very bad", "very good"))
    assert (answer.negative, answer.positive, answer.prefix) == (6, 5, (4, 1))  # "very", "_"
    assert answer.how == "first differing token after a shared prefix"
    with pytest.raises(ValueError, match="cannot be told apart"):
        answer_tokens(tokenizer, ("very", "very good"))


def test_a_shared_prefix_is_appended_to_the_prompt_before_reading(tiny_model_dir):
    handle = ModelHandle(tiny_model_dir)
    prefixed = FeatureExtractor(handle, answers=(" Alice False", " Alice True"), use_cache=False, progress=False)
    assert prefixed.answer_tokens().how == "first differing token after a shared prefix"
    direct = FeatureExtractor(handle, use_cache=False, progress=False)
    np.testing.assert_allclose(prefixed.logodds(PROMPTS), direct.logodds([p + " Alice" for p in PROMPTS]),
                               atol=1e-5)
