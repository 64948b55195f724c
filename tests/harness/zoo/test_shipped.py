"""The shipped reference zoo: a run imports the leaderboard's models from ``leaderboard/zoo``
instead of training them, ``--no-shipped-zoo`` trains, ``harness leaderboard --check`` fails
when the archive and the records disagree, and a run says whether it reproduced the
leaderboard's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cache import atomic_write_json
from harness.records import Agreement, compare_with_leaderboard
from harness.zoo.archive import ZooArchiveError, export_zoo
from harness.run.retrain import RetrainRow, accuracy_shift, report
from harness.zoo.shipped import archive_fingerprints, check_shipped, import_shipped, shipped_archive
from harness.zoo.sources import ModelRecipe, build_models

from tests.harness.zoo.test_archive import make_model, use_cache

KEY = {"task": "mad", "operation": "addition", "seed": 0, "model_version": "test"}


def never_train(out_dir: Path) -> None:
    raise AssertionError("trained a model the shipped zoo holds")


class TrainCalled(Exception):
    pass


def train_sentinel(out_dir: Path) -> None:
    raise TrainCalled(str(out_dir))


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose leaderboard/zoo ships one archive holding the model of KEY;
    the current cache is an empty one."""
    use_cache(monkeypatch, tmp_path / "cache-origin")
    make_model(tmp_path / "cache-origin", KEY, b"the leaderboard's weights")
    repo = tmp_path / "repo"
    export_zoo(repo / "leaderboard" / "zoo")
    monkeypatch.chdir(repo)
    use_cache(monkeypatch, tmp_path / "cache-fresh")
    return repo


def test_a_missing_model_the_shipped_zoo_holds_is_imported_not_trained(checkout, tmp_path):
    notices: list[str] = []
    paths = build_models([ModelRecipe(key=KEY, train=never_train, label="addition")], jobs=1, on_notice=notices.append)
    (path,) = paths.values()
    assert path.parent.parent == tmp_path / "cache-fresh" and (path / "key.json").is_file()
    assert len(notices) == 1 and "leaderboard/zoo/harness-zoo-" in notices[0] and "nothing to train" in notices[0]
    assert build_models([ModelRecipe(key=KEY, train=never_train)], jobs=1) == paths  # cached now: no notice needed


def test_no_shipped_zoo_trains_and_other_recipes_still_train(checkout):
    with pytest.raises(TrainCalled):
        build_models([ModelRecipe(key=KEY, train=train_sentinel)], jobs=1, shipped=False)
    other = {**KEY, "seed": 1}  # not in the archive: trained as before, the archive left alone
    with pytest.raises(TrainCalled):
        build_models([ModelRecipe(key=other, train=train_sentinel)], jobs=1)
    assert import_shipped([other]) == (0, [])


def test_the_pretrained_pages_archive_is_found_beside_the_tiny_models_one(checkout, tmp_path, monkeypatch):
    adapter_key = {"task": "mad", "source": "pretrained", "dataset": "hemisphere", "seed": 0, "adapter_version": "test"}
    use_cache(monkeypatch, tmp_path / "cache-adapters")
    make_model(tmp_path / "cache-adapters", adapter_key, b"an adapter")
    export_zoo(checkout / "leaderboard" / "pretrained" / "zoo")
    use_cache(monkeypatch, tmp_path / "cache-fresh")
    notices: list[str] = []
    build_models([ModelRecipe(key=adapter_key, train=never_train)], jobs=1, on_notice=notices.append)
    assert len(notices) == 1 and "leaderboard/pretrained/zoo/harness-zoo-" in notices[0]
    assert "leaderboard/zoo/" not in notices[0]  # the tiny models' archive holds none of them: left alone
    imported, archives = import_shipped([KEY, adapter_key])
    assert imported == 1 and [a.parent.parent.name for a in archives] == ["leaderboard", "pretrained"]


