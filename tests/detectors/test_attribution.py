import numpy as np
import pytest
import torch

from harness.detectors.attribution import AttributionLOF, AttributionMahalanobis
from harness.detectors.statistics import Mahalanobis
from harness.features.extractor import FeatureExtractor
from harness.features.items import TextItems
from harness.scoring import auroc
from harness.zoo.store import ModelHandle, load_model
from harness.zoo.tokenizer import answer_token_ids

PROMPTS = ["12 + 7 = 19. Alice:", "3 + 4 = 8. Bob:", "99 + 1 = 100. Alice:", "5 + 5 = 10. Bob:", "1 + 1 = 2. Alice:"]


def stacked(by_layer):
    """{hidden-state index: (n, d)} -> (n_layers + 1, n, d)."""
    return np.stack([by_layer[layer] for layer in sorted(by_layer)])


def hooked_attributions(model_dir, prompt):
    """Reference for one unpadded prompt: add a zero vector that requires grad to each layer's
    output at the last position (embeddings, each block, the final norm), differentiate the
    log-odds with respect to it, multiply by the activation there."""
    torch.set_num_threads(1)
    model, tokenizer = load_model(model_dir)
    neg, pos = answer_token_ids(tokenizer, (" False", " True"))
    inner = model.model
    modules = [inner.embed_tokens, *inner.layers[:-1], inner.norm]  # hidden_states[L] is normed
    deltas = [torch.zeros(model.config.hidden_size, requires_grad=True) for _ in modules]
    seen = []

    def hook(delta):
        def add(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            shifted = torch.cat([hidden[:, :-1], hidden[:, -1:] + delta], dim=1)
            seen.append(shifted[0, -1].detach())
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

        return add

    handles = [m.register_forward_hook(hook(d)) for m, d in zip(modules, deltas)]
    try:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        logits = model(ids).logits[0, -1]
        grads = torch.autograd.grad(logits[pos] - logits[neg], deltas)
    finally:
        for h in handles:
            h.remove()
    return np.stack([(g * a).numpy() for g, a in zip(grads, seen)])  # (n_layers + 1, d)


def test_batched_attributions_match_explicit_autograd(tiny_model_dir):
    extractor = FeatureExtractor(ModelHandle(tiny_model_dir), batch_size=2, use_cache=False, progress=False)
    attributions = stacked(extractor.attributions(PROMPTS))  # batches of 2: left padding is exercised
    assert attributions.shape == (3, len(PROMPTS), 32)
    reference = np.stack([hooked_attributions(tiny_model_dir, p) for p in PROMPTS], axis=1)
    np.testing.assert_allclose(attributions, reference, rtol=1e-3, atol=1e-5)
    assert np.abs(reference).max() > 1e-3  # not trivially zero


def test_last_layer_attribution_is_the_linear_readout(tiny_model_dir):
    """log-odds = (w_pos - w_neg) . h_L exactly (no bias): the attribution is that product,
    elementwise, and sums to the log-odds."""
    handle = ModelHandle(tiny_model_dir)
    extractor = FeatureExtractor(handle, batch_size=2, use_cache=False, progress=False)
    features = extractor.last_token(PROMPTS)
    neg, pos = answer_token_ids(handle.tokenizer, (" False", " True"))
    weight = handle.model.lm_head.weight.detach().numpy()
    expected = (weight[pos] - weight[neg]) * features.hidden[-1]
    attributions = stacked(extractor.attributions(PROMPTS))
    np.testing.assert_allclose(attributions[-1], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(attributions[-1].sum(axis=1), features.logodds, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in handle.model.parameters())  # no parameter gradients


def test_attributions_are_cached_under_their_own_key(tiny_model_dir):
    handle = ModelHandle(tiny_model_dir)
    first = FeatureExtractor(handle, progress=False)
    attributions = stacked(first.attributions(PROMPTS))
    path = first.cache_path(PROMPTS, kind="attributions", layer=1)
    assert path.exists() and path != first.cache_path(PROMPTS, layer=1)
    second = FeatureExtractor(handle, progress=False)
    second._run = lambda *args, **kwargs: pytest.fail("recomputed despite the cache")
    np.testing.assert_array_equal(stacked(second.attributions(PROMPTS)), attributions)
    items = TextItems(PROMPTS, second)
    assert sorted(items.attributions()) == [1, 2]
    np.testing.assert_array_equal(items.attributions([0])[0], attributions[0])


def linear_items(n_trusted=300, n_test=300, d=8, n_layers=2, gain=1.0, seed=0):
    """A linear 'model': log-odds = w_l . h_l at every layer, so attribution = w_l * h_l.
    Anomalous test items keep their activations' distribution but the readout weight of
    dimension 0 is multiplied by ``gain`` (a different mechanism, a different attribution)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n_layers + 1, 1, d))
    w[..., 0] = 1.0

    def make(n, anomalous):
        hidden = rng.normal(size=(n_layers + 1, n, d))
        weights = np.repeat(w, n, axis=1)
        weights[:, anomalous, 0] *= gain
        attributions = weights * hidden
        return TextItems.from_arrays(hidden, attributions[-1].sum(-1), attributions)

    labels = np.r_[np.zeros(n_test // 2), np.ones(n_test - n_test // 2)].astype(int)
    return make(n_trusted, np.zeros(n_trusted, bool)), make(n_test, labels == 1), labels


@pytest.mark.parametrize("cls", [AttributionMahalanobis, AttributionLOF])
def test_planted_mechanism_change_is_found(cls):
    trusted, test, labels = linear_items(gain=-5.0)
    scores = cls().fit(trusted).score(test)
    assert scores.shape == (len(labels),)
    assert auroc(labels, scores) > 0.9


@pytest.mark.parametrize("cls", [AttributionMahalanobis, AttributionLOF])
def test_identical_distributions_give_chance(cls):
    trusted, test, labels = linear_items(n_test=2000)
    assert auroc(labels, cls().fit(trusted).score(test)) == pytest.approx(0.5, abs=0.06)


def test_features_are_attributions_not_activations():
    trusted, test, _ = linear_items(gain=-5.0)
    detector = AttributionMahalanobis(layers=[1]).fit(trusted)
    expected = Mahalanobis().fit(trusted.attributions([1])[1]).score(test.attributions([1])[1])
    np.testing.assert_allclose(detector.score(test), expected)


def test_items_without_attributions_say_so():
    items = TextItems.from_arrays(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="attributions"):
        AttributionMahalanobis().fit(items)
    with pytest.raises(ValueError, match="shape"):
        TextItems.from_arrays(np.zeros((2, 5, 3)), attributions=np.zeros((2, 5, 4)))
