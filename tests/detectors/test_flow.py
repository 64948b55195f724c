import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.datasets import make_moons

from harness.detectors.flow import FlowLaplace, FlowMahalanobis, FlowScorer
from harness.layers import middle_block
from harness.interfaces import ConfigError, NotFittedError
from harness.features.items import TextItems
from harness.scoring import auroc

torch.set_num_threads(1)


def planted(n_trusted=300, n_test=300, d=8, n_layers=4, shift=4.0, seed=0):
    """Correlated Gaussian activations; half the test items shifted along dimension 0."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    trusted = rng.normal(size=(n_layers + 1, n_trusted, d)) @ mixing
    test = rng.normal(size=(n_layers + 1, n_test, d)) @ mixing
    labels = np.r_[np.zeros(n_test // 2), np.ones(n_test - n_test // 2)].astype(int)
    test[:, labels == 1, 0] += shift
    return TextItems.from_arrays(trusted), TextItems.from_arrays(test), labels


@pytest.mark.parametrize("cls", [FlowMahalanobis, FlowLaplace])
def test_planted_anomaly_is_found(cls):
    trusted, test, labels = planted()
    detector = cls(epochs=20).fit(trusted)
    scores = detector.score(test)
    assert scores.shape == (len(labels),) and np.all(np.isfinite(scores))
    assert auroc(labels, scores) > 0.9
    assert detector.diagnostics()["layer"] == 2  # the middle of 4 blocks


@pytest.mark.parametrize("cls", [FlowMahalanobis, FlowLaplace])
def test_identical_distributions_give_chance(cls):
    trusted, test, labels = planted(n_test=2000, shift=0.0)
    assert auroc(labels, cls(epochs=20).fit(trusted).score(test)) == pytest.approx(0.5, abs=0.06)


@pytest.mark.parametrize("base", ["normal", "laplace"])
def test_flow_beats_a_gaussian_on_two_moons(base):
    """Mean held-out log-likelihood (same standardised coordinates for both models)."""
    train, _ = make_moons(600, noise=0.08, random_state=0)
    held_out, _ = make_moons(400, noise=0.08, random_state=1)
    scorer = FlowScorer(base=base, score="nll", pca_dim=None, epochs=25).fit(train)
    standardise = lambda x: (x - scorer.location_) / scorer.scale_  # noqa: E731
    gaussian = multivariate_normal(standardise(train).mean(0), np.cov(standardise(train), rowvar=False))
    flow_ll = scorer.log_prob(held_out).mean()
    gaussian_ll = gaussian.logpdf(standardise(held_out)).mean()
    assert flow_ll > gaussian_ll + 0.3, (flow_ll, gaussian_ll)
    np.testing.assert_allclose(scorer.score(held_out), -scorer.log_prob(held_out))


def test_laplace_base_is_used():
    x = np.random.default_rng(0).normal(size=(50, 3))
    scorer = FlowScorer(base="laplace", score="nll", pca_dim=None, epochs=1).fit(x)
    base = scorer.flow_().base
    assert isinstance(base.base_dist, torch.distributions.Laplace) and base.event_shape == (3,)


def test_pca_reduces_the_flow_dimension_and_mahalanobis_is_on_latents():
    x = np.random.default_rng(0).normal(size=(200, 10))
    scorer = FlowScorer(score="mahalanobis", pca_dim=4, epochs=2).fit(x)
    latents = scorer.latents(x[:7])
    assert latents.shape == (7, 4)
    np.testing.assert_allclose(scorer.score(x[:7]), scorer.latent_scorer_.score(latents))


def test_seeded_and_global_rng_untouched():
    trusted, test, _ = planted(n_trusted=100, n_test=20)
    state = torch.random.get_rng_state()
    first = FlowMahalanobis(epochs=2, seed=3).fit(trusted).score(test)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(first, FlowMahalanobis(epochs=2, seed=3).fit(trusted).score(test))
    assert not np.array_equal(first, FlowMahalanobis(epochs=2, seed=4).fit(trusted).score(test))


def test_layer_choice_validation_and_not_fitted():
    assert [middle_block(n) for n in (1, 2, 3, 4, 6)] == [1, 1, 2, 2, 3]
    trusted, test, _ = planted(n_trusted=50, n_test=10, n_layers=2)
    assert FlowLaplace(layer=-1, epochs=1).fit(trusted).diagnostics()["layer"] == 2
    with pytest.raises(ConfigError, match="layer 5 out of range; this model has hidden states 0..2"):
        FlowLaplace(layer=5).fit(trusted)
    with pytest.raises(NotFittedError, match="call fit"):
        FlowMahalanobis().score(test)
    with pytest.raises(ConfigError, match="'epochs'"):
        FlowMahalanobis(epochs=0)
    with pytest.raises(ConfigError, match="'pca_dim'"):
        FlowLaplace(pca_dim=0)
