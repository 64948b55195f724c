"""The plugin tested in-process: registered like the harness would, checked on synthetic items."""

import numpy as np
import pytest

import harness_example_detector
from harness.api import ConfigError, NotFittedError, TextItems
from harness.plugins import Registry
from harness_example_detector import LogoddsZScore


def items(logodds, d=3):
    """Synthetic items: only the log-odds matter to this detector; hidden states are zeros."""
    logodds = np.asarray(logodds, dtype=np.float32)
    return TextItems.from_arrays(np.zeros((2, len(logodds), d)), logodds)


def test_the_plugin_registers_its_detector():
    registry = Registry()
    info = registry.add_plugin(harness_example_detector, name="example_detector")
    assert not info.errors, info.errors
    assert info.detectors == ["logodds_zscore"]
    assert registry.detector("logodds_zscore") is LogoddsZScore
    assert LogoddsZScore.accepts == (TextItems,)  # it scores every task whose items are texts of one model


def test_scores_are_hand_computed_z_scores():
    # trusted log-odds 1, 3: mean 2, (population) std 1
    detector = LogoddsZScore().fit(items([1.0, 3.0]))
    scores = detector.score(items([2.0, 4.0, -1.0]))
    np.testing.assert_allclose(scores, [0.0, 2.0, 3.0])
    assert detector.diagnostics() == {"trusted_logodds_mean": 2.0, "trusted_logodds_std": 1.0}


def test_contract_shape_finite_and_polarity():
    rng = np.random.default_rng(0)
    trusted = items(rng.normal(2.0, 1.0, size=200))
    labels = np.r_[np.zeros(50), np.ones(50)].astype(int)
    test_logodds = np.r_[rng.normal(2.0, 1.0, size=50), rng.normal(-4.0, 1.0, size=50)]  # anomalies flip the answer
    detector = LogoddsZScore()
    assert detector.fit(trusted) is detector
    scores = detector.score(items(test_logodds))
    assert isinstance(scores, np.ndarray) and scores.shape == (100,) and np.all(np.isfinite(scores))
    assert scores[labels == 1].min() > np.median(scores[labels == 0])  # higher = more anomalous


def test_constant_trusted_set_does_not_divide_by_zero():
    scores = LogoddsZScore(min_std=0.5).fit(items([1.0, 1.0, 1.0])).score(items([1.0, 2.0]))
    np.testing.assert_allclose(scores, [0.0, 2.0])


def test_errors_are_actionable():
    with pytest.raises(NotFittedError, match="call fit"):
        LogoddsZScore().score(items([1.0]))
    with pytest.raises(ConfigError, match="min_std"):
        LogoddsZScore(min_std=0)
