"""The hierarchical bootstrap's levels: independent dataset copies, names shared by every cell,
examples per slot, the weighted AUROC it scores each slot with, and how p-values are written."""

import numpy as np
import pytest
from scipy.stats import t as student
from sklearn.metrics import roc_auc_score

from harness.scoring import (
    Cell,
    format_p_value,
    hierarchical_bootstrap,
    paired_differences,
    t_interval,
    t_standard_error,
)
from harness.scoring import _cell_codes, _draw_slots, _name_aurocs, _poisson_weights, _prepare, _weighted_aurocs

ALICE = [f"alice{i}" for i in range(12)]
BOB = [f"bob{i}" for i in range(12)]


def _prepared(labels, scores, names):
    """A cell prepared as the bootstrap prepares it, and each item's column of the name weights."""
    cell = Cell(labels, scores, {"name": names, "example": np.zeros(len(labels), int)})
    name_codes, example_codes = _cell_codes(cell)
    columns = {c: i for i, c in enumerate(sorted(set(name_codes.tolist())))}
    prep = _prepare(cell, name_codes, example_codes, columns, len(columns), {int(example_codes[0]): 0})
    return prep, np.array([columns[c] for c in name_codes.tolist()]), len(columns)


@pytest.mark.parametrize("n_names", [60, 7])
def test_weighted_aurocs_equal_sklearn_with_sample_weights_ties_included(n_names):
    rng = np.random.default_rng(n_names)
    n = 60
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(size=n) + labels, 1)  # ties
    names = np.array([f"n{i % n_names}" for i in range(n)])
    prep, column, n_columns = _prepared(labels, scores, names)
    weights = np.ones((5, n_columns + 1))  # the last column: no name
    weights[:, :-1] = rng.poisson(1.0, (5, n_columns))
    expected = [roc_auc_score(labels, scores, sample_weight=w[column]) for w in weights]
    # item weight = name weight x example weight (one example, weight 1)
    np.testing.assert_allclose(_weighted_aurocs(prep, weights.T, np.ones((1, 5))), expected, atol=1e-12)
    # names alone, by the per-name Mann-Whitney block
    np.testing.assert_allclose(_name_aurocs(prep, weights), expected, atol=1e-12)
    assert prep.point == pytest.approx(roc_auc_score(labels, scores))


def test_poisson_weights_have_mean_and_variance_one_and_are_keyed():
    w = _poisson_weights(7, 2, np.arange(200_000))
    assert w.mean() == pytest.approx(1.0, abs=0.01) and w.var() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(w[:100], _poisson_weights(7, 2, np.arange(100)))
    assert not np.array_equal(w[:100], _poisson_weights(8, 2, np.arange(100)))


def test_a_dataset_drawn_twice_gets_independent_seed_and_item_draws():
    slots = _draw_slots(np.array([3, 3, 2]), 500, np.random.default_rng(0))
    for b in range(500):
        drawn = slots.dataset_draws[b]
        used = slots.copies[b][slots.copies[b] >= 0]
        assert len(set(used.tolist())) == len(used)  # no slot serves two copies
        for c, d in enumerate(drawn):
            assert (slots.dataset[slots.copies[b, c][slots.copies[b, c] >= 0]] == d).all()
    assert (slots.dataset_draws[:, :, None] == slots.dataset_draws[:, None, :]).sum() > 3 * 500  # duplicates occur


def _cells(n_datasets=2, n_seeds=2, n_examples=150, name_sd=0.0, dataset_sd=0.0, shift=1.0, seed=0,
           groups=True, name_effects=None):
    """One detector, Alice (0) and Bob (1) items per example, a name effect shared by every cell."""
    rng = np.random.default_rng(seed)
    if name_effects is None:
        name_effects = dict(zip(ALICE + BOB, rng.normal(size=24) * name_sd))
    out = {}
    for d in range(n_datasets):
        dataset_shift = rng.normal() * dataset_sd
        for s in range(n_seeds):
            labels = np.r_[np.zeros(n_examples), np.ones(n_examples)].astype(int)
            names = np.r_[rng.choice(ALICE, n_examples), rng.choice(BOB, n_examples)]
            examples = np.r_[np.arange(n_examples), np.arange(n_examples)]
            scores = (rng.normal(size=2 * n_examples) + (shift + dataset_shift) * labels
                      + np.array([name_effects[n] for n in names]))
            out.setdefault(f"d{d}", {})[s] = (Cell(labels, scores, {"name": names, "example": examples})
                                              if groups else (labels, scores))
    return out


