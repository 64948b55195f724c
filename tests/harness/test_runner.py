import dataclasses
import json

import pytest

from harness.interfaces import ConfigError
from harness.plugins import UnknownNameError
from harness.run.runner import RunOptions, run


def test_run_writes_one_record_per_job_and_reuses_them(tmp_path, toy_registry):
    options = RunOptions(results_dir=tmp_path)
    results = run(toy_registry, "toy", ["activations_mahalanobis"], options)
    assert [(r.dataset, r.status) for r in results] == [("shifted", "ok"), ("broken", "invalid")]
    record = json.loads(results[0].path.read_text())
    assert record["metrics"]["auroc"] > 0.9
    assert len(record["scores"]) == len(record["labels"]) == 60
    assert record["params"] == {"layers": None, "covariance": "ledoit_wolf", "rcond": 0.001}
    assert record["versions"]["torch"] and record["config"]["task"]["seed"] == 0
    assert {"fit_s", "score_s"} <= set(record["timings"])
    invalid = json.loads(results[1].path.read_text())
    assert invalid["status"] == "invalid" and "scores" not in invalid and invalid["message"] == "toy says no"
    again = run(toy_registry, "toy", ["activations_mahalanobis"], options)
    assert again[0].status == "cached" and again[0].record["metrics"] == record["metrics"]
    forced = run(toy_registry, "toy", ["activations_mahalanobis"], dataclasses.replace(options, force=True))
    assert forced[0].status == "ok"


def test_key_changes_with_hyperparameters_and_seed(tmp_path, toy_registry):
    base = run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=tmp_path))[0]
    other = run(toy_registry, "toy", ["activations_mahalanobis"],
                RunOptions(results_dir=tmp_path, detector_params={"activations_mahalanobis": {"covariance": "pinv"}}))[0]
    seeded = run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=tmp_path, seed=1))[0]
    assert len({base.path, other.path, seeded.path}) == 3 and other.status == seeded.status == "ok"


def test_failing_detectors_get_error_records_and_the_run_goes_on(tmp_path, toy_registry):
    results = run(toy_registry, "toy", ["exploding", "wrong_shape", "nan_scores", "activations_mahalanobis"],
                  RunOptions(results_dir=tmp_path))
    by_detector = {r.detector: r for r in results if r.dataset == "shifted"}
    assert "kaboom" in by_detector["exploding"].message
    assert "shape (59,)" in by_detector["wrong_shape"].message
    assert "non-finite" in by_detector["nan_scores"].message
    assert by_detector["activations_mahalanobis"].status == "ok"
    assert json.loads(by_detector["exploding"].path.read_text())["status"] == "error"
    # an error record is retried on the next run, not reused
    assert run(toy_registry, "toy", ["exploding"], RunOptions(results_dir=tmp_path))[0].status == "error"


def test_allow_invalid_scores_invalid_episodes_but_marks_them(tmp_path, toy_registry):
    results = run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=tmp_path, allow_invalid=True))
    broken = [r for r in results if r.dataset == "broken"][0]
    assert broken.status == "ok" and broken.record["valid"] is False


def test_unknown_names_and_bad_params_are_usage_errors(tmp_path, toy_registry):
    with pytest.raises(UnknownNameError, match="activations_mahalanobis"):
        run(toy_registry, "toy", ["nope"], RunOptions(results_dir=tmp_path))
    with pytest.raises(UnknownNameError, match="valid tasks: toy"):
        run(toy_registry, "nope", ["exploding"], RunOptions(results_dir=tmp_path))
    with pytest.raises(ConfigError, match="no hyperparameter 'k'.*covariance"):
        run(toy_registry, "toy", ["activations_mahalanobis"],
            RunOptions(results_dir=tmp_path, detector_params={"activations_mahalanobis": {"k": 1}}))
    assert not list(tmp_path.rglob("*.json"))  # no partial records


def test_all_expands_to_every_detector_of_the_task_kind(tmp_path, toy_registry):
    results = run(toy_registry, "toy", ["all"], RunOptions(results_dir=tmp_path))
    assert {r.detector for r in results} == {"activations_mahalanobis", "exploding", "wrong_shape", "nan_scores"}


def test_every_seed_is_checked_and_its_models_built_before_the_first_episode(tmp_path, toy_registry, monkeypatch):
    from types import SimpleNamespace

    import harness.run.runner

    ToyTask = toy_registry.task("toy")
    calls = []
    monkeypatch.setattr(ToyTask, "check", lambda self, config: calls.append(("check", config.seed)))
    monkeypatch.setattr(ToyTask, "models", lambda self, config: [SimpleNamespace(label=f"seed {config.seed}", n_layers=1)])
    monkeypatch.setattr(harness.run.runner, "build_models",
                        lambda recipes, jobs, **_: calls.append(("build", [r.label for r in recipes])))
    real_episodes = ToyTask.episodes
    monkeypatch.setattr(ToyTask, "episodes",
                        lambda self, config: calls.append(("episodes", config.seed)) or real_episodes(self, config))
    run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=tmp_path, seeds=[0, 1]))
    assert calls == [("check", 0), ("check", 1), ("build", ["seed 0", "seed 1"]), ("episodes", 0), ("episodes", 1)]
