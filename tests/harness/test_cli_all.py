"""``harness run --all``: every registered task x every detector that supports it, one summary."""

import pytest

import harness.plugins
from harness.cli import main
from harness.interfaces import ConfigError

from .conftest import ToyTask, registry as toy_registry


class OtherToyTask(ToyTask):
    """The toy task under another name (a second task for --all)."""

    name = "toy_b"


class BrokenTask(ToyTask):
    """A task whose episodes cannot be built."""

    name = "toy_broken"

    def episodes(self, config):
        raise ConfigError("toy_broken needs data it does not have")


def use_registry(monkeypatch, *extra_tasks):
    registry = toy_registry()
    for cls in extra_tasks:
        registry.tasks[cls.name] = cls
    monkeypatch.setattr(harness.plugins, "get_registry", lambda reload=False: registry)
    return registry


def test_all_runs_every_task_with_its_detectors_in_one_table(monkeypatch, tmp_path, capsys):
    use_registry(monkeypatch, OtherToyTask)
    args = ["run", "--all", "--quick", "--allow-invalid", "--results-dir", str(tmp_path)]
    assert main(args + ["--detector", "activations_mahalanobis"]) == 0
    out = capsys.readouterr().out
    assert out.count("| task ") == 1  # one summary table
    assert "| toy    | shifted" in out and "| toy_b  | broken" in out
    assert "4 jobs over 2 tasks" in out and "4 ok" in out
    assert len(list(tmp_path.rglob("*.json"))) == 4


def test_all_defaults_to_every_detector_and_exits_1_on_errors(monkeypatch, tmp_path, capsys):
    use_registry(monkeypatch, OtherToyTask)
    assert main(["run", "--all", "--quick", "--allow-invalid", "--results-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    # 2 tasks x 2 episodes x 4 detectors (activations_mahalanobis, exploding, nan_scores, wrong_shape)
    assert "16 jobs over 2 tasks" in captured.out and "4 ok" in captured.out and "12 error" in captured.out
    assert "FAILED shifted (exploding): RuntimeError: kaboom" in captured.err


def test_a_task_that_cannot_be_built_is_reported_and_the_others_run(monkeypatch, tmp_path, capsys):
    use_registry(monkeypatch, BrokenTask)
    args = ["run", "--all", "--detector", "activations_mahalanobis", "--quick", "--results-dir", str(tmp_path)]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "FAILED task toy_broken: ConfigError: toy_broken needs data" in captured.err
    assert "| toy_broken | -" in captured.out and "| toy        | shifted" in captured.out
    assert "tasks that failed to run: toy_broken" in captured.out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--all", "--task", "toy"], "drop --task"),
        (["--all", "--dataset", "shifted"], "cannot be combined with --all"),
        (["--all", "--detector", "nope"], "unknown detector 'nope'"),
        (["--detector", "exploding"], "run needs --task"),
        (["--task", "toy"], "run needs --detector"),
    ],
)
def test_bad_combinations_are_usage_errors(monkeypatch, capsys, args, message):
    use_registry(monkeypatch)
    assert main(["run", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_builtin_tasks_end_to_end_quick(tmp_path, capsys, monkeypatch):
    """The real thing on the built-in plugins: mad and poser, quick models, one cheap detector each
    (mad on its addition model only, which other tests train too: .ci/run runs the full --all)."""
    monkeypatch.setattr("harness.tasks.mad.task.QUICK_DATASETS", ("addition",))
    args = ["run", "--all", "--quick", "--allow-invalid", "--jobs", "1", "--results-dir", str(tmp_path),
            "--detector", "activations_mahalanobis", "--detector", "confidence"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| mad    | addition" in out and "| poser  | generated" in out
    assert "2 jobs over 2 tasks" in out and "2 ok" in out


class OptionTask(ToyTask):
    """A toy task that declares one option and rejects any other."""

    name = "toy_opt"
    options = {"depth": (int, 1, "a toy option")}

    def episodes(self, config):
        assert set(config.options) <= {"depth"}, config.options
        return super().episodes(config)


class OtherOptionTask(OptionTask):
    name = "toy_opt_b"
    options = {"width": (int, 1, "another toy option")}

    def episodes(self, config):
        assert set(config.options) <= {"width"}, config.options
        return ToyTask.episodes(self, config)


def test_all_gives_each_task_only_the_options_it_declares(monkeypatch, tmp_path, capsys):
    registry = use_registry(monkeypatch, OptionTask, OtherOptionTask)
    del registry.tasks["toy"]
    args = ["run", "--all", "--detector", "activations_mahalanobis", "--results-dir", str(tmp_path)]
    assert main(args + ["--option", "depth=2", "--option", "width=3"]) == 0
    assert "4 jobs over 2 tasks" in capsys.readouterr().out
    assert main(args + ["--option", "dpeth=2"]) == 2
    assert "--option 'dpeth' is not an option of any task; valid: depth, width" in capsys.readouterr().err
