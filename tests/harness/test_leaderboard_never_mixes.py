"""The leaderboard never mixes (issue 22, leaderboard part): one regression test (or a few) per
case the issue lists, each on synthetic records written straight to disk (no model is trained,
no runner is involved), each asserting what the old code got wrong.

1. a gate override on the same models is not "models that differ", and ``--check`` passes;
2. one row never averages seeds of different settings (gate, dtype);
3. without ``models.json``, foreign or quick models are never spliced into the reference section;
4. two versions of a detector are two rows, and results.csv has version columns;
5. results.csv's columns do not depend on other plugins' records, and ``--check`` does not
   depend on which plugins are installed;
6. ``--check`` fails on an orphan PNG, no image link points to a plot that is not drawn, and
   the MAD gate sentence states an overridden gate;
7. atomic writes respect the umask, and NaN is never written as non-standard JSON.
"""

import hashlib
import io
import json
import logging
import math
import os
import re
import stat

import numpy as np
import pandas as pd
import pytest

from harness import leaderboard
from harness.cli import main
from harness.scoring import auroc

N = 30
LABELS = [0] * N + [1] * N
DEFAULT_GATE = {"threshold": 0.8, "agree_threshold": 0.8, "gate": "wilson_low"}


def make_record(*, task="toy_task", dataset="shifted", seed=0, detector="det_a", model="A", shift=2.0,
                gate=None, version="0.1.0", distribution="detector-harness", created=1000.0, quick=False,
                dtype="float32", valid=True, metrics=None, validity=None, source="generated", model_fp=None):
    """A record as the runner writes it, for one (dataset, seed) cell of model set ``model``."""
    gate = dict(DEFAULT_GATE if gate is None else gate)
    model_fp = model_fp or f"{model}-{dataset}-{seed}".lower()
    episode_fp = f"ep-{model_fp}-{json.dumps(gate, sort_keys=True)}"
    rng = np.random.default_rng(_digest(task, dataset, seed, detector, model, version, shift) % 2**32)
    scores = (rng.normal(size=2 * N) + shift * np.array(LABELS)).tolist()
    value = auroc(np.array(LABELS), np.array(scores))
    record = {
        "schema_version": 2, "task": task, "task_kind": task, "task_version": "1",
        "task_plugin": {"distribution": "detector-harness", "plugin": "builtin_tasks", "version": "0.1.0"},
        "dataset": dataset, "source": source, "episode_fingerprint": episode_fp,
        "model_fingerprint": model_fp, "model_fingerprints": {"model": model_fp},
        "detector": detector, "detector_plugin": {"distribution": distribution, "plugin": "p", "version": version},
        "params": {}, "seed": seed, "quick": quick,
        "runtime": {"device": "cpu", "dtype": dtype, "batch_size": "auto", "device_map": None},
        "valid": valid, "validity": {"valid": valid, **gate, **(validity or {})},
        "config": {"task": {"options": {}, "seed": seed, "quick": quick}, "episode": {}},
        "status": "ok" if valid else "invalid", "message": "" if valid else "the gate says no",
        "metrics": ({"auroc": value, "auroc_ci": [value - 0.05, min(1.0, value + 0.05)], **(metrics or {})}
                    if valid else {}),
        "labels": LABELS, "scores": scores, "tags": {"agrees_with_gt": [True] * (N + N // 2) + [False] * (N // 2)},
        "diagnostics": {}, "created_unix": created, "timings": {"fit_s": 0.1, "score_s": 0.1},
    }
    record["key"] = f"{_digest(episode_fp, dataset, seed, detector, version, distribution, quick, dtype) % 16**12:012x}"
    return record


def _digest(*parts):
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest(), 16)


def save(results, record):
    path = results / record["task"] / record["dataset"] / f"{record['detector']}-{record['key']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def cli(results, board, *extra):
    return main(["leaderboard", "--results-dir", str(results), "--out-dir", str(board), *extra])


def mad_registry():
    from harness.plugins import get_registry

    return get_registry()


# -- case 1 ------------------------------------------------------------------------------------------
def test_case1_a_gate_override_on_the_same_models_is_not_other_models(tmp_path, capsys):
    results, board = tmp_path / "records", tmp_path / "board"
    for seed in (0, 1):
        for detector in ("det_a", "det_b"):
            save(results, make_record(seed=seed, detector=detector))
        # the same models, scored with a gate override (another episode fingerprint)
        save(results, make_record(seed=seed, detector="det_c", gate={**DEFAULT_GATE, "threshold": 0.7},
                                  created=2000.0))
    sections = leaderboard.load_sections(results, board)
    assert [s.index for s in sections] == [0], "identical models must not be labelled 'models that differ'"
    assert leaderboard.mixes(sections) == []
    assert cli(results, board) == 0
    assert "other models" not in (board / "README.md").read_text()
    assert cli(results, board, "--check") == 0, capsys.readouterr().err
    # the override's records are listed, not averaged with the default gate's
    [section] = sections
    assert {r["validity"]["threshold"] for r in section.records} == {0.8}
    assert "left out: 2 records of these models with another setting (gate threshold=0.7)" in \
        (board / "README.md").read_text()
    csv = pd.read_csv(board / "results.csv")  # one row per record, the left-out ones too
    assert len(csv) == 6 and sorted(csv.loc[~csv["in_table"], "detector"]) == ["det_c", "det_c"]


# -- case 2 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("other", [{"gate": {**DEFAULT_GATE, "threshold": 0.6}}, {"dtype": "bfloat16"}],
                         ids=["gate", "dtype"])
