"""The contract every registered built-in detector keeps: shape (n,), finite scores, and
higher scores on a planted anomaly (polarity), with default hyperparameters."""

import dataclasses

import numpy as np
import pytest
import torch

from harness.detectors import BUILTIN_DETECTORS, FEATURE_DETECTORS
from harness.interfaces import Detector
from harness.features.items import TextItems
from harness.scoring import auroc

torch.set_num_threads(1)


def contract_items(n_trusted=200, n_test=100, d=16, n_atoms=32, n_layers=2, seed=0):
    """A linear toy 'model' whose normal activations are sparse in a dictionary.

    Every layer: h_l = (sum of 2 of 32 atoms with positive weights) + small noise; log-odds =
    w . h_L; attributions a_l = w * h_l (the gradient of a linear readout is w). Anomalous
    test items carry large dense noise in every layer (off the dictionary, off the trusted
    distribution, and moving the readout), and their log-odds and attributions follow.
    """
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    w = rng.normal(size=d)

    def make(n, anomalous):
        hidden = np.empty((n_layers + 1, n, d))
        for layer in range(n_layers + 1):
            codes = np.zeros((n, n_atoms))
            for row in codes:
                row[rng.choice(n_atoms, 2, replace=False)] = rng.exponential(size=2) + 0.5
            hidden[layer] = codes @ atoms + 0.05 * rng.normal(size=(n, d))
            hidden[layer, anomalous] += 1.5 * rng.normal(size=(anomalous.sum(), d))
        logodds = hidden[-1] @ w
        return TextItems.from_arrays(hidden, logodds, hidden * w)

    labels = np.r_[np.zeros(n_test // 2), np.ones(n_test - n_test // 2)].astype(int)
    return make(n_trusted, np.zeros(n_trusted, bool)), make(n_test, labels == 1), labels


@pytest.mark.parametrize("cls", FEATURE_DETECTORS, ids=lambda cls: cls.name)
def test_detector_contract(cls):
    assert issubclass(cls, Detector) and dataclasses.is_dataclass(cls)
    assert cls.name and TextItems in cls.accepts and cls.describe()
    assert "higher = more" in (cls.__doc__ or "").lower()  # polarity is stated
    for name in cls.hyperparameters():
        assert f"{name}:" in cls.__doc__, f"{cls.name}: hyperparameter {name!r} is not documented"
    trusted, test, labels = contract_items()
    detector = cls()
    assert detector.fit(trusted) is detector
    scores = detector.score(test)
    assert isinstance(scores, np.ndarray) and scores.shape == (len(test),)
    assert np.all(np.isfinite(scores))
    assert auroc(labels, scores) > 0.8, f"{cls.name}: the planted anomaly does not score higher"
    assert isinstance(detector.diagnostics(), dict)


@pytest.mark.parametrize("cls", BUILTIN_DETECTORS, ids=lambda cls: cls.name)
def test_every_builtin_documents_polarity_and_hyperparameters(cls):
    doc = cls.__doc__ or ""
    assert cls.describe() and "higher = more" in doc.lower()
    for name in cls.hyperparameters():
        assert f"{name}:" in doc, f"{cls.name}: hyperparameter {name!r} is not documented"
