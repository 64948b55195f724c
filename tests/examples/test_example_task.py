"""The example task plugin (examples/harness-example-task) keeps working with this harness: its
entry point names its module, the module registers in-process, the runner trains its quick models
and scores them with a built-in detector, a worker's rebuild of one episode matches the driver's,
and the leaderboard renders the task's own section."""

import dataclasses
import importlib
import sys
import tomllib
from pathlib import Path

import pytest

from harness import leaderboard
from harness.api import ConfigError, RunContext
from harness.plugins import Registry
from harness.run.runner import RunOptions, run

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "harness-example-task"
MODULES = ("harness_example_task", "harness_example_task.task")


@pytest.fixture()
def plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE / "src"))
    for name in MODULES:
        sys.modules.pop(name, None)
    yield importlib.import_module("harness_example_task")
    for name in MODULES:
        sys.modules.pop(name, None)


def registry_with(plugin):
    registry = Registry().load_entry_points(only=["builtin_detectors"])
    info = registry.add_plugin(plugin, name="example_task", distribution="harness-example-task",
                               version=plugin.__version__)
    assert not info.errors, info.errors
    return registry


def test_entry_point_names_the_module():
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["harness"] == {"example_task": "harness_example_task"}
    assert (PACKAGE / "src" / "harness_example_task" / "__init__.py").exists()
    assert (PACKAGE / "tests").is_dir() and (PACKAGE / "README.md").exists()


def test_registers_a_task_of_its_own_kind_that_the_builtin_detectors_score(plugin):
    registry = registry_with(plugin)
    assert registry.plugins["example_task"].tasks == ["keyword"]
    task = registry.task("keyword")
    assert task.kind == "" and set(task.options) == {"trigger", "min_accuracy", "n_test"}
    assert "activations_mahalanobis" in registry.detectors_for(task)


def test_it_is_one_small_package_that_imports_only_the_plugin_api():
    """Issue 22's targets: a task of a new kind in one package of <= 150 lines, <= 8 names of harness.api."""
    import ast

    sources = sorted((PACKAGE / "src" / "harness_example_task").glob("*.py"))
    assert sum(len(path.read_text().splitlines()) for path in sources) <= 150
    names = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "harness":
                assert node.module == "harness.api", f"{path.name} imports {node.module}"
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                assert not any(alias.name.split(".")[0] == "harness" for alias in node.names)
    assert len(names) <= 8, sorted(names)


def test_a_bad_option_is_a_config_error_before_training(plugin, tmp_path):
    with pytest.raises(ConfigError, match="option 'trigger' must be lower-case letters"):
        run(registry_with(plugin), "keyword", ["activations_mahalanobis"],
            RunOptions(quick=True, results_dir=tmp_path, task_options={"trigger": "Bad!"}))
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.slow
def test_the_runner_trains_scores_and_renders_it(plugin, tmp_path):
    registry = registry_with(plugin)
    results = run(registry, "keyword", ["activations_mahalanobis"], RunOptions(quick=True, results_dir=tmp_path))
    assert [(r.dataset, r.status) for r in results] == [("animals", "ok"), ("foods", "ok")]
    for result in results:
        record = result.record
        assert record["valid"], record["validity"]
        assert record["metrics"]["auroc"] > 0.9  # the trigger is plain in the activations
        assert record["source"] == "generated" and record["model_fingerprints"] == {"model": record["model_fingerprint"]}
        assert record["task_plugin"]["version"] == plugin.__version__
    # a worker rebuilds one episode alone: it must be the one the driver built with the other
    [foods] = registry.task("keyword")().episodes(dataclasses.replace(RunContext(quick=True), datasets=["foods"]))
    assert foods.fingerprint == results[1].record["episode_fingerprint"]
    readme = leaderboard.render(tmp_path, tmp_path / "board", include_quick=True, registry=registry)["README.md"]
    assert "## task `keyword`" in readme and "AUROC (mean over seeds)" in readme