def test_case2_one_row_never_averages_seeds_of_different_settings(tmp_path, other):
    results = tmp_path / "records"
    for seed in (0, 1):
        save(results, make_record(seed=seed, detector="det_a"))
    save(results, make_record(seed=2, detector="det_a", created=2000.0, shift=0.0, **other))  # another setting
    [section] = leaderboard.load_sections(results, tmp_path)
    settings = {(json.dumps(r["validity"], sort_keys=True), r["runtime"]["dtype"]) for r in section.records}
    assert len(settings) == 1, f"seeds of different settings averaged in one row: {settings}"
    assert sorted(section.frame["seed"]) == [0, 1]
    readme = leaderboard.render(results, tmp_path)["README.md"]
    row = next(line for line in readme.splitlines() if line.startswith("| det_a"))
    expected = np.mean([r["metrics"]["auroc"] for r in section.records])
    assert f"{expected:.3f}" in row


# -- case 3 ------------------------------------------------------------------------------------------
def test_case3_without_models_json_foreign_models_are_not_spliced_into_the_reference(tmp_path):
    results, board = tmp_path / "records", tmp_path / "board"
    reference = [save(results, make_record(seed=seed, detector=d)) for seed in (0, 1, 2) for d in ("det_a", "det_b")]
    # a foreign zoo's model for seed 0, recorded later, with more detectors than the reference has there
    for detector in ("det_a", "det_b", "det_c"):
        save(results, make_record(seed=0, detector=detector, model="B", shift=0.3, created=2000.0))
    assert not (board / "models.json").exists()
    sections = leaderboard.load_sections(results, board)
    first = sections[0]
    assert first.index == 0
    assert {m["model_fingerprint"] for m in first.models} == {"a-shifted-0", "a-shifted-1", "a-shifted-2"}, \
        "a foreign model was spliced into the reference section"
    assert [(s.index, {m["model_fingerprint"] for m in s.models}) for s in sections[1:]] == [(1, {"b-shifted-0"})]
    mine = [json.loads(p.read_text()) for p in reference]
    expected = np.mean([r["metrics"]["auroc"] for r in mine if r["detector"] == "det_a"])
    rows = first.frame[first.frame["detector"] == "det_a"]
    assert rows["auroc"].mean() == pytest.approx(expected)


def test_case3_quick_models_never_join_a_full_size_section(tmp_path):
    results = tmp_path / "records"
    for seed in (0, 1):
        for detector in ("det_a", "det_b"):
            save(results, make_record(seed=seed, detector=detector))
    for detector in ("det_a", "det_b"):  # quick (tiny) models of seed 0, recorded later
        save(results, make_record(seed=0, detector=detector, model="Q", quick=True, shift=0.1, created=3000.0))
    sections = leaderboard.load_sections(results, tmp_path, include_quick=True)
    for section in sections:
        kinds = {bool(r.get("quick")) for r in section.records}
        assert len(kinds) == 1, f"{section.title} mixes quick and full-size models"
    full = [s for s in sections if not s.records[0].get("quick")]
    assert [s.index for s in full] == [0]
    assert {m["model_fingerprint"] for m in full[0].models} == {"a-shifted-0", "a-shifted-1"}
    assert leaderboard.mixes(sections) == []  # a quick section is not another model set of the full-size one


