"""Per-layer anomaly scorers shared by the detectors: Gaussian (Mahalanobis) and LOF.

Each scorer is fitted on one (n, d) array of trusted features and scores an (m, d) array;
higher = more anomalous. The layerwise detectors combine them by the mean over layers.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

COVARIANCE_ESTIMATORS = ("ledoit_wolf", "pinv")


class FeatureScorer(Protocol):
    def fit(self, features: np.ndarray) -> "FeatureScorer": ...

    def score(self, features: np.ndarray) -> np.ndarray: ...


class Mahalanobis:
    """Squared Mahalanobis distance from the trusted mean, divided by the dimension d.

    covariance="ledoit_wolf": Ledoit-Wolf shrinkage (well conditioned when n < d);
    covariance="pinv": empirical covariance and its pseudo-inverse with relative cutoff
    ``rcond`` (cupbearer's choice). Computed in float64.
    """

    def __init__(self, covariance: str = "ledoit_wolf", rcond: float = 1e-3):
        if covariance not in COVARIANCE_ESTIMATORS:
            raise ValueError(f"covariance must be one of {COVARIANCE_ESTIMATORS}, got {covariance!r}")
        self.covariance = covariance
        self.rcond = rcond

    def fit(self, features: np.ndarray) -> "Mahalanobis":
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need an (n >= 2, d) array of trusted features, got shape {x.shape}")
        self.location_ = x.mean(axis=0)
        if self.covariance == "ledoit_wolf":
            from sklearn.covariance import ledoit_wolf

            self.covariance_, self.shrinkage_ = ledoit_wolf(x)
            self.precision_ = np.linalg.pinv(self.covariance_, hermitian=True)
        else:
            centred = x - self.location_
            self.covariance_ = centred.T @ centred / (x.shape[0] - 1)
            self.precision_ = np.linalg.pinv(self.covariance_, rcond=self.rcond, hermitian=True)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        delta = np.asarray(features, dtype=np.float64) - self.location_
        return np.einsum("ij,jk,ik->i", delta, self.precision_, delta) / delta.shape[1]


class DiagonalMahalanobis:
    """Mahalanobis with a diagonal covariance (per-feature variance + ``eps``), divided by d."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps

    def fit(self, features: np.ndarray) -> "DiagonalMahalanobis":
        x = np.asarray(features, dtype=np.float64)
        self.location_ = x.mean(axis=0)
        self.variance_ = x.var(axis=0) + self.eps
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        delta = np.asarray(features, dtype=np.float64) - self.location_
        return (delta**2 / self.variance_).sum(axis=1) / delta.shape[1]


class LocalOutlierFactorScorer:
    """scikit-learn's LOF in novelty mode fitted on trusted features; score = -score_samples.

    Test items are never added to the reference set, so a score does not depend on which
    other items are scored with it.
    """

    def __init__(self, n_neighbors: int = 20, metric: str = "minkowski"):
        self.n_neighbors = n_neighbors
        self.metric = metric

    def fit(self, features: np.ndarray) -> "LocalOutlierFactorScorer":
        x = np.asarray(features, dtype=np.float64)
        from sklearn.neighbors import LocalOutlierFactor

        self.lof_ = LocalOutlierFactor(
            n_neighbors=min(self.n_neighbors, x.shape[0] - 1), novelty=True, metric=self.metric
        ).fit(x)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        return -self.lof_.score_samples(np.asarray(features, dtype=np.float64))
