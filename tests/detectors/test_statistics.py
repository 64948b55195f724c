import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf
from sklearn.neighbors import LocalOutlierFactor

from harness.detectors.statistics import DiagonalMahalanobis, LocalOutlierFactorScorer, Mahalanobis


def test_mahalanobis_pinv_matches_direct_numpy():
    rng = np.random.default_rng(0)
    trusted = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    test = rng.normal(size=(20, 5)) * 3
    mu = trusted.mean(0)
    cov = np.cov(trusted, rowvar=False)
    direct = np.array([(x - mu) @ np.linalg.inv(cov) @ (x - mu) for x in test]) / 5
    np.testing.assert_allclose(Mahalanobis("pinv", dtype="float64").fit(trusted).score(test), direct, rtol=1e-8)
    # the default keeps the precision matrix in float32: the same distances to float32 accuracy
    scorer = Mahalanobis("pinv").fit(trusted)
    assert scorer.precision_.dtype == np.float32 and not hasattr(scorer, "covariance_")
    np.testing.assert_allclose(scorer.score(test), direct, rtol=1e-5)


def test_mahalanobis_ledoit_wolf_matches_direct_and_handles_n_below_d():
    rng = np.random.default_rng(1)
    trusted = rng.normal(size=(10, 40))  # n < d: the empirical covariance is singular
    test = rng.normal(size=(7, 40))
    shrunk, _ = ledoit_wolf(trusted)
    mu = trusted.mean(0)
    direct = np.array([(x - mu) @ np.linalg.solve(shrunk, x - mu) for x in test]) / 40
    scores = Mahalanobis("ledoit_wolf").fit(trusted).score(test)
    np.testing.assert_allclose(scores, direct, rtol=1e-5)  # float32 precision matrix
    np.testing.assert_allclose(Mahalanobis("ledoit_wolf", dtype="float64").fit(trusted).score(test), direct, rtol=1e-9)
    assert np.all(np.isfinite(scores))


def test_diagonal_mahalanobis_matches_direct():
    rng = np.random.default_rng(2)
    trusted = rng.normal(size=(100, 3)) * np.array([1.0, 2.0, 3.0])
    test = rng.normal(size=(5, 3))
    direct = ((test - trusted.mean(0)) ** 2 / (trusted.var(0) + 1e-6)).sum(1) / 3
    np.testing.assert_allclose(DiagonalMahalanobis().fit(trusted).score(test), direct)


def test_lof_matches_sklearn_novelty_and_is_batch_independent():
    rng = np.random.default_rng(3)
    trusted = rng.normal(size=(200, 4))
    test = np.r_[rng.normal(size=(30, 4)), rng.normal(size=(5, 4)) + 6]
    reference = -LocalOutlierFactor(n_neighbors=20, novelty=True).fit(trusted).score_samples(test)
    scorer = LocalOutlierFactorScorer(20).fit(trusted)
    np.testing.assert_allclose(scorer.score(test), reference)
    # scoring an item alone gives the same number as scoring it in a batch
    np.testing.assert_allclose(scorer.score(test[-1:]), reference[-1:])
    assert reference[-5:].min() > reference[:30].max()


def test_unknown_covariance_is_rejected():
    with pytest.raises(ValueError, match="covariance"):
        Mahalanobis("nope")
