import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from harness.detectors.probe import ProbeLOF, ProbeMahalanobis, fit_probe
from harness.detectors.statistics import Mahalanobis
from harness.interfaces import ConfigError, NotFittedError
from harness.features.items import TextItems
from harness.scoring import auroc


def answer_items(n, d=8, n_layers=2, flipped=None, offset=0.0, rng=None):
    """Every layer holds a noisy copy of a latent z; the model answers confidently, with
    log-odds 3 w.z + 2 sign(w.z) (+ noise). ``flipped`` items answer the opposite way."""
    z = rng.normal(size=(n, d))
    hidden = np.stack([z + 0.3 * rng.normal(size=(n, d)) for _ in range(n_layers + 1)])
    w = np.ones(d) / np.sqrt(d)
    logodds = 3 * z @ w + 2 * np.sign(z @ w) + 0.3 * rng.normal(size=n) + offset
    if flipped is not None:
        logodds[flipped] *= -1
    return TextItems.from_arrays(hidden, logodds)


def planted(n_trusted=300, n_test=300, flip=True, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_test // 2), np.ones(n_test - n_test // 2)].astype(int)
    trusted = answer_items(n_trusted, rng=rng)
    test = answer_items(n_test, flipped=(labels == 1) if flip else None, rng=rng)
    return trusted, test, labels


@pytest.mark.parametrize("cls", [ProbeMahalanobis, ProbeLOF])
def test_flipped_answers_are_found(cls):
    trusted, test, labels = planted()
    scores = cls().fit(trusted).score(test)
    assert scores.shape == (len(labels),) and np.all(np.isfinite(scores))
    assert auroc(labels, scores) > 0.9


@pytest.mark.parametrize("cls", [ProbeMahalanobis, ProbeLOF])
def test_identical_distributions_give_chance(cls):
    trusted, test, labels = planted(n_test=2000, flip=False)
    assert auroc(labels, cls().fit(trusted).score(test)) == pytest.approx(0.5, abs=0.06)


def test_features_are_the_sklearn_probe_logit_and_its_shift():
    trusted, test, _ = planted()
    detector = ProbeMahalanobis(layers=[2], C=0.5).fit(trusted)
    x, logodds = trusted.activations([2])[2], trusted.logodds()
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000, random_state=0))
    reference.fit(x.astype(np.float64), logodds > 0)
    raw = lambda items: np.stack(  # noqa: E731
        [reference.decision_function(items.activations([2])[2].astype(np.float64)),
         items.logodds() - reference.decision_function(items.activations([2])[2].astype(np.float64))], axis=1)
    trusted_raw = raw(trusted)
    standardised = (raw(test) - trusted_raw.mean(0)) / trusted_raw.std(0)
    np.testing.assert_allclose(detector.layer_features(test)[2], standardised, rtol=1e-6, atol=1e-8)
    expected = Mahalanobis().fit((trusted_raw - trusted_raw.mean(0)) / trusted_raw.std(0)).score(standardised)
    np.testing.assert_allclose(detector.score(test), expected, rtol=1e-6)
    assert detector.diagnostics()["probe_kind"] == {"2": "logistic"}
    assert detector.diagnostics()["probe_train_accuracy"]["2"] > 0.9


def test_one_class_trusted_answers_fall_back_to_regressing_the_logodds(caplog):
    rng = np.random.default_rng(1)
    trusted = answer_items(200, offset=20.0, rng=rng)  # the model always says "True"
    assert np.all(trusted.logodds() > 0)
    test = answer_items(50, offset=20.0, rng=rng)
    with caplog.at_level(logging.WARNING, logger="harness.detectors.probe"):
        detector = ProbeMahalanobis().fit(trusted)
    assert "all one class" in caplog.text
    assert set(detector.diagnostics()["probe_kind"].values()) == {"ridge"}
    probe = fit_probe(trusted.activations([1])[1], trusted.logodds(), C=1.0, seed=0)
    assert np.corrcoef(probe.logit(test.activations([1])[1]), test.logodds())[0, 1] > 0.9
    assert np.all(np.isfinite(detector.score(test)))


def test_validation_and_not_fitted():
    with pytest.raises(ConfigError, match="'C'"):
        ProbeLOF(C=0)
    with pytest.raises(ConfigError, match="covariance"):
        ProbeMahalanobis(covariance="bogus")
    _, test, _ = planted(n_test=10)
    with pytest.raises(NotFittedError, match="call fit"):
        ProbeMahalanobis().score(test)
    assert ProbeMahalanobis().diagnostics() == {}
