import dataclasses
import types

import numpy as np
import pytest

import harness
from harness.interfaces import Detector, Task
from harness.features.items import TextItems
from harness.plugins import NameClashError, Registry, UnknownNameError

from .conftest import ToyTask


@dataclasses.dataclass
class ConstantDetector(Detector):
    """Scores every item 0."""

    name = "constant"
    accepts = (TextItems,)
    value: float = 0.0

    def fit(self, trusted):
        self.fitted_ = True
        return self

    def score(self, items):
        return np.full(len(items), self.value)


def make_plugin(*detectors, name="plugin"):
    module = types.ModuleType(name)

    @harness.hookimpl
    def register_detectors(register):
        for detector in detectors:
            register(detector)

    module.register_detectors = register_detectors
    return module


def test_in_process_plugin_registers_detector():
    registry = Registry()
    info = registry.add_plugin(make_plugin(ConstantDetector), name="mine")
    assert registry.detector("constant") is ConstantDetector
    assert info.detectors == ["constant"] and not info.errors
    assert registry.origin("detector", "constant") == "mine"


def test_name_clash_makes_the_name_unusable_naming_both_plugins():
    registry = Registry()
    registry.add_plugin(make_plugin(ConstantDetector), name="first", distribution="harness-first", version="1.0")
    info = registry.add_plugin(make_plugin(ConstantDetector), name="second", distribution="harness-second",
                               version="2.0")
    assert "also registered by plugin first (harness-first 1.0)" in info.errors[0]
    with pytest.raises(NameClashError) as err:  # neither plugin wins silently
        registry.detector("constant")
    message = str(err.value)
    assert "first (harness-first 1.0) and second (harness-second 2.0)" in message
    assert "uninstall one" in message and "HARNESS_LOAD_PLUGINS=first" in message
    assert "constant" not in registry.detectors_for(ToyTask)


def test_invalid_classes_are_reported_not_registered():
    class NotADataclass(Detector):
        name = "plain"
        accepts = (TextItems,)

    info = Registry().add_plugin(make_plugin(NotADataclass, int), name="bad")
    assert len(info.errors) == 2
    assert "not a dataclass" in info.errors[0] and "not a subclass" in info.errors[1]


def test_raising_hook_is_isolated():
    module = types.ModuleType("raiser")

    @harness.hookimpl
    def register_detectors(register):
        raise RuntimeError("boom")

    module.register_detectors = register_detectors
    registry = Registry()
    registry.add_plugin(module, name="raiser")
    registry.add_plugin(make_plugin(ConstantDetector), name="good")
    assert "boom" in registry.errors["raiser"][0]
    assert "constant" in registry.detectors


def test_misspelled_hook_fails_loudly_but_is_isolated():
    module = types.ModuleType("typo")

    @harness.hookimpl
    def register_detector(register):  # missing "s"
        pass

    module.register_detector = register_detector
    registry = Registry()
    registry.add_plugin(module, name="typo")
    assert "registration failed" in registry.errors["typo"][0]


def test_unknown_name_lists_valid_names():
    registry = Registry()
    registry.add_plugin(make_plugin(ConstantDetector))
    with pytest.raises(UnknownNameError) as err:
        registry.detector("nope")
    assert "constant" in str(err.value)


def test_entry_points_load_builtins(monkeypatch):
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    registry = Registry().load_entry_points()
    assert {"activations_mahalanobis", "activations_lof"} <= set(registry.detectors)
    assert "mad" in registry.tasks
    assert registry.plugins["builtin_detectors"].distribution == "detector-harness"


def test_load_only_named_entry_points():
    registry = Registry().load_entry_points(only=["builtin_detectors"])
    assert "mad" not in registry.tasks and "activations_lof" in registry.detectors
    assert not Registry().load_entry_points(only=[]).plugins


def test_every_hook_is_documented():
    from harness import hookspecs

    for name in ("register_tasks", "register_detectors"):
        assert len(getattr(hookspecs, name).__doc__) > 200


def test_task_must_subclass_task():
    @dataclasses.dataclass
    class NotATask:
        name = "x"

    module = types.ModuleType("t")

    @harness.hookimpl
    def register_tasks(register):
        register(NotATask)

    module.register_tasks = register_tasks
    info = Registry().add_plugin(module, name="t")
    assert "not a subclass of harness.api.Task" in info.errors[0]
    assert issubclass(Task, object)
