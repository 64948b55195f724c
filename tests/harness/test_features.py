import numpy as np
import pytest
import torch

from harness.features import FeatureExtractor, answer_token_ids
from harness.items import InputItems
from harness.zoo.store import ModelHandle, ModelDirectoryError, load_model

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
    path = first.cache_path(PROMPTS)
    assert path.exists() and path.is_relative_to(isolated_cache)
    # a second extractor reads the cache instead of running the model
    second = FeatureExtractor(handle, progress=False)
    second.compute = lambda prompts: pytest.fail("recomputed despite the cache")
    np.testing.assert_array_equal(second.last_token(PROMPTS).hidden, features.hidden)
    assert first.cache_path(PROMPTS[:-1]) != path
    assert FeatureExtractor(handle, answers=(" Bob", " Alice")).cache_path(PROMPTS) != path


def test_damaged_cache_file_is_recomputed(tiny_model_dir):
    extractor = FeatureExtractor(ModelHandle(tiny_model_dir), progress=False)
    features = extractor.last_token(PROMPTS)
    extractor.cache_path(PROMPTS).write_bytes(b"garbage")
    np.testing.assert_allclose(extractor.last_token(PROMPTS).hidden, features.hidden)


def test_items_give_layers_and_logodds(tiny_model_dir):
    items = InputItems(PROMPTS, FeatureExtractor(ModelHandle(tiny_model_dir), progress=False))
    layers = items.activations()
    assert sorted(layers) == [1, 2] and layers[1].shape == (len(PROMPTS), 32)
    assert items.logodds().shape == (len(PROMPTS),)
    with pytest.raises(IndexError, match="0..2"):
        items.activations([5])


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
