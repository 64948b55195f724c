"""Detectors on raw residual-stream activations: ``activations_mahalanobis``, ``activations_lof``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from harness.api import ConfigError

from .layerwise import LayerwiseDetector
from .statistics import COVARIANCE_ESTIMATORS, LocalOutlierFactorScorer, Mahalanobis


@dataclass
class ActivationsMahalanobis(LayerwiseDetector):
    """Mahalanobis distance of answer-position activations from the trusted distribution.

    Per layer: mean and covariance of trusted activations; score = (x - mu)^T Sigma^+ (x - mu) / d;
    layers combined by the mean of per-layer scores. Higher = more anomalous.

    Hyperparameters:
        layers: layer indices (1..n_layers are block outputs, 0 the embeddings); null = all blocks.
        covariance: "ledoit_wolf" (shrinkage, works when n < d; default) or "pinv"
            (empirical covariance, pseudo-inverse with relative cutoff rcond, as cupbearer).
        rcond: pseudo-inverse cutoff for covariance="pinv" (default 1e-3).
    """

    name = "activations_mahalanobis"
    layers: Optional[list[int]] = None
    covariance: str = "ledoit_wolf"
    rcond: float = 1e-3

    def __post_init__(self) -> None:
        if self.covariance not in COVARIANCE_ESTIMATORS:
            raise ConfigError(f"{self.name}: field 'covariance' must be one of {COVARIANCE_ESTIMATORS}, got {self.covariance!r}")

    def make_scorer(self) -> Mahalanobis:
        return Mahalanobis(self.covariance, self.rcond)


@dataclass
class ActivationsLOF(LayerwiseDetector):
    """Local outlier factor of answer-position activations against the trusted set.

    Per layer: ``sklearn.neighbors.LocalOutlierFactor(novelty=True)`` fitted on trusted
    activations; score = -score_samples (about 1 for inliers, larger for outliers); mean over
    layers. Higher = more anomalous.

    Hyperparameters:
        layers: layer indices; null = all blocks.
        n_neighbors: LOF neighbourhood size (default 20, capped at n_trusted - 1).
    """

    name = "activations_lof"
    layers: Optional[list[int]] = None
    n_neighbors: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 1:
            raise ConfigError(f"{self.name}: field 'n_neighbors' must be a positive integer, got {self.n_neighbors!r}")

    def make_scorer(self) -> LocalOutlierFactorScorer:
        return LocalOutlierFactorScorer(self.n_neighbors)
