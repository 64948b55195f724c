"""A toy task and misbehaving detectors, registered in-process, for runner and leaderboard tests."""

import dataclasses

import numpy as np
import pytest

import harness
from harness.detectors.activations import ActivationsMahalanobis
from harness.interfaces import Detector, Episode, Task, RunContext
from harness.features.items import TextItems
from harness.plugins import Registry


class ToyTask(Task):
    """Two synthetic episodes: one valid with a planted shift, one invalid."""

    name = "toy"
    items = TextItems

    def episodes(self, config: RunContext):
        rng = np.random.default_rng(config.seed)
        out = []
        for name, valid in (("shifted", True), ("broken", False)):
            trusted = rng.normal(size=(2, 100, 4))
            test = rng.normal(size=(2, 60, 4))
            labels = np.r_[np.zeros(30), np.ones(30)].astype(int)
            test[:, labels == 1] += 2.0
            agrees = np.r_[np.ones(45, bool), np.zeros(15, bool)]
            out.append(
                Episode(name, TextItems.from_arrays(trusted), TextItems.from_arrays(test), labels,
                        {"agrees_with_gt": agrees}, {"valid": valid, "reason": "toy says no"}, f"fp-{name}-{config.seed}")
            )
        return out


@dataclasses.dataclass
class Exploding(Detector):
    """Raises in fit."""

    name = "exploding"
    accepts = (TextItems,)

    def fit(self, trusted):
        raise RuntimeError("kaboom")


@dataclasses.dataclass
class WrongShape(Detector):
    """Returns one score too few."""

    name = "wrong_shape"
    accepts = (TextItems,)

    def fit(self, trusted):
        return self

    def score(self, items):
        return np.zeros(len(items) - 1)


@dataclasses.dataclass
class NaNScores(WrongShape):
    name = "nan_scores"

    def score(self, items):
        return np.full(len(items), np.nan)


def registry():
    class Plugin:
        @harness.hookimpl
        def register_tasks(self, register):
            register(ToyTask)

        @harness.hookimpl
        def register_detectors(self, register):
            for cls in (ActivationsMahalanobis, Exploding, WrongShape, NaNScores):
                register(cls)

    reg = Registry()
    reg.add_plugin(Plugin(), name="toy-plugin")
    assert not reg.errors, reg.errors
    return reg




@pytest.fixture()
def toy_registry():
    return registry()
