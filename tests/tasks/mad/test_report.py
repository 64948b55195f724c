"""The MAD leaderboard section on hand-made records: which datasets count, the controls, the
convergence table, and the published figures as two columns."""

import numpy as np
import pytest

from harness.leaderboard.report import Section
from harness.leaderboard.report import records_frame
from harness.scoring import auroc
from harness.tasks.mad import report

N = 40
LABELS = [0] * N + [1] * N
AGREES = [True] * N + [True] * (N // 2) + [False] * (N // 2)
RECIPE = {"aux": ["plain", "echo", "judges"], "train": {"steps": 5000, "lr": 0.0015}, "notes": "x"}


def record(dataset, detector, seed, shift, valid=True, converged=None, status="ok"):
    rng = np.random.default_rng(abs(hash((dataset, detector, seed))) % 2**32)
    scores = rng.normal(size=2 * N) + shift * np.array(LABELS)
    diagnostics = {} if converged is None else {"converged": converged, "evaluations": [30] * (2 * N)}
    validity = {"valid": valid, "alice_accuracy": 0.9, "alice_accuracy_wilson_low": 0.85, "bob_accuracy": 0.88,
                "bob_accuracy_wilson_low": 0.83 if valid else 0.7, "agree_accuracy": 0.8,
                "agree_accuracy_wilson_low": 0.75, "n_alice_disagree": 190, "n_bob_disagree": 190, "n_agree": 380}
    return {
        "task": "mad", "task_kind": "mad", "source": "generated", "dataset": dataset, "detector": detector,
        "params": {}, "seed": seed, "status": status if valid else "invalid", "valid": valid, "message": "",
        "metrics": {"auroc": auroc(LABELS, scores), "auroc_ci": [0.0, 1.0]} if valid else {},
        "validity": validity, "labels": LABELS, "scores": scores.tolist(),
        "tags": {"agrees_with_gt": AGREES}, "diagnostics": diagnostics,
        **({} if converged is None else {"scored": converged}),
        "config": {"episode": {"recipe": RECIPE}}, "_path": f"{dataset}/{detector}-{seed}.json",
    }


@pytest.fixture(scope="module")
def section():
    records = []
    for dataset, seeds_valid in (("addition", (True, True, True)), ("subtraction", (True, True, False)),
                                 ("multiplication", (True, False, False))):
        for seed, valid in enumerate(seeds_valid):
            records.append(record(dataset, "strong", seed, 2.0, valid))
            records.append(record(dataset, "weak", seed, 0.5, valid))
            records.append(record(dataset, "name_only", seed, 1.0, valid))
            converged = [i % 4 != 0 for i in range(2 * N)]
            records.append(record(dataset, "basin_volume", seed, 0.2, valid, converged=converged))
        records.append(record(f"{dataset}_control", "strong", 0, 1.0))
        records.append(record(f"{dataset}_control", "weak", 0, 0.0))
    frame = records_frame(records)
    return Section("mad", "mad", "generated", 0, records, frame, [], "mad")


def test_only_datasets_with_two_valid_seeds_count(section):
    datasets, valid = report.counting_datasets(section.frame)
    assert datasets == ["addition", "subtraction"]
    assert valid["multiplication"] == [0] and valid["subtraction"] == [0, 1]


def test_summary_averages_counting_datasets_and_subtracts_the_floor(section):
    summary = report.mad_summary(section.frame).set_index("detector")
    assert list(summary.index[:2]) == ["strong", "name_only"]  # sorted by AUROC avg
    frame = section.frame
    ok = frame[(frame.detector == "strong") & frame.valid & frame.dataset.isin(["addition", "subtraction"])]
    expected = ok.groupby("dataset")["auroc"].mean().mean()
    assert summary.loc["strong", "AUROC avg"] == pytest.approx(expected)
    assert summary.loc["strong", "num_datasets"] == 2
    floors = frame[(frame.detector == "strong") & frame.dataset.isin(["addition_control", "subtraction_control"])]
    assert summary.loc["strong", "floor (no-quirk control)"] == pytest.approx(floors["auroc"].mean())
    adjusted = float(summary.loc["strong", "AUROC - floor [95%]"].split()[0])
    assert adjusted == pytest.approx(expected - floors["auroc"].mean(), abs=1e-3)
    low, high = (float(x) for x in summary.loc["strong", "95% interval"].strip("[]").split(","))
    assert low < expected < high
    assert summary.loc["name_only", "floor (no-quirk control)"] != summary.loc["name_only", "floor (no-quirk control)"]  # NaN: no control run


def test_unconverged_items_are_left_out_everywhere(section):
    frame = section.frame
    row = frame[(frame.detector == "basin_volume") & (frame.dataset == "addition") & (frame.seed == 0)].iloc[0]
    labels, scores = report._cell(row)
    assert len(labels) == 3 * N // 2  # every fourth item did not converge
    table = report.convergence_table(frame)
    assert set(table["converged"]) == {f"{3 * N // 2}/{2 * N}"} and set(table["excluded"]) == {N // 2}


def test_section_text(section):
    text = "\n".join(report.section(section))
    assert "Counting datasets: addition, subtraction; left out: multiplication (1 valid seed)" in text
    assert "Adjacent detectors" in text and "p (Holm)" in text
    assert "Every dataset's models share one training recipe: aux plain+echo+judges, 5000 steps" in text
    published = text.split("### Published figures")[1]
    assert "ours (tiny models)" in published and "published AUROC avg (Table 1, 'meta' models)" in published
    assert "above" not in published and "better" not in published
    assert "NO (not scored)" in text  # the invalid seeds in the gate table


def test_plots(section, tmp_path):
    written = report.plots(section, tmp_path)
    assert [p.name for p in written] == ["mad_auroc.png", "mad_ranks.png"]
    assert all(p.stat().st_size > 5000 for p in written)