# -- case 4 ------------------------------------------------------------------------------------------
def test_case4_two_versions_of_a_detector_are_two_rows_and_results_csv_has_versions(tmp_path):
    results = tmp_path / "records"
    for seed in (0, 1):
        save(results, make_record(seed=seed, detector="det_a", version="0.1.1", shift=2.0))
    save(results, make_record(seed=0, detector="det_a", version="0.2.0", shift=0.2, created=2000.0))
    assert len(leaderboard.newest_records(results)) == 3, "a newer version must not replace the older one's record"
    files = leaderboard.render(results, tmp_path)
    rows = [line for line in files["README.md"].splitlines() if line.startswith("| det_a")]
    assert len(rows) == 2 and any("v0.1.1" in r for r in rows) and any("v0.2.0" in r for r in rows), rows
    csv = pd.read_csv(io.StringIO(files["results.csv"]))
    assert "detector_version" in csv.columns
    assert sorted(csv["detector_version"].astype(str)) == ["0.1.1", "0.1.1", "0.2.0"]


# -- case 5 ------------------------------------------------------------------------------------------
def test_case5_results_csv_columns_do_not_depend_on_other_plugins_records(tmp_path):
    results = tmp_path / "records"
    for seed in (0, 1):
        save(results, make_record(task="builtin_like", seed=seed))
    before = leaderboard.render(results, tmp_path)["results.csv"].splitlines()
    for seed in (0, 1):  # a plugin's task with metrics of its own
        save(results, make_record(task="plugin_task", seed=seed, metrics={"backdoor_rate": 0.25}))
    after = leaderboard.render(results, tmp_path)["results.csv"].splitlines()
    assert after[0] == before[0], "a plugin's records changed the columns of every row"
    assert after[1:3] == before[1:3], "the built-in rows were rewritten"
    assert len(after) == 5


def mad_records(results, gate=None, valid=True):
    """Synthetic MAD records: two datasets, two seeds, two detectors, one control."""
    facts = {"alice_accuracy": 0.95, "alice_accuracy_wilson_low": 0.9, "bob_accuracy": 0.94,
             "bob_accuracy_wilson_low": 0.88, "agree_accuracy": 0.96, "agree_accuracy_wilson_low": 0.92,
             "n_alice_disagree": 100, "n_bob_disagree": 100, "n_agree": 200}
    for dataset in ("addition", "subtraction"):
        for seed in (0, 1):
            for detector, shift in (("det_strong", 2.0), ("det_weak", 0.5)):
                save(results, make_record(task="mad", dataset=dataset, seed=seed, detector=detector, shift=shift,
                                          gate=gate, valid=valid, validity=facts))
    save(results, make_record(task="mad", dataset="addition_control", seed=0, detector="det_strong", shift=0.0,
                              gate=gate, valid=valid, validity=facts))


def test_case5_check_does_not_depend_on_which_plugins_are_installed(tmp_path, caplog):
    from harness.plugins import Registry

    results, board = tmp_path / "records", tmp_path / "board"
    mad_records(results)
    leaderboard.build(results, board, registry=mad_registry())
    readme = (board / "README.md").read_text()
    assert "## MAD: mechanistic anomaly detection" in readme
    with caplog.at_level(logging.WARNING):
        stale = leaderboard.check(results, board, registry=Registry())  # the mad plugin "not installed"
    assert stale == [], "a section whose plugin is absent was re-rendered with the default table"
    assert "not installed" in caplog.text  # ... and flagged


# -- case 6 ------------------------------------------------------------------------------------------
def test_case6_check_fails_on_an_orphan_png(tmp_path, capsys):
    results, board = tmp_path / "records", tmp_path / "board"
    save(results, make_record())
    assert cli(results, board) == 0 and cli(results, board, "--check") == 0
    (board / "toy_task_other1_auroc.png").write_bytes(b"\x89PNG\r\n\x1a\n leftover of a section that is gone")
    capsys.readouterr()
    assert cli(results, board, "--check") == 1, "an orphan PNG passed --check"
    assert "toy_task_other1_auroc.png" in capsys.readouterr().err
    assert cli(results, board) == 0 and not (board / "toy_task_other1_auroc.png").exists()
    assert cli(results, board, "--check") == 0


def test_case6_no_image_link_to_a_plot_that_is_not_drawn(tmp_path):
    results, board = tmp_path / "records", tmp_path / "board"
    mad_records(results, valid=False)  # no model passed the gate: nothing to plot
    leaderboard.build(results, board, registry=mad_registry())
    readme = (board / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    missing = [link for link in links if not (board / link).exists()]
    assert missing == [], f"README.md links plots that were not drawn: {missing}"


def test_case6_check_fails_on_a_broken_image_link(tmp_path, capsys):
    results, board = tmp_path / "records", tmp_path / "board"
    mad_records(results)
    assert cli(results, board) == 0
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (board / "README.md").read_text())
    assert "mad_auroc.png" in links
    (board / "mad_auroc.png").unlink()  # the text is up to date, its figure is gone
    capsys.readouterr()
    assert cli(results, board, "--check") == 1, "README.md links a file that does not exist, and --check passed"
    assert "mad_auroc.png" in capsys.readouterr().err