def test_identical_datasets_drawn_twice_are_two_resamples():
    """Two copies of the same data: the average of two independent copies has half the variance
    of one (a reused draw would give three quarters of it). Without names: a name draw is shared
    by every cell on purpose, and here both copies hold the very same items."""
    same = _cells(n_datasets=1, n_seeds=1, groups=False)["d0"]
    boot = hierarchical_bootstrap({"a": {"d0": same, "d1": same}}, 3000, method="percentile")
    one = np.var(boot.per_dataset_replicates[0, 0])
    assert np.var(boot.average[0]) / one == pytest.approx(0.5, abs=0.08)


def test_names_are_a_level_shared_by_every_cell():
    # a large name effect, the same in every cell: resampling names widens the interval
    grouped = hierarchical_bootstrap({"a": _cells(4, 3, name_sd=1.0)}, 400, method="percentile")
    plain = hierarchical_bootstrap({"a": _cells(4, 3, name_sd=1.0, groups=False)}, 400, method="percentile")
    width = lambda boot: np.diff(boot.interval("a"))[0]  # noqa: E731
    assert width(grouped) > 2 * width(plain)
    assert grouped.point[0] == pytest.approx(plain.point[0])
    # without a name effect the name level adds little
    calm = hierarchical_bootstrap({"a": _cells(4, 3)}, 400, method="percentile")
    calm_plain = hierarchical_bootstrap({"a": _cells(4, 3, groups=False)}, 400, method="percentile")
    assert width(calm) < 1.5 * width(calm_plain)


def test_the_same_draws_whatever_else_a_call_holds():
    """Weights depend on (seed, replicate or slot, id): a detector gets the same replicates alone
    or beside others, so two calls (two columns of the same records) are paired."""
    cells = _cells(3, 2, name_sd=0.5)
    other = _cells(3, 2, name_sd=0.5, shift=0.3, seed=1)
    alone = hierarchical_bootstrap({"a": cells}, 200)
    both = hierarchical_bootstrap({"b": other, "a": cells}, 200)
    np.testing.assert_array_equal(alone.average[0], both.average[1])


def test_t_interval_is_the_closed_form():
    replicates = np.random.default_rng(0).normal(0.7, 0.02, 1000)
    low, high = t_interval(0.7, replicates, 4)
    half = student.ppf(0.975, 3) * np.std(replicates, ddof=1) * np.sqrt(4 / 3)
    assert (low, high) == pytest.approx((0.7 - half, 0.7 + half))
    assert t_interval(0.99, replicates, 4, bounds=(0, 1))[1] == 1.0
    with pytest.raises(ValueError):
        t_interval(0.7, replicates, 1)


def test_t_standard_error_adds_the_datasets_spread_and_the_names():
    per_dataset = np.array([0.70, 0.80, 0.75, 0.95])
    v_datasets = np.var(per_dataset, ddof=1) / 4
    se, df = t_standard_error(per_dataset, np.zeros(100), 12)
    assert (se, df) == pytest.approx((np.sqrt(v_datasets), 3))
    names = np.random.default_rng(0).normal(0, 0.05, 1000)
    v_names = np.var(names, ddof=1)
    se, df = t_standard_error(np.r_[per_dataset, np.nan], names, 12)  # a missing dataset is left out
    assert se == pytest.approx(np.sqrt(v_datasets + v_names))
    assert df == pytest.approx((v_datasets + v_names) ** 2 / (v_datasets ** 2 / 3 + v_names ** 2 / 11))
    with pytest.raises(ValueError):
        t_standard_error(np.array([0.7, np.nan]), names, 12)


def test_t_rule_is_wider_than_percentile_with_few_datasets():
    boot = hierarchical_bootstrap({"a": _cells(4, 3, dataset_sd=0.5)}, 500)
    t_low, t_high = boot.interval("a")
    p_low, p_high = boot.interval("a", "percentile")
    assert t_high - t_low > 1.5 * (p_high - p_low)
    with pytest.raises(ValueError, match="percentile"):
        boot.interval("a", "bca")


def test_p_values_say_when_they_are_only_a_bound():
    far = _cells(3, 2, shift=2.0)
    near = _cells(3, 2, shift=0.2, seed=1)
    boot = hierarchical_bootstrap({"far": far, "near": near}, 199, method="percentile")
    [comparison] = paired_differences(boot, ["far", "near"])
    assert comparison.at_floor and comparison.p_value == pytest.approx(2 / 200)
    assert comparison.p_text() == "< 0.01"
    [t_comparison] = paired_differences(boot, ["far", "near"], method="t")
    assert not t_comparison.at_floor and t_comparison.p_value < 0.05
    assert format_p_value(0.0004) == "< 0.001" and format_p_value(0.0312) == "0.031"
    assert format_p_value(float("nan")) == "" and format_p_value(1.0) == "1.000"
