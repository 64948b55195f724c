import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from harness.scoring import auroc, bootstrap_aurocs, interval, mad_metrics, pair_accuracy, subset_masks


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


def test_pair_accuracy_ties_count_half():
    assert pair_accuracy(np.array([2.0, 1.0, 3.0, 0.0]), np.array([1.0, 1.0, 4.0, 0.0])) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    with pytest.raises(ValueError):
        pair_accuracy(np.array([1.0]), np.array([1.0, 2.0]))


# -- statistics across datasets and seeds -------------------------------------------------------
from harness.scoring import hierarchical_bootstrap, holm, paired_differences, tied_items, wilson_interval  # noqa: E402


def test_wilson_interval_matches_the_closed_form_and_stays_in_range():
    low, high = wilson_interval(170, 200)
    # (p + z²/2n -+ z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) with p = 0.85, z = 1.96 (by hand)
    assert low == pytest.approx(0.793944, abs=1e-5) and high == pytest.approx(0.892864, abs=1e-5)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0) and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] < 1.0  # a perfect score on 10 items is not certainty
    assert all(np.isnan(wilson_interval(0, 0)))


def test_tied_items_counts_every_member_of_a_tie():
    assert tied_items(np.array([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0])) == 5
    assert tied_items(np.arange(5.0)) == 0


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.02, float("nan")])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1])


def _synthetic_cells(effects: dict[str, float], dataset_scale=(0.6, 1.0, 1.4, 1.8), n_seeds=3, n=120, seed_sd=0.0):
    """cells[detector][dataset][seed]: the same labels and noise for every detector, effect x scale."""
    cells = {k: {} for k in effects}
    for d, scale in enumerate(dataset_scale):
        for s in range(n_seeds):
            rng = np.random.default_rng(100 * d + s)
            labels = np.r_[np.zeros(n), np.ones(n)]
            noise = rng.normal(size=2 * n)
            seed_shift = rng.normal() * seed_sd
            for k, effect in effects.items():
                cells[k].setdefault(f"d{d}", {})[s] = (labels, noise + (effect * scale + seed_shift) * labels)
    return cells


def test_hierarchical_interval_widens_with_seed_and_dataset_spread():
    calm = hierarchical_bootstrap(_synthetic_cells({"a": 1.0}, dataset_scale=(1.0,) * 4), 400)
    spread = hierarchical_bootstrap(_synthetic_cells({"a": 1.0}, seed_sd=0.8), 400)
    width = lambda boot: np.diff(boot.interval("a"))[0]  # noqa: E731
    assert width(spread) > 1.5 * width(calm)
    for boot in (calm, spread):
        low, high = boot.interval("a")
        assert low < boot.point[0] < high
    # the point estimate is the mean over datasets of the mean over seeds of the cell AUROCs
    cells = _synthetic_cells({"a": 1.0}, seed_sd=0.8)
    expected = np.mean([np.mean([auroc(*cells["a"][d][s]) for s in range(3)]) for d in cells["a"]])
    assert spread.point[0] == pytest.approx(expected)


def test_paired_comparison_resolves_a_consistent_small_gap_and_not_noise():
    boot = hierarchical_bootstrap(_synthetic_cells({"a": 1.2, "b": 1.0, "c": 1.0}, seed_sd=0.5), 500)
    order = sorted(boot.detectors, key=lambda k: -boot.point[boot.detectors.index(k)])
    assert order[0] == "a"
    comparisons = paired_differences(boot, order)
    assert len(comparisons) == 2
    first, second = comparisons
    # a beats b on every cell of the same items: resolved although the unpaired intervals overlap
    assert first.resolved and first.interval[0] > 0
    low_a, _ = boot.interval("a")
    _, high_b = boot.interval("b")
    assert low_a < high_b
    # b and c have identical scores: a zero difference is never resolved
    assert second.difference == 0 and not second.resolved and second.p_adjusted == pytest.approx(1.0)
    assert first.p_adjusted >= first.p_value


def test_mean_ranks_and_their_interval():
    boot = hierarchical_bootstrap(_synthetic_cells({"a": 2.0, "b": 1.0, "c": 0.0}), 300)
    np.testing.assert_allclose(boot.point_ranks, [1, 2, 3])
    low, high = boot.rank_interval("a")
    assert low == 1 and high <= 1.5


def test_missing_cells_and_floors_paired_by_seed():
    cells = _synthetic_cells({"a": 1.0, "b": 1.0})
    del cells["b"]["d0"][1]  # an errored job: b is averaged over the cells it has
    # controls at seeds 0 and 2 only: a seed without a control is left out of the adjusted value
    floors = {k: {d: {s: _shifted(cells["a"][d][s], -0.5 * s) for s in (0, 2)} for d in cells["a"]} for k in cells}
    boot = hierarchical_bootstrap(cells, 200, floors=floors)
    assert np.isfinite(boot.point).all() and np.isfinite(boot.average).all()
    per_dataset = [np.mean([auroc(*cells["a"][f"d{d}"][s]) - auroc(*floors["a"][f"d{d}"][s]) for s in (0, 2)])
                   for d in range(4)]
    assert boot.adjusted_point[0] == pytest.approx(np.mean(per_dataset))
    expected_floor = [np.mean([auroc(*floors["a"][f"d{d}"][s]) for s in (0, 2)]) for d in range(4)]
    np.testing.assert_allclose(boot.floor[0], expected_floor)
    low, high = boot.adjusted_interval("a")
    assert low < boot.adjusted_point[0] < high


def _shifted(cell, shift):
    labels, scores = cell
    return labels, scores + shift * labels


def test_a_floor_equal_to_the_cells_gives_exactly_zero_in_every_replicate():
    """The floor is scored on the same draws of seeds and items as the detector (paired by seed)."""
    cells = _synthetic_cells({"a": 1.0}, seed_sd=0.8)
    boot = hierarchical_bootstrap(cells, 300, floors=cells)
    assert boot.adjusted_point[0] == 0
    np.testing.assert_array_equal(boot.adjusted[0], 0.0)
