"""Detectors on linear-probe features: ``probe_mahalanobis_mean``, ``probe_lof_mean``.

Per layer, a linear probe fitted on trusted activations predicts the model's own answer;
each item is described by two numbers per layer (the probe's logit and the model's
disagreement with it), scored by Mahalanobis or LOF against the trusted items, and the
per-layer scores are averaged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from typing import TYPE_CHECKING

import numpy as np

from harness.api import ConfigError, TextItems

from .activations import ActivationsLOF, ActivationsMahalanobis
from .layerwise import LayerwiseDetector

if TYPE_CHECKING:  # scikit-learn loads when a probe is fitted, not when the plugin registers
    from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)


@dataclass
class LayerProbe:
    """A fitted probe of one layer and the trusted statistics that standardise its features.

    kind: "logistic" (predicts sign(log-odds)) or "ridge" (fallback: regresses the log-odds).
    pipeline: StandardScaler + the linear model, fitted on trusted (n, d) activations.
    location, scale: (2,) trusted mean and std of the raw features, for standardisation.
    train_accuracy: fraction of trusted items whose answer sign the probe gets right.
    """

    kind: str
    pipeline: Pipeline
    location: np.ndarray
    scale: np.ndarray
    train_accuracy: float

    def logit(self, activations: np.ndarray) -> np.ndarray:
        """(n, d) -> (n,) probe logit (log-odds units)."""
        x = np.asarray(activations, dtype=np.float64)
        if self.kind == "logistic":
            return self.pipeline.decision_function(x)
        return self.pipeline.predict(x)

    def raw_features(self, activations: np.ndarray, logodds: np.ndarray) -> np.ndarray:
        """(n, 2): [probe logit, model log-odds - probe logit]."""
        logit = self.logit(activations)
        return np.stack([logit, np.asarray(logodds, dtype=np.float64) - logit], axis=1)

    def features(self, activations: np.ndarray, logodds: np.ndarray) -> np.ndarray:
        """(n, 2) raw features standardised by the trusted mean and std."""
        return (self.raw_features(activations, logodds) - self.location) / self.scale


def fit_probe(activations: np.ndarray, logodds: np.ndarray, C: float, seed: int) -> LayerProbe:
    """Fit one layer's probe on trusted (n, d) activations and (n,) model log-odds.

    Target: the model's answer ``logodds > 0``. When the trusted answers are all one class a
    classifier is undefined; the probe then falls back to ridge regression of the log-odds
    (alpha = 1 / C), whose prediction plays the role of the logit.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(activations, dtype=np.float64)
    logodds = np.asarray(logodds, dtype=np.float64)
    answers = logodds > 0
    if answers.all() or not answers.any():
        kind = "ridge"
        pipeline = make_pipeline(StandardScaler(), Ridge(alpha=1.0 / C)).fit(x, logodds)
    else:
        kind = "logistic"
        model = LogisticRegression(C=C, max_iter=1000, random_state=seed)
        pipeline = make_pipeline(StandardScaler(), model).fit(x, answers)
    probe = LayerProbe(kind, pipeline, np.zeros(2), np.ones(2), 0.0)
    raw = probe.raw_features(x, logodds)
    scale = raw.std(axis=0)
    probe.location = raw.mean(axis=0)
    probe.scale = np.where(scale > 0, scale, 1.0)  # a constant feature stays constant (0)
    probe.train_accuracy = float(np.mean((probe.logit(x) > 0) == answers))
    return probe


class ProbeFeatures(LayerwiseDetector):
    """Mixin for layerwise detectors whose per-layer features are probe features (see
    :func:`fit_probe`, :meth:`LayerProbe.features`); put it before the scorer's class.

    Expects the dataclass fields ``layers``, ``C`` and ``seed``; ``fit`` fits the probes,
    then the per-layer scorers on the trusted items' probe features.
    """

    C: float
    seed: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.C > 0:
            raise ConfigError(f"{self.name}: field 'C' must be positive, got {self.C!r}")

    def fit(self, trusted: TextItems):
        activations = trusted.activations(self.layers)
        logodds = trusted.logodds()
        self.probes_ = {
            layer: fit_probe(x, logodds, self.C, self.seed) for layer, x in activations.items()
        }
        kinds = {p.kind for p in self.probes_.values()}
        if "ridge" in kinds:
            logger.warning("%s: trusted answers are all one class; probes regress the log-odds instead", self.name)
        return super().fit(trusted)

    def layer_features(self, items: TextItems) -> dict[int, np.ndarray]:
        """layer -> (n, 2) standardised [probe logit, log-odds - probe logit]."""
        self._check_is_fitted("probes_")
        activations = items.activations(list(self.probes_))
        logodds = items.logodds()
        return {layer: self.probes_[layer].features(x, logodds) for layer, x in activations.items()}

    def diagnostics(self) -> dict[str, Any]:
        """Probe kind and trusted accuracy per layer (empty before fit)."""
        if not hasattr(self, "probes_"):
            return {}
        return {
            "probe_kind": {str(layer): p.kind for layer, p in self.probes_.items()},
            "probe_train_accuracy": {str(layer): p.train_accuracy for layer, p in self.probes_.items()},
        }


@dataclass
class ProbeMahalanobis(ProbeFeatures, ActivationsMahalanobis):
    """Mahalanobis distance of per-layer linear-probe features, averaged over layers.

    Per layer: a logistic-regression probe (inputs standardised, L2 penalty with inverse
    strength C, seeded) is fitted on trusted activations to predict the model's own answer
    (log-odds > 0). If the trusted answers are all one class, the probe is instead a ridge
    regression of the log-odds (alpha = 1/C) and a warning is logged. Each item's features
    at that layer are [probe logit, model log-odds - probe logit], standardised by their
    trusted mean and std; score = Mahalanobis distance (divided by 2) from the trusted
    features; mean over layers. Higher = more anomalous.

    Hyperparameters:
        layers: layer indices (1..n_layers are block outputs, 0 the embeddings); null = all blocks.
        covariance: "ledoit_wolf" (default) or "pinv" (pseudo-inverse with cutoff rcond).
        rcond: pseudo-inverse cutoff for covariance="pinv" (default 1e-3).
        C: inverse L2 regularisation strength of the probe (default 1.0).
        seed: random_state of the probe's solver (default 0).
    """

    name = "probe_mahalanobis_mean"
    layers: Optional[list[int]] = None
    covariance: str = "ledoit_wolf"
    rcond: float = 1e-3
    C: float = 1.0
    seed: int = 0


@dataclass
class ProbeLOF(ProbeFeatures, ActivationsLOF):
    """Local outlier factor of per-layer linear-probe features, averaged over layers.

    Per layer: the probe and the standardised features [probe logit, model log-odds - probe
    logit] of ``probe_mahalanobis_mean`` (logistic regression on the model's answer; ridge
    regression of the log-odds when the trusted answers are all one class); score =
    -score_samples of ``LocalOutlierFactor(novelty=True)`` fitted on the trusted features;
    mean over layers. Higher = more anomalous.

    Hyperparameters:
        layers: layer indices; null = all blocks.
        n_neighbors: LOF neighbourhood size (default 20, capped at n_trusted - 1).
        C: inverse L2 regularisation strength of the probe (default 1.0).
        seed: random_state of the probe's solver (default 0).
    """

    name = "probe_lof_mean"
    layers: Optional[list[int]] = None
    n_neighbors: int = 20
    C: float = 1.0
    seed: int = 0
