import json

import numpy as np
import pandas as pd
import pytest

from harness import leaderboard
from harness.leaderboard.report import detector_labels
from harness.tasks.mad import report as mad_report
from harness.run.runner import RunOptions, run
from harness.scoring import auroc


@pytest.fixture()
def records_dir(tmp_path, toy_registry):
    results = tmp_path / "records"
    for seed in (0, 1):
        run(toy_registry, "toy", ["activations_mahalanobis", "exploding"], RunOptions(results_dir=results, seed=seed))
    return results


def records_frame(results_dir):
    """The frame of the newest records (what one section shows when all come from one model set)."""
    from harness.leaderboard.report import records_frame as frame_of

    return frame_of(leaderboard.newest_records(results_dir))


def test_summary_has_the_published_columns_and_averages_valid_datasets(records_dir):
    frame = records_frame(records_dir)
    summary = mad_report.mad_summary(frame)
    assert list(summary.columns[:7]) == ["detector", "mechanism AUROC", "mechanism 95%", "trigger only AUROC",
                                         "trigger only 95%", "Bob vs Alice (quirky frame) AUROC",
                                         "Bob vs Alice (quirky frame) 95%"]
    row = summary.set_index("detector").loc["activations_mahalanobis"]
    ok = frame[(frame.status == "ok")]
    # one-frame records (no truthful frame): only the Bob vs Alice column has a value
    assert row["Bob vs Alice (quirky frame) AUROC"] == pytest.approx(ok["auroc"].mean())  # one valid dataset, two seeds
    assert np.isnan(row["mechanism AUROC"]) and np.isnan(row["trigger only AUROC"])
    assert row["num_datasets"] == 1
    assert row["models (per dataset)"] == "2 (2)"
    low, high = json.loads(row["Bob vs Alice (quirky frame) 95%"])
    assert low < row["Bob vs Alice (quirky frame) AUROC"] < high


def test_render_shows_invalid_and_failed_jobs(records_dir, tmp_path, toy_registry):
    files = leaderboard.render(records_dir, tmp_path, registry=toy_registry)
    readme = files["README.md"]
    # the toy task has no report of its own: it gets the default section, not MAD's
    assert "AUROC (mean over seeds)" in readme and "published name" not in readme
    assert "not scored: broken (seed 0): toy says no" in readme  # the invalid toy episode
    assert "error: `exploding` on shifted (seed 0): RuntimeError: kaboom" in readme
    csv = pd.read_csv(pd.io.common.StringIO(files["results.csv"]))
    assert set(csv["status"]) == {"ok", "invalid", "error"}


def test_a_task_renders_its_own_section_and_plots(records_dir, tmp_path, toy_registry):
    class ToyWithMadReport(toy_registry.tasks["toy"]):
        report = "harness.tasks.mad.report"

    toy_registry.tasks["toy"] = ToyWithMadReport
    readme = leaderboard.render(records_dir, tmp_path, registry=toy_registry)["README.md"]
    assert "disagree (published: vs all Alice)" in readme and "disagree (matched statement types)" in readme
    assert "NO (not scored)" in readme  # MAD's per-dataset table marks the invalid episode
    out = tmp_path / "board"
    written = leaderboard.build(records_dir, out, registry=toy_registry)
    assert (out / "toy_auroc.png") in written and (out / "toy_auroc.png").stat().st_size > 1000


def test_check_detects_stale_files(records_dir, tmp_path, toy_registry):
    out = tmp_path / "board"
    written = leaderboard.build(records_dir, out, registry=toy_registry)
    assert {p.name for p in written} == {"README.md", "results.csv", "models.json"}
    assert leaderboard.check(records_dir, out, registry=toy_registry) == []
    record_path = next(records_dir.rglob("shifted/activations_mahalanobis-*.json"))
    record = json.loads(record_path.read_text())
    record["metrics"]["auroc"] = 0.123
    record_path.write_text(json.dumps(record))
    assert "README.md" in leaderboard.check(records_dir, out, registry=toy_registry)


def test_recomputed_interval_uses_stored_scores(records_dir):
    frame = records_frame(records_dir)
    row = frame[(frame.status == "ok") & (frame.seed == 0)].iloc[0]
    assert auroc(np.array(row["_labels"]), np.array(row["_scores"])) == pytest.approx(row["auroc"])


def test_labels_name_only_the_hyperparameters_that_differ(tmp_path, toy_registry):
    results = tmp_path / "records"
    for covariance in ("ledoit_wolf", "pinv"):
        run(toy_registry, "toy", ["activations_mahalanobis"],
            RunOptions(results_dir=results, detector_params={"activations_mahalanobis": {"covariance": covariance}}))
    labels = set(detector_labels(records_frame(results)))
    assert labels == {"activations_mahalanobis (covariance=ledoit_wolf)", "activations_mahalanobis (covariance=pinv)"}


def test_only_the_newest_record_of_a_setting_counts(tmp_path, toy_registry):
    import time

    results = tmp_path / "records"
    run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=results))
    stale = next(results.rglob("shifted/activations_mahalanobis-*.json"))
    record = json.loads(stale.read_text())
    # the same setting recorded later for a retrained model (another key): only it counts
    newer = dict(record, key="newer", created_unix=time.time() + 10, metrics=dict(record["metrics"], auroc=0.5))
    (stale.parent / "activations_mahalanobis-newer.json").write_text(json.dumps(newer))
    frame = records_frame(results)
    rows = frame[(frame.dataset == "shifted")]
    assert len(rows) == 1 and rows.iloc[0]["auroc"] == 0.5
