"""One contract for every plugin: no silent shadowing (plugin vs built-in, plugin vs plugin),
plugin versions in records and keys, options validated for every task, and a detector whose
diagnostics JSON cannot store becomes an error record while the other jobs go on."""

import dataclasses
import importlib.metadata
import json
import sys
import types

import numpy as np
import pytest

import harness
import harness.plugins
from harness.cli import main
from harness.interfaces import ConfigError, Detector, Task
from harness.plugins import NameClashError, Registry
from harness.features.items import TextItems
from harness.run.runner import RunOptions, run

from .conftest import ToyTask


class FakeDistribution:
    def __init__(self, name, version):
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    def __init__(self, name, module, dist):
        self.name, self.value, self.group, self.dist, self._module = name, module.__name__, "harness", dist, module

    def load(self):
        return self._module


@dataclasses.dataclass
class Impostor(Detector):
    """Claims a built-in detector's name and scores nothing."""

    name = "activations_mahalanobis"
    accepts = (TextItems,)

    def fit(self, trusted):
        return self

    def score(self, items):
        return np.zeros(len(items))


class ImpostorTask(Task):
    """Claims the built-in ``mad`` task's name."""

    name = "mad"
    items = TextItems


def impostor_module():
    module = types.ModuleType("harness_impostor")

    @harness.hookimpl
    def register_tasks(register):
        register(ImpostorTask)

    @harness.hookimpl
    def register_detectors(register):
        register(Impostor)

    module.register_tasks, module.register_detectors = register_tasks, register_detectors
    return module


@pytest.fixture()
def with_impostor(monkeypatch):
    """The real entry points (the built-ins) plus a third-party plugin that takes their names."""
    real = importlib.metadata.entry_points

    def entry_points(group=None):
        return [*real(group=group),
                FakeEntryPoint("aaa_impostor", impostor_module(), FakeDistribution("harness-impostor", "6.6.6"))]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(harness.plugins, "_registry", None)
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    yield
    harness.plugins._registry = None


