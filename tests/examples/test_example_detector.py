"""The example plugin package (examples/harness-example-detector) keeps working with this harness:
its entry point names its module, the module registers in-process, and the runner scores it."""

import importlib
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.interfaces import Episode, Task, RunContext
from harness.features.items import TextItems
from harness.plugins import Registry
from harness.run.runner import RunOptions, run

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "harness-example-detector"


@pytest.fixture()
def plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE / "src"))
    sys.modules.pop("harness_example_detector", None)
    yield importlib.import_module("harness_example_detector")
    sys.modules.pop("harness_example_detector", None)


def test_entry_point_names_the_module():
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["harness"] == {"example_detector": "harness_example_detector"}
    assert (PACKAGE / "src" / "harness_example_detector" / "__init__.py").exists()
    assert (PACKAGE / "tests").is_dir() and (PACKAGE / "README.md").exists()


def test_registers_and_scores_hand_computed_z_scores(plugin):
    registry = Registry()
    info = registry.add_plugin(plugin, name="example_detector")
    assert info.detectors == ["logodds_zscore"] and not info.errors
    cls = registry.detector("logodds_zscore")
    trusted = TextItems.from_arrays(np.zeros((2, 2, 3)), np.array([1.0, 3.0]))  # mean 2, std 1
    test = TextItems.from_arrays(np.zeros((2, 3, 3)), np.array([2.0, 4.0, -1.0]))
    np.testing.assert_allclose(cls().fit(trusted).score(test), [0.0, 2.0, 3.0])


class LogoddsShiftTask(Task):
    """One synthetic episode whose anomalous items flip the model's answer (log-odds -2 vs +2)."""

    name = "logodds_shift"
    items = TextItems

    def episodes(self, config: RunContext):
        rng = np.random.default_rng(config.seed)
        labels = np.r_[np.zeros(40), np.ones(40)].astype(int)
        trusted = TextItems.from_arrays(np.zeros((2, 100, 3)), rng.normal(2.0, 1.0, 100))
        test = TextItems.from_arrays(np.zeros((2, 80, 3)), np.where(labels == 1, -2.0, 2.0) + rng.normal(0, 1, 80))
        return [Episode("shift", trusted, test, labels, {}, {"valid": True}, f"shift-{config.seed}")]


def test_the_runner_scores_it(plugin, tmp_path):
    class Tasks:
        @harness.hookimpl
        def register_tasks(self, register):
            register(LogoddsShiftTask)

    registry = Registry()
    registry.add_plugin(Tasks(), name="tasks")
    registry.add_plugin(plugin, name="example_detector")
    [result] = run(registry, "logodds_shift", ["logodds_zscore"], RunOptions(results_dir=tmp_path))
    assert result.status == "ok" and result.record["detector_plugin"]["plugin"] == "example_detector"
    assert result.record["metrics"]["auroc"] > 0.95
