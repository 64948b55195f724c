"""A plugin that fails to import is shown with its error by ``harness plugins``; the others load."""

import dataclasses
import importlib.metadata
import types

import numpy as np

import harness
import harness.plugins
from harness.cli import main
from harness.interfaces import Detector
from harness.features.items import TextItems


@dataclasses.dataclass
class Zeros(Detector):
    """Scores every item 0. Higher = more anomalous (never)."""

    name = "zeros"
    accepts = (TextItems,)

    def fit(self, trusted):
        return self

    def score(self, items):
        return np.zeros(len(items))


class FakeDistribution:
    def __init__(self, name, version):
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    """What importlib.metadata.entry_points returns, with a load() we control."""

    def __init__(self, name, value, load, dist):
        self.name, self.value, self.group, self.dist, self._load = name, value, "harness", dist, load

    def load(self):
        return self._load()


def good_module():
    module = types.ModuleType("harness_zeros")

    @harness.hookimpl
    def register_detectors(register):
        register(Zeros)

    module.register_detectors = register_detectors
    return module


def broken_import():
    raise ModuleNotFoundError("No module named 'numpyy'")


def fake_entry_points(group=None):
    assert group == "harness"
    return [
        FakeEntryPoint("broken", "harness_broken", broken_import, FakeDistribution("harness-broken", "0.3.1")),
        FakeEntryPoint("zeros", "harness_zeros", good_module, FakeDistribution("harness-zeros", "1.2.3")),
    ]


def test_plugins_lists_versions_registrations_and_import_errors(monkeypatch, capsys):
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(harness.plugins, "_registry", None)  # reload from the (fake) entry points
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "broken (harness-broken 0.3.1; module harness_broken)" in out
    assert "ERROR: import failed: ModuleNotFoundError: No module named 'numpyy'" in out
    assert "zeros (harness-zeros 1.2.3; module harness_zeros)" in out
    assert "detectors: zeros" in out
    # the broken plugin does not take the host down: list works and names the error on stderr
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert "zeros" in captured.out and "plugin zeros" not in captured.err
    assert "ERROR plugin broken (harness-broken 0.3.1): import failed" in captured.err


def test_only_named_entry_points_are_loaded(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    registry = harness.plugins.Registry().load_entry_points(only=["zeros"])
    assert list(registry.plugins) == ["zeros"] and not registry.errors