def test_each_page_of_the_leaderboard_has_its_shipped_zoo():
    from harness.records import BOARDS
    from harness.zoo.shipped import SHIPPED_ZOO_DIRS

    assert SHIPPED_ZOO_DIRS == tuple(board / "zoo" for board in BOARDS)


def test_two_archives_are_refused_and_none_is_no_archive(checkout, tmp_path):
    zoo = checkout / "leaderboard" / "zoo"
    assert shipped_archive(tmp_path / "nowhere") is None
    (archive,) = zoo.glob("*.tar.gz")
    (zoo / "harness-zoo-000000000000.tar.gz").write_bytes(archive.read_bytes())
    with pytest.raises(ZooArchiveError, match="2 zoo archives"):
        shipped_archive(zoo)


def test_check_fails_when_records_and_archive_name_different_models(checkout):
    zoo = checkout / "leaderboard" / "zoo"
    (archive,) = zoo.glob("*.tar.gz")
    (fingerprint,) = archive_fingerprints(archive)
    models = checkout / "leaderboard" / "models.json"

    def write(fingerprints: dict[str, str]) -> None:
        atomic_write_json(models, {"models": [{"task": "mad", "dataset": "addition", "seed": 0,
                                               "model_fingerprints": fingerprints}]})

    write({"model": fingerprint})
    assert check_shipped(models, zoo) == []
    write({"model": "0123456789abcdef"})
    problems = check_shipped(models, zoo)
    assert len(problems) == 2
    assert "0123456789abcdef (mad addition seed 0 model)" in problems[0] and "does not hold" in problems[0]
    assert fingerprint in problems[1] and "no leaderboard record uses" in problems[1]


def _record(tmp: Path, root: str, auroc: float, scores: list[float]) -> Path:
    path = tmp / root / "mad" / "addition" / "basin_mahalanobis-abc.json"
    atomic_write_json(path, {"task": "mad", "status": "ok", "scores": scores,
                             "metrics": {"auroc": auroc, "auroc_ci": [auroc - 0.1, 1.0], "n_items": 4}})
    return path


def test_a_record_is_compared_with_the_leaderboards_record_of_the_same_job(tmp_path):
    board = tmp_path / "leaderboard" / "records"
    _record(tmp_path, "leaderboard/records", 0.75, [0.1, 0.2])
    same = _record(tmp_path, "results/records", 0.75, [0.1, 0.2])
    assert compare_with_leaderboard(same, tmp_path / "results" / "records", board) == Agreement(
        "mad/addition/basin_mahalanobis-abc.json", True, 0.0, "")
    moved = _record(tmp_path, "moved/records", 0.7505, [0.1, 0.2001])
    agreement = compare_with_leaderboard(moved, tmp_path / "moved" / "records", board)
    assert not agreement.identical and agreement.max_diff == pytest.approx(0.0005) and agreement.worst in ("auroc", "auroc_ci[0]")
    lonely = tmp_path / "other" / "records" / "mad" / "addition" / "basin_mahalanobis-zzz.json"
    atomic_write_json(lonely, {"task": "mad", "status": "ok", "metrics": {"auroc": 0.5}})
    assert compare_with_leaderboard(lonely, tmp_path / "other" / "records", board) is None


def test_runs_render_their_own_board_outside_the_leaderboard():
    from harness.cli import rendered_board_dir
    from harness.records import DEFAULT_RESULTS_DIR, QUICK_RESULTS_DIR

    assert DEFAULT_RESULTS_DIR.parts[0] == "results" and QUICK_RESULTS_DIR.parts[0] == "results"
    assert rendered_board_dir(DEFAULT_RESULTS_DIR, explicit=False) == Path("results")
    assert rendered_board_dir(Path("leaderboard/records"), explicit=True) == Path("leaderboard")
    assert rendered_board_dir(Path("leaderboard/pretrained/records"), explicit=True) == Path("leaderboard/pretrained")
    assert rendered_board_dir(Path("/tmp/somewhere"), explicit=True) is None


