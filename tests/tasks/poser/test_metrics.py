"""The persona level of the POSER metrics: persona scores, the permutation p-value, the
leave-one-persona-out range and the minimum detectable effect, each against a hand-computed
case, a brute-force count or a simulation."""

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from harness.tasks.poser.metrics import (
    format_permutation_p,
    leave_one_out_range,
    minimum_detectable_auroc,
    permutation_p,
    persona_metrics,
    persona_scores,
    smallest_p,
)


def test_persona_scores_average_items_to_models_then_models_to_personas():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    personas = np.array([4, 4, 4, 7, 7, 7, 7])
    models = np.array([0, 0, 1, 2, 2, 2, 3])
    scores = np.array([1.0, 3.0, 5.0, 2.0, 2.0, 2.0, 8.0])
    ids, persona_labels, values = persona_scores(labels, scores, personas, models)
    # persona 4: models 0 (mean 2) and 1 (5) -> 3.5; persona 7: models 2 (2, three items) and 3 (8) -> 5
    assert ids.tolist() == [4, 7] and persona_labels.tolist() == [0, 1]
    np.testing.assert_allclose(values, [3.5, 5.0])
    with pytest.raises(ValueError, match="both labels"):
        persona_scores(np.array([0, 1]), np.array([1.0, 2.0]), np.array([0, 0]))


def brute_force_p(labels, scores):
    """Two-sided p over every relabelling, counted one by one."""
    labels = np.asarray(labels).astype(bool)
    observed = abs(roc_auc_score(labels, scores) - 0.5)
    count = total = 0
    for chosen in itertools.combinations(range(len(labels)), int(labels.sum())):
        relabelled = np.zeros(len(labels), bool)
        relabelled[list(chosen)] = True
        count += abs(roc_auc_score(relabelled, scores) - 0.5) >= observed - 1e-12
        total += 1
    return count / total, total


def test_three_against_three_personas_can_never_reach_p_below_0_1():
    # the first miniature's design: even a perfect separation has p = 2/20
    result = permutation_p(np.array([0, 0, 0, 1, 1, 1]), np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert result["exact"] and result["n_permutations"] == 20 and result["p"] == pytest.approx(0.1)
    assert smallest_p(3, 3) == pytest.approx(0.1)
    assert math.isnan(minimum_detectable_auroc(3, 3))  # nothing is detectable at alpha 0.05


@pytest.mark.parametrize("seed", range(4))
def test_exact_permutation_p_equals_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 5 + [1] * 4)
    scores = np.round(rng.normal(size=9) + 0.8 * labels, 1)  # rounded: ties too
    result = permutation_p(labels, scores)
    expected, total = brute_force_p(labels, scores)
    assert result["exact"] and result["n_permutations"] == total == 126
    assert result["p"] == pytest.approx(expected)


def test_random_permutations_agree_with_the_exact_p_and_report_a_bound_when_none_is_as_extreme():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 7 + [1] * 7)
    scores = rng.normal(size=14) + 0.7 * labels
    exact = permutation_p(labels, scores)
    sampled = permutation_p(labels, scores, n_permutations=2000, seed=1)
    assert exact["exact"] and not sampled["exact"] and sampled["n_permutations"] == 2000
    assert abs(sampled["p"] - exact["p"]) < 3 * math.sqrt(exact["p"] * (1 - exact["p"]) / 2000) + 1e-9
    # 24 against 24, perfectly separated: no random relabelling is as extreme; p is only bounded
    labels = np.array([0] * 24 + [1] * 24)
    bound = permutation_p(labels, np.arange(48.0))
    assert bound["p_is_bound"] and bound["n_extreme"] == 0 and bound["p"] == pytest.approx(1 / 10_000)
    assert format_permutation_p(bound) == "< 1/10,000 (random)"
    assert format_permutation_p(exact).endswith(f"(exact, {exact['n_permutations']:,})")
    # reversed scores are as significant: the test is two-sided
    assert permutation_p(labels, -np.arange(48.0))["p_is_bound"]


def test_leave_one_out_range_against_recomputed_aurocs():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 1.5, 2.5, 10.0])
    aurocs = [roc_auc_score(np.delete(labels, i), np.delete(scores, i)) for i in range(8)]
    assert leave_one_out_range(labels, scores) == pytest.approx([min(aurocs), max(aurocs)])
    # dropping the one extreme misaligned persona moves the AUROC from 7/16 to 3/12
    assert min(aurocs) == pytest.approx(0.25) and roc_auc_score(labels, scores) == pytest.approx(7 / 16)


@pytest.mark.parametrize("n", [10, 24])
def test_minimum_detectable_auroc_has_80_percent_power_in_simulation(n):
    mde = minimum_detectable_auroc(n, n)
    assert 0.5 < mde < 1
    # binormal scores whose true AUROC is the MDE, tested with the normal approximation of the
    # Mann-Whitney null at alpha 0.05, two-sided: the rejection rate is the power
    shift = math.sqrt(2) * norm.ppf(mde)
    rng = np.random.default_rng(n)
    replicates = 3000
    scores = np.concatenate([rng.normal(size=(replicates, n)) + shift, rng.normal(size=(replicates, n))], axis=1)
    ranks = np.apply_along_axis(rankdata, 1, scores)
    aurocs = (ranks[:, :n].sum(1) - n * (n + 1) / 2) / (n * n)
    critical = norm.ppf(0.975) * math.sqrt((2 * n + 1) / (12 * n * n))
    power = np.mean(np.abs(aurocs - 0.5) > critical)
    assert abs(power - 0.8) < 0.04, power
    assert minimum_detectable_auroc(30, 30) < minimum_detectable_auroc(24, 24) < minimum_detectable_auroc(10, 10)


def test_persona_metrics_of_a_crossing():
    # 4 aligned and 4 misaligned personas, 2 models each, every model in one item per pair
    labels, scores, personas, models = [], [], [], []
    persona_value = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.9, 4: 0.4, 5: 0.5, 6: 0.6, 7: 0.7}  # 4..7 misaligned
    for a_model in range(8):
        for m_model in range(8, 16):
            for model in (a_model, m_model):
                persona = model // 2
                labels.append(int(persona >= 4))
                personas.append(persona)
                models.append(model)
                scores.append(persona_value[persona] + 0.01 * (model % 2))
    out = persona_metrics(np.array(labels), np.array(scores), np.array(personas), np.array(models))
    values = np.array([persona_value[p] + 0.005 for p in range(8)])
    persona_labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert out["auroc_personas"] == pytest.approx(roc_auc_score(persona_labels, values)) == pytest.approx(0.75)
    assert out["n_aligned_personas"] == out["n_misaligned_personas"] == 4
    assert out["persona_permutation"]["exact"] and out["persona_permutation"]["n_permutations"] == 70
    assert out["persona_permutation"]["p"] == pytest.approx(brute_force_p(persona_labels, values)[0])
    assert out["persona_loo_range"] == pytest.approx(leave_one_out_range(persona_labels, values))
    assert out["persona_smallest_p"] == pytest.approx(2 / 70) and math.isnan(out["persona_mde_auroc"]) is False
