"""benchmarks/coverage.py at small sizes: the leaderboard's interval covers the estimand (the
mean AUROC over datasets, seeds, names and items), two equal detectors are seldom "resolved",
the check fails where it should (a bootstrap without the name level, when names matter), and
the components it simulates from can be estimated from records."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "coverage.py"


@pytest.fixture(scope="module")
def cov():
    spec = importlib.util.spec_from_file_location("coverage_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


SMALL = dict(n_examples=60, n_datasets=4, n_seeds=3)


def _rules(result):
    return {row["rule"]: row for row in result["rules"]}


def test_the_estimand_is_the_population_mean_auroc(cov):
    """Phi(delta / sqrt(2 + var(dataset) + var(seed))) against a brute-force population mean."""
    c = cov.Components(dataset_sd=0.6, seed_sd=0.4, **SMALL)
    delta = cov.delta_for(0.75, c)
    rng = np.random.default_rng(0)
    theta = delta + rng.normal(0, 0.6, 200_000) + rng.normal(0, 0.4, 200_000)
    from scipy.stats import norm

    assert cov.true_auroc(delta, c) == pytest.approx(0.75)
    assert np.mean(norm.cdf(theta / np.sqrt(2))) == pytest.approx(0.75, abs=0.003)


def test_leaderboard_interval_covers_and_equal_detectors_are_seldom_resolved(cov):
    c = cov.Components(dataset_sd=0.5, seed_sd=0.3, name_sd=0.3, name_cell_sd=0.1, example_sd=0.3, **SMALL)
    result = cov.simulate(c, target=0.75, n_leaderboards=60, n_bootstrap=150, seed=0, progress=False)
    rules = _rules(result)
    leaderboard = rules["t (the leaderboard's)"]
    assert result["n_intervals"] == 120
    assert leaderboard["coverage"] >= 0.85
    assert leaderboard["false_resolved"] <= 0.1
    # the t rule is the wider one: it corrects the percentile interval's small-sample shortfall
    assert leaderboard["median_width"] > rules["percentile"]["median_width"]


def test_without_the_name_level_intervals_miss_when_names_matter(cov):
    """The same check fails a bootstrap that does not resample names: a strong name effect
    shared by every cell moves every dataset's AUROC together."""
    c = cov.Components(dataset_sd=0.05, seed_sd=0.05, dataset_interaction_sd=0.05, seed_interaction_sd=0.05,
                       name_sd=0.8, name_cell_sd=0.0, example_sd=0.2, **SMALL)
    result = cov.simulate(c, target=0.75, n_leaderboards=40, n_bootstrap=150, seed=1, without_groups=True,
                          progress=False)
    rules = _rules(result)
    assert rules[cov.NO_GROUPS]["coverage"] < 0.7
    assert rules[cov.NO_GROUPS]["false_resolved"] > 0.3  # and equal detectors look different
    assert rules["t (the leaderboard's)"]["coverage"] >= 0.85


def test_components_are_recovered_from_records(cov):
    """Records simulated with known components give back estimates of the right size."""
    truth = cov.Components(dataset_sd=0.0, seed_sd=0.0, dataset_interaction_sd=0.0, seed_interaction_sd=0.0,
                           name_sd=0.5, name_cell_sd=0.0, example_sd=0.5, rho=0.5, n_examples=300)
    cells = cov.simulate_leaderboard(truth, cov.delta_for(0.8, truth), np.random.default_rng(3))
    records = [{"detector": k, "dataset": d, "seed": s, "status": "ok", "valid": True,
                "labels": cell[0].tolist(), "scores": cell[1].tolist(),
                "tags": {"name": cell[2]["name"].tolist(), "example": cell[2]["example"].tolist()}}
               for k, per in cells.items() for d, seeds in per.items() for s, cell in seeds.items()]
    per_detector, pairs = cov.estimate_components(records, progress=False)
    for label in ("a", "b"):
        est = per_detector[label]
        assert 0.3 < est["name_sd"] < 0.7 and 0.35 < est["example_sd"] < 0.65
        assert est["dataset_sd"] < 0.2 and est["seed_sd"] < 0.2 and est["name_cell_sd"] < 0.2
    assert pairs["rho"] == pytest.approx(0.5, abs=0.15)
    chosen = cov.profile_components(per_detector, pairs, "median", replace(truth, name_sd=0.0))
    assert chosen.name_sd == pytest.approx(np.median([v["name_sd"] for v in per_detector.values()]))