def test_a_plugin_never_displaces_a_builtin_silently(with_impostor, capsys, tmp_path):
    # alphabetically first, the impostor used to win; now using the name is a usage error
    assert main(["run", "--task", "mad", "--detector", "activations_lof", "--quick",
                 "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "task name 'mad' is registered by 2 plugins" in lines[0]
    assert "harness-impostor 6.6.6" in lines[0] and "detector-harness" in lines[0]
    assert "HARNESS_LOAD_PLUGINS=" in lines[0]
    # the clash is also reported, one line, before the run
    assert "warning: plugin" in err and "also registered" in err
    assert not list(tmp_path.rglob("*.json"))


def test_a_shadowed_detector_is_refused_not_run(with_impostor):
    registry = harness.plugins.get_registry()
    with pytest.raises(NameClashError) as err:
        registry.detector("activations_mahalanobis")
    assert "harness-impostor 6.6.6" in str(err.value)
    assert "activations_mahalanobis" not in registry.detectors_for(ToyTask)
    assert "activations_lof" in registry.detectors_for(ToyTask)  # untouched names still work


def test_list_marks_clashing_names_unusable(with_impostor, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "UNUSABLE" in out and "harness-impostor 6.6.6" in out


def test_plugin_vs_plugin_clash_is_an_error_when_used(tmp_path, toy_registry):
    toy_registry.add_plugin(_detector_plugin(_constant_detector("activations_mahalanobis")), name="other",
                            distribution="harness-other", version="1.0")
    with pytest.raises(NameClashError) as err:
        run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=tmp_path))
    assert "toy-plugin (in-process) and other (harness-other 1.0)" in str(err.value)


def _constant_detector(name):
    @dataclasses.dataclass
    class Constant(Detector):
        accepts = (TextItems,)

        def fit(self, trusted):
            return self

        def score(self, items):
            return np.zeros(len(items))

    Constant.name = name
    return Constant


def _detector_plugin(*classes):
    module = types.ModuleType("plugin")

    @harness.hookimpl
    def register_detectors(register):
        for cls in classes:
            register(cls)

    module.register_detectors = register_detectors
    return module


@dataclasses.dataclass
class Versioned(Detector):
    """Scores the first feature."""

    name = "versioned"
    accepts = (TextItems,)

    def fit(self, trusted):
        self.fitted_ = True
        return self

    def score(self, items):
        return items.activations([1])[1][:, 0]


def test_plugin_version_is_in_the_record_and_a_bump_reruns_the_job(tmp_path):
    def registry(version):
        reg = Registry()
        reg.add_plugin(_task_plugin(ToyTask), name="toy-plugin")
        reg.add_plugin(_detector_plugin(Versioned), name="versioned", distribution="harness-versioned", version=version)
        return reg

    options = RunOptions(results_dir=tmp_path, datasets=None)
    first = [r for r in run(registry("1.0"), "toy", ["versioned"], options) if r.status == "ok"]
    assert first and first[0].record["detector_plugin"] == {
        "plugin": "versioned", "distribution": "harness-versioned", "version": "1.0"}
    again = run(registry("1.0"), "toy", ["versioned"], options)
    assert {r.status for r in again if r.dataset == "shifted"} == {"cached"}
    bumped = run(registry("1.1"), "toy", ["versioned"], options)
    shifted = [r for r in bumped if r.dataset == "shifted"]
    assert shifted[0].status == "ok" and shifted[0].record["detector_plugin"]["version"] == "1.1"
    assert shifted[0].record["key"] != first[0].record["key"]


def _task_plugin(*classes):
    module = types.ModuleType("tasks_plugin")

    @harness.hookimpl
    def register_tasks(register):
        for cls in classes:
            register(cls)

    module.register_tasks = register_tasks
    return module


class OptionedToy(ToyTask):
    """The toy task with declared options."""

    name = "optioned_toy"
    options = {"shift": (float, 2.0, "planted shift"), "n": (int, 60, "test items")}
    seen: list = []

    def episodes(self, config):
        OptionedToy.seen.append(dict(config.options))
        return super().episodes(config)


@pytest.mark.parametrize("given, problem", [
    ({"foo": 1}, "task 'optioned_toy' has no option 'foo'; valid: shift, n"),
    ({"shift": "abc"}, "task 'optioned_toy' option 'shift' must be float, got 'abc'"),
    ({"n": 1.5}, "task 'optioned_toy' option 'n' must be int, got 1.5"),
])
def test_every_task_gets_its_options_validated(tmp_path, given, problem):
    registry = Registry()
    registry.add_plugin(_task_plugin(OptionedToy, ToyTask), name="toys")
    registry.add_plugin(_detector_plugin(Versioned), name="versioned")
    with pytest.raises(ConfigError) as err:
        run(registry, "optioned_toy", ["versioned"], RunOptions(results_dir=tmp_path, task_options=given))
    assert str(err.value) == problem
    assert not list(tmp_path.rglob("*.json"))


def test_options_reach_the_task_coerced_and_a_task_without_options_refuses_them(tmp_path):
    registry = Registry()
    registry.add_plugin(_task_plugin(OptionedToy, ToyTask), name="toys")
    registry.add_plugin(_detector_plugin(Versioned), name="versioned")
    OptionedToy.seen.clear()
    run(registry, "optioned_toy", ["versioned"], RunOptions(results_dir=tmp_path, task_options={"shift": 3}))
    assert OptionedToy.seen == [{"shift": 3.0}] and isinstance(OptionedToy.seen[0]["shift"], float)
    with pytest.raises(ConfigError, match="task 'toy' takes no --option; got 'shift'"):
        run(registry, "toy", ["versioned"], RunOptions(results_dir=tmp_path, task_options={"shift": 3}))


@dataclasses.dataclass
class SetDiagnostics(Versioned):
    name = "set_diagnostics"

    def diagnostics(self):
        return {"fine": 1.0, "layers": {"chosen": {1, 2}}}


def test_case7_non_json_diagnostics_are_left_out_and_the_scores_kept(tmp_path):
    """Issue 22, case 7: a diagnostics() JSON cannot hold used to turn a scored job into an error record."""
    registry = Registry()
    registry.add_plugin(_task_plugin(ToyTask), name="toys")
    registry.add_plugin(_detector_plugin(Versioned, SetDiagnostics), name="detectors")
    results = run(registry, "toy", ["set_diagnostics", "versioned"], RunOptions(results_dir=tmp_path))
    by_detector = {r.detector: r for r in results if r.dataset == "shifted"}
    kept = by_detector["set_diagnostics"]
    assert kept.status == "ok" and by_detector["versioned"].status == "ok"
    stored = json.loads(kept.path.read_text())
    assert stored["scores"] == by_detector["versioned"].record["scores"]
    assert stored["metrics"]["auroc"] == by_detector["versioned"].record["metrics"]["auroc"]
    assert stored["diagnostics"] == {}
    assert stored["warnings"] == ["diagnostics() returned a builtins.set at 'layers'.chosen; records hold JSON only, "
                                  "so no diagnostics were stored"]


class Rankings:
    """An item type no built-in detector accepts."""


def test_case8_a_task_of_a_new_kind_runs_every_detector_that_accepts_its_items(tmp_path):
    """Issue 22, case 8: detectors declared task kinds, so a task of a new kind that yields the
    same items as MAD could not use them. Now the item type decides."""
    class Ranking(ToyTask):
        name = "ranking"
        kind = "ranking"  # a new kind; its items are texts of one model, like MAD's

    class RankingOnly(ToyTask):
        name = "ranking_only"
        items = Rankings

    @dataclasses.dataclass
    class RankDetector(Versioned):
        name = "rank_detector"
        accepts = (Rankings,)

    registry = Registry().load_entry_points(only=["builtin_detectors"])
    info = registry.add_plugin(_task_plugin(Ranking, RankingOnly), name="ranking")
    registry.add_plugin(_detector_plugin(RankDetector, Versioned), name="detectors")
    assert not info.errors
    assert "activations_mahalanobis" in registry.detectors_for(Ranking)
    assert registry.detectors_for(RankingOnly) == ["rank_detector"]
    results = run(registry, "ranking", ["activations_mahalanobis", "versioned"], RunOptions(results_dir=tmp_path))
    assert {(r.dataset, r.detector, r.status) for r in results} >= {("shifted", "activations_mahalanobis", "ok"),
                                                                    ("shifted", "versioned", "ok")}
    assert results[0].record["task_kind"] == "ranking"
    with pytest.raises(ConfigError, match="'versioned' scores TextItems, not the Rankings of task 'ranking_only'"):
        run(registry, "ranking_only", ["versioned"], RunOptions(results_dir=tmp_path))


@pytest.mark.parametrize("options, problem", [
    ({"shift": 2.0}, "option 'shift' is not declared as (type, default, meaning)"),
    ({"shift": (float, "two", "planted shift")}, "option 'shift' declares type float but its default is 'two'"),
    ({"Shift": (float, 2.0, "planted shift")}, "option name 'Shift' is not lower_snake_case"),
])
def test_case7_option_declarations_are_checked_when_the_plugin_registers(options, problem):
    """Issue 22, case 7: a malformed options table used to register and fail only when used."""
    bad = type("BadOptions", (ToyTask,), {"name": "bad_options", "options": options})
    registry = Registry()
    info = registry.add_plugin(_task_plugin(bad), name="bad")
    assert "bad_options" not in registry.tasks
    assert len(info.errors) == 1 and problem in info.errors[0]


class SetInfoToy(ToyTask):
    name = "set_info_toy"

    def episodes(self, config):
        episodes = super().episodes(config)
        episodes[0].info["layers"] = {1, 2}
        return episodes


def test_an_episode_that_records_cannot_store_is_refused_before_any_job(tmp_path):
    registry = Registry()
    registry.add_plugin(_task_plugin(SetInfoToy), name="toys")
    registry.add_plugin(_detector_plugin(Versioned), name="detectors")
    with pytest.raises(ConfigError, match="task 'set_info_toy' episode 'shifted': Episode.info holds a builtins.set"):
        run(registry, "set_info_toy", ["versioned"], RunOptions(results_dir=tmp_path))
    assert not list(tmp_path.rglob("*.json"))


def test_the_default_section_needs_no_interval(tmp_path):
    from harness import leaderboard

    class PlainMetrics(ToyTask):
        name = "plain_metrics"

        def metrics(self, episode, scores, seed):
            from harness.scoring import auroc

            return {"auroc": auroc(episode.labels, scores.values)}

    registry = Registry()
    registry.add_plugin(_task_plugin(PlainMetrics), name="toys")
    registry.add_plugin(_detector_plugin(Versioned), name="detectors")
    run(registry, "plain_metrics", ["versioned"], RunOptions(results_dir=tmp_path / "records"))
    readme = leaderboard.render(tmp_path / "records", tmp_path, registry=registry)["README.md"]
    assert "| versioned" in readme and "[nan, nan]" in readme
    without_plugin = leaderboard.render(tmp_path / "records", tmp_path, registry=Registry())["README.md"]
    assert "Task `plain_metrics`'s plugin is not installed here" in without_plugin


def test_a_task_whose_report_raises_loses_only_its_own_section(tmp_path, toy_registry, monkeypatch):
    from harness import leaderboard

    class BrokenReport(ToyTask):
        name = "broken_report"
        report = "tests_broken_report"

    module = types.ModuleType("tests_broken_report")
    module.section = lambda section: {}["steering_norms"]
    monkeypatch.setitem(sys.modules, "tests_broken_report", module)

    toy_registry.add_plugin(_task_plugin(BrokenReport), name="broken")
    for task in ("toy", "broken_report"):
        run(toy_registry, task, ["activations_mahalanobis"], RunOptions(results_dir=tmp_path / "records"))
    readme = leaderboard.render(tmp_path / "records", tmp_path, registry=toy_registry)["README.md"]
    assert "This section failed to render: KeyError: 'steering_norms'" in readme
    assert "## task `toy`" in readme and "AUROC (mean over seeds)" in readme
