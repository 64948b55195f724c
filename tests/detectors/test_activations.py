import dataclasses

import numpy as np
import pytest

from harness.detectors.activations import ActivationsLOF, ActivationsMahalanobis
from harness.detectors.statistics import Mahalanobis
from harness.interfaces import ConfigError, NotFittedError
from harness.features.items import TextItems
from harness.scoring import auroc


def planted(n_trusted=200, n_test=200, d=16, n_layers=3, shift=3.0, seed=0):
    """Trusted and test items; half the test items are shifted in every layer."""
    rng = np.random.default_rng(seed)
    trusted = rng.normal(size=(n_layers + 1, n_trusted, d))
    test = rng.normal(size=(n_layers + 1, n_test, d))
    labels = np.r_[np.zeros(n_test // 2), np.ones(n_test - n_test // 2)].astype(int)
    test[:, labels == 1, 0] += shift
    return TextItems.from_arrays(trusted), TextItems.from_arrays(test), labels


@pytest.mark.parametrize("cls", [ActivationsMahalanobis, ActivationsLOF])
def test_planted_anomaly_is_found(cls):
    trusted, test, labels = planted()
    scores = cls().fit(trusted).score(test)
    assert scores.shape == (len(labels),)
    assert auroc(labels, scores) > 0.9


@pytest.mark.parametrize("cls", [ActivationsMahalanobis, ActivationsLOF])
def test_identical_distributions_give_chance(cls):
    trusted, test, labels = planted(shift=0.0, n_test=2000)
    assert auroc(labels, cls().fit(trusted).score(test)) == pytest.approx(0.5, abs=0.05)


def test_mahalanobis_is_mean_of_layer_scores():
    trusted, test, _ = planted()
    detector = ActivationsMahalanobis(layers=[1, 3]).fit(trusted)
    expected = np.mean(
        [Mahalanobis().fit(trusted.activations([l])[l]).score(test.activations([l])[l]) for l in (1, 3)], axis=0
    )
    np.testing.assert_allclose(detector.score(test), expected)


def test_score_before_fit_says_what_to_do():
    _, test, _ = planted()
    with pytest.raises(NotFittedError, match="call fit"):
        ActivationsMahalanobis().score(test)


def test_hyperparameters_are_dataclass_fields_and_validated():
    assert ActivationsLOF().get_params() == {"layers": None, "n_neighbors": 20}
    assert dataclasses.replace(ActivationsLOF(n_neighbors=5)).n_neighbors == 5
    with pytest.raises(ConfigError, match="n_neighbors"):
        ActivationsLOF(n_neighbors=0)
    with pytest.raises(ConfigError, match="covariance"):
        ActivationsMahalanobis(covariance="bogus")


def test_out_of_range_layer_is_reported():
    trusted, _, _ = planted(n_layers=2)
    with pytest.raises(ConfigError, match="layer 7 out of range; this model has hidden states 0..2"):
        ActivationsMahalanobis(layers=[7]).fit(trusted)