def test_case6_the_gate_sentence_states_an_overridden_gate(tmp_path):
    from harness.tasks.mad import report

    results = tmp_path / "records"
    mad_records(results, gate={"threshold": 0.6, "agree_threshold": 0.0, "gate": "wilson_low"})
    [section] = leaderboard.load_sections(results, tmp_path)
    text = " ".join(report.section(section))
    assert "lower bounds >= 0.8" not in text, "the header states the default gate for records made with another"
    assert ">= 0.6" in text and "min_accuracy=0.6" in text and "which these records override" in text
    default_results = tmp_path / "default"
    mad_records(default_results)
    [default] = leaderboard.load_sections(default_results, tmp_path)
    assert "Wilson 95% lower bounds >= 0.8 on" in "\n".join(report.section(default))


# -- case 7 (umask, NaN) -----------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_case7_atomic_writes_respect_the_umask(tmp_path, umask):
    from harness.cache import atomic_directory, atomic_write_bytes, atomic_write_json

    previous = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "r.json", {"x": 1})
        atomic_write_bytes(tmp_path / "b.bin", b"x")
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "weights").write_text("w")
    finally:
        os.umask(previous)
    modes = {name: oct(stat.S_IMODE((tmp_path / name).stat().st_mode)) for name in ("r.json", "b.bin", "model")}
    assert modes == {"r.json": oct(0o666 & ~umask), "b.bin": oct(0o666 & ~umask), "model": oct(0o777 & ~umask)}


def test_case7_nan_is_never_written_as_non_standard_json(tmp_path):
    from harness.records import read_record, write_record

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    scores = [0.1, 1e-300, 2.5e10, -3.14159265358979, 0.30000000000000004]
    record = make_record()
    record.update(scores=scores, metrics={"auroc": float("nan"), "auroc_ci": [float("nan"), float("inf")],
                                          "auroc_disagree": np.float64("nan"), "n": np.int64(3)})
    path = tmp_path / "r.json"
    write_record(path, record)
    stored = json.loads(path.read_text(), parse_constant=refuse)  # standard JSON only
    assert stored["metrics"] == {"auroc": None, "auroc_ci": [None, None], "auroc_disagree": None, "n": 3}
    assert stored["scores"] == scores  # finite floats round-trip exactly
    assert read_record(path)["scores"] == scores
    from harness.leaderboard.report import records_frame

    frame = records_frame([dict(stored, _path=str(path))])
    assert math.isnan(frame["auroc"].iloc[0]) and math.isnan(frame["auroc_ci_low"].iloc[0])


# -- the reference (models.json) -------------------------------------------------------------------
def test_models_json_decides_which_models_are_the_reference(tmp_path):
    results, board = tmp_path / "records", tmp_path / "board"
    for seed in (0, 1):
        save(results, make_record(seed=seed))
    leaderboard.build(results, board)
    listed = json.loads((board / "models.json").read_text())["models"]
    assert [(e["seed"], e["model_fingerprint"]) for e in listed] == [(0, "a-shifted-0"), (1, "a-shifted-1")]
    # recorded earlier than the reference, but on models models.json does not list: apart
    save(results, make_record(seed=0, model="B", created=10.0))
    save(results, make_record(seed=2, model="C", created=10.0))
    # a listed model scored with another run seed (a real model does not change with it): in
    save(results, make_record(seed=3, model_fp="a-shifted-0", created=3000.0))
    sections = leaderboard.load_sections(results, board)
    assert [(s.index, sorted(m["model_fingerprint"] for m in s.models)) for s in sections] == [
        (0, ["a-shifted-0", "a-shifted-0", "a-shifted-1"]), (1, ["b-shifted-0", "c-shifted-2"])]
    assert "models.json" in leaderboard.mixes(sections)[0]
    # without models.json, the models recorded first in each (dataset, seed) are the reference
    sections = leaderboard.load_sections(results, tmp_path / "fresh")
    assert [(s.index, [(m["seed"], m["model_fingerprint"]) for m in s.models]) for s in sections] == [
        (0, [(0, "b-shifted-0"), (1, "a-shifted-1"), (2, "c-shifted-2"), (3, "a-shifted-0")]),
        (1, [(0, "a-shifted-0")])]
