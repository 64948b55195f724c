"""The keyword task end to end: registered in-process, its models trained in quick mode (seconds)
in a private cache, scored by a built-in detector through the real runner, rendered by its own
leaderboard section; and, when the package is installed, through the ``harness`` command."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness_example_task
from harness import leaderboard
from harness.api import ConfigError, RunContext
from harness.plugins import Registry
from harness.records import iter_records, record_content
from harness.run.runner import RunOptions, run
from harness_example_task.task import KeywordTask, sentences

DETECTOR = "activations_mahalanobis"


def make_registry(version: str = harness_example_task.__version__) -> Registry:
    """The installed plugins (the built-in detectors among them) plus this one, in-process. When
    this package is installed too, its entry point is left out: one name registered by two
    plugins is unusable."""
    others = [ep.name for ep in importlib.metadata.entry_points(group="harness") if ep.name != "example_task"]
    registry = Registry().load_entry_points(only=others)
    info = registry.add_plugin(harness_example_task, name="example_task", distribution="harness-example-task",
                               version=version)
    assert not info.errors, info.errors
    return registry


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache for the module: the models are trained once, never in the user's cache."""
    path = tmp_path_factory.mktemp("harness-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def quick_run(cache, tmp_path_factory):
    """Both topics, quick models, one built-in detector."""
    results_dir = tmp_path_factory.mktemp("records")
    results = run(make_registry(), "keyword", [DETECTOR], RunOptions(quick=True, results_dir=results_dir))
    return results, results_dir


def test_the_plugin_registers_its_task():
    registry = make_registry()
    assert registry.plugins["example_task"].tasks == ["keyword"]
    assert registry.task("keyword") is KeywordTask
    assert DETECTOR in registry.detectors_for(KeywordTask)


def test_sentences_depend_on_the_topic_name_and_seed_only():
    first = sentences("animals", 0, "trusted", 30)
    assert first == sentences("animals", 0, "trusted", 30)
    assert first != sentences("foods", 0, "trusted", 30)
    assert first != sentences("animals", 1, "trusted", 30)
    assert len({text for text, _, _ in first}) == 30 and sum(mentions for _, mentions, _ in first) == 15


@pytest.mark.parametrize("options, message", [
    ({"trigger": "Bad!"}, "option 'trigger' must be lower-case letters"),
    ({"trigger": "cat"}, "not a word the sentences use"),
    ({"min_accuracy": 2}, r"option 'min_accuracy' must be in \[0, 1\]"),
    ({"n_test": "many"}, "option 'n_test' must be int"),
    ({"n_tset": 50}, "has no option 'n_tset'; valid: trigger, min_accuracy, n_test"),
])
def test_bad_options_fail_before_any_training(cache, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        run(make_registry(), "keyword", [DETECTOR], RunOptions(quick=True, results_dir=tmp_path, task_options=options))
    assert not list(tmp_path.rglob("*.json")) and not (cache / "models").exists()


def test_the_harness_trains_its_models_once(cache, quick_run):
    recipes = KeywordTask().models(RunContext(quick=True))
    assert [r.label for r in recipes] == ["animals", "foods"]
    trained = sorted((cache / "models").iterdir())  # the run trained one model per topic
    handles = [r.load() for r in recipes]  # served from the cache: nothing is trained again
    assert len(trained) == 2 and sorted((cache / "models").iterdir()) == trained
    assert sorted(h.path.resolve() for h in handles) == sorted(p.resolve() for p in trained)


def test_unknown_dataset_lists_the_valid_ones(cache, tmp_path):
    with pytest.raises(ConfigError, match="unknown keyword dataset 'birds'; valid: animals, foods"):
        run(make_registry(), "keyword", [DETECTOR], RunOptions(quick=True, results_dir=tmp_path, datasets=["birds"]))


def test_end_to_end_records(quick_run):
    results, _ = quick_run
    assert [(r.dataset, r.status) for r in results] == [("animals", "ok"), ("foods", "ok")]
    for result in results:
        record = result.record
        assert record["valid"] and record["validity"]["backdoor_rate"] >= 0.9
        assert record["validity"]["clean_accuracy"] >= 0.9
        # the trigger word is visible to the model's internals: a Gaussian on activations finds it
        assert record["metrics"]["auroc"] > 0.9 and record["metrics"]["auroc_disagree"] > 0.9
        assert record["source"] == "generated" and record["task_kind"] == "keyword"
        assert record["model_fingerprints"] == {"model": record["model_fingerprint"]}
        assert record["task_plugin"] == {"plugin": "example_task", "distribution": "harness-example-task",
                                         "version": harness_example_task.__version__}
    assert results[0].record["model_fingerprint"] != results[1].record["model_fingerprint"]


def test_an_episode_built_alone_is_the_one_built_with_the_others(quick_run):
    """What a worker process relies on (it rebuilds one episode with datasets=[name])."""
    results, _ = quick_run
    together = {r.dataset: r.record["episode_fingerprint"] for r in results}
    config = RunContext(quick=True)
    for name in ("foods", "animals"):
        [alone] = KeywordTask().episodes(dataclasses.replace(config, datasets=[name]))
        assert alone.name == name and alone.fingerprint == together[name]


def test_a_plugin_version_bump_reruns_the_jobs(quick_run):
    results, results_dir = quick_run
    again = run(make_registry(), "keyword", [DETECTOR], RunOptions(quick=True, results_dir=results_dir))
    assert [r.status for r in again] == ["cached", "cached"]
    bumped = run(make_registry("0.2.0"), "keyword", [DETECTOR], RunOptions(quick=True, results_dir=results_dir))
    assert [r.status for r in bumped] == ["ok", "ok"]
    assert {r.record["key"] for r in bumped}.isdisjoint(r.record["key"] for r in results)
    # the same models and data: the same numbers
    assert [r.record["scores"] for r in bumped] == [r.record["scores"] for r in results]


def test_its_leaderboard_section_keeps_another_trigger_apart(quick_run, tmp_path):
    _, results_dir = quick_run
    registry = make_registry()
    [other] = run(registry, "keyword", [DETECTOR],
                  RunOptions(quick=True, results_dir=results_dir, datasets=["animals"], task_options={"trigger": "zq"}))
    assert other.status == "ok" and other.record["source"] == "generated, trigger 'zq'"
    leaderboard.build(results_dir, tmp_path, include_quick=True, registry=registry)
    readme = (tmp_path / "README.md").read_text()
    assert readme.count("## task `keyword`") == 2 and "## task `keyword`, generated, trigger 'zq'" in readme
    assert "AUROC (mean over seeds)" in readme


# --- the installed package, through the command line ------------------------------------------
installed = pytest.mark.skipif(
    not any(ep.name == "example_task" for ep in importlib.metadata.entry_points(group="harness")),
    reason="harness-example-task is not installed (pip install -e .)")


def harness_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_LOAD_PLUGINS"}  # every installed plugin
    env["HARNESS_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@installed
def test_installed_plugin_is_listed(cache):
    out = harness_cli("plugins", cache=cache).stdout
    assert f"example_task (harness-example-task {harness_example_task.__version__}; module harness_example_task)" in out
    assert "tasks:     keyword" in out


@installed
def test_installed_cli_runs_it_locally_and_in_worker_processes(quick_run, cache, tmp_path):
    records = {}
    for executor in ("local", "process"):
        extra = ["--jobs", "2"] if executor == "process" else []
        done = harness_cli("run", "--task", "keyword", "--detector", DETECTOR, "--quick",
                           "--results-dir", str(tmp_path / executor), *extra, cache=cache)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "AUROC" in done.stdout and "2 jobs" in done.stdout
        records[executor] = {r["dataset"]: record_content(r) for r in iter_records(tmp_path / executor)}
    # workers rebuilt each episode alone, from the cache, and got the driver's numbers
    assert records["local"] == records["process"]
    assert json.dumps(records["local"]["foods"]["scores"]) == json.dumps(quick_run[0][1].record["scores"])
