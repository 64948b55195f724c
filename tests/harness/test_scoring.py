import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from harness.scoring import auroc, bootstrap_aurocs, interval, mad_metrics, mean_auroc_interval, pair_accuracy, subset_masks


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounding creates ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_is_never_flipped():
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([4.0, 3.0, 2.0, 1.0])) == 0.0


def test_auroc_one_class_is_nan():
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_hand_made_subsets():
    # normal: scores 0, 1; anomalous agreeing: 5 (above all normals), disagreeing: 0.5 (between)
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.0, 1.0, 5.0, 0.5])
    agrees = np.array([True, True, True, False])
    masks = subset_masks(labels, agrees)
    assert masks["agree"].tolist() == [True, True, True, False]
    assert masks["disagree"].tolist() == [True, True, False, True]
    metrics = mad_metrics(labels, scores, agrees, n_bootstrap=200)
    assert metrics["auroc"] == pytest.approx(0.75)  # pairs: (5>0,5>1,0.5>0,0.5<1) -> 3/4
    assert metrics["auroc_agree"] == pytest.approx(1.0)
    assert metrics["auroc_disagree"] == pytest.approx(0.5)
    assert metrics["n_anomalous_agree"] == 1 and metrics["n_anomalous_disagree"] == 1
    low, high = metrics["auroc_ci"]
    assert 0.0 <= low <= high <= 1.0


def test_bootstrap_interval_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(100), np.ones(100)]
    scores = rng.normal(size=200) + labels
    samples = bootstrap_aurocs(labels, scores, 500, seed=3)
    low, high = interval(samples)
    assert low < auroc(labels, scores) < high
    assert high - low < 0.2
    np.testing.assert_array_equal(samples, bootstrap_aurocs(labels, scores, 500, seed=3))
    # each replicate equals sklearn on the same resample
    assert samples.shape == (500,)


def test_mean_interval_contains_mean():
    rng = np.random.default_rng(2)
    episodes = []
    for shift in (0.5, 1.0, 2.0):
        labels = np.r_[np.zeros(80), np.ones(80)]
        episodes.append((labels, rng.normal(size=160) + shift * labels))
    mean = np.mean([auroc(l, s) for l, s in episodes])
    low, high = mean_auroc_interval(episodes, n_bootstrap=300)
    assert low < mean < high


def test_pair_accuracy_ties_count_half():
    assert pair_accuracy(np.array([2.0, 1.0, 3.0, 0.0]), np.array([1.0, 1.0, 4.0, 0.0])) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    with pytest.raises(ValueError):
        pair_accuracy(np.array([1.0]), np.array([1.0, 2.0]))