def test_harness_leaderboard_renders_each_page_that_has_records(tmp_path, monkeypatch):
    from harness.cli import leaderboard_pages

    monkeypatch.chdir(tmp_path)
    tiny = (Path("leaderboard/records"), Path("leaderboard"))
    pretrained = (Path("leaderboard/pretrained/records"), Path("leaderboard/pretrained"))
    assert leaderboard_pages(None, None) == [tiny]
    Path("leaderboard/pretrained/records").mkdir(parents=True)
    assert leaderboard_pages(None, None) == [tiny, pretrained]
    assert leaderboard_pages(Path("leaderboard/pretrained/records"), None) == [pretrained]
    assert leaderboard_pages(Path("elsewhere"), None) == [(Path("elsewhere"), Path("leaderboard"))]
    assert leaderboard_pages(Path("elsewhere"), Path("out")) == [(Path("elsewhere"), Path("out"))]


def test_a_run_is_compared_with_the_page_that_holds_its_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _record(tmp_path, "leaderboard/pretrained/records", 0.9, [0.3])
    mine = _record(tmp_path, "results/records", 0.9, [0.3])
    assert compare_with_leaderboard(mine, tmp_path / "results" / "records").identical


def test_retrain_report_names_fingerprint_gate_and_drift():
    rows = [RetrainRow("addition", 0, 1, 1, "991d3e48", "991d3e48", True, True, 0.0, 0.9, 0.9),
            RetrainRow("multiplication", 0, 0, 1, "aaaa0000", "bbbb1111", True, False, 0.031, 0.81, None),
            RetrainRow("modular_addition", 0, 0, 1, "cccc0000", "dddd1111", True, True, 0.004, 0.95, 0.97)]
    text = report(rows, "mad", "activations_mahalanobis", "auroc")
    assert "| addition | 0 | 991d3e48 / 991d3e48 | yes | pass / pass | 0.000 | 0.900 / 0.900 | +0.000 |" in text
    assert "| multiplication | 0 | aaaa0000 / bbbb1111 | no | pass / FAIL | 0.031 | 0.810 / - | - |" in text
    assert "1 of 3 episodes retrained to the shipped models exactly; 1 changed their gate verdict; " \
           "largest |drift| of auroc: 0.020" in text
    assert accuracy_shift({"validity": {"bob_accuracy": 0.9, "gate": "x"}},
                          {"validity": {"bob_accuracy": 0.8, "gate": "y"}}) == pytest.approx(0.1)


@pytest.mark.slow
def test_a_fresh_cache_scores_the_leaderboards_own_models(tmp_path, monkeypatch, capsys):
    """The README's first command in miniature: in the repository, with an empty cache, a run
    imports the shipped zoo, trains nothing, writes outside leaderboard/, and its record is the
    leaderboard's record of the same job (to the closed-form family's tolerance: other CPUs'
    kernels move the last bits)."""
    import harness.tasks.mad.task as mad_task
    from harness.cli import main

    root = Path(__file__).resolve().parents[3]
    monkeypatch.chdir(root)
    use_cache(monkeypatch, tmp_path / "cache")

    def no_training(*args, **kwargs):
        raise AssertionError("a model was trained although the shipped zoo holds it")

    monkeypatch.setattr(mad_task, "train_quirky_model", no_training)
    results = tmp_path / "records"
    assert main(["run", "--task", "mad", "--detector", "activations_mahalanobis", "--dataset", "addition",
                 "--results-dir", str(results), "--expect-leaderboard", "0.001"]) == 0
    out = capsys.readouterr()
    assert "from the shipped zoo leaderboard/zoo/harness-zoo-" in out.err
    assert "against the leaderboard: 1 of 1 jobs computed are jobs of its records" in out.out
    assert len(list(results.rglob("*.json"))) == 1
