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
    ``rcond`` (cupbearer's choice). The covariance and its inverse are computed in float64;
    only the precision matrix is kept, in ``dtype`` (float32 unless asked), so a fitted scorer
    holds d^2 x 4 bytes: 64 MiB for a 4096-wide layer (the fit needs about 4 x d^2 x 8 bytes
    more while it runs, one layer at a time).
    """

    def __init__(self, covariance: str = "ledoit_wolf", rcond: float = 1e-3, dtype: str = "float32"):
        if covariance not in COVARIANCE_ESTIMATORS:
            raise ValueError(f"covariance must be one of {COVARIANCE_ESTIMATORS}, got {covariance!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.covariance = covariance
        self.rcond = rcond
        self.dtype = dtype

    def fit(self, features: np.ndarray) -> "Mahalanobis":
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need an (n >= 2, d) array of trusted features, got shape {x.shape}")
        self.location_ = x.mean(axis=0)
        if self.covariance == "ledoit_wolf":
            from sklearn.covariance import ledoit_wolf

            covariance, self.shrinkage_ = ledoit_wolf(x)
            precision = np.linalg.pinv(covariance, hermitian=True)
        else:
            centred = x - self.location_
            covariance = centred.T @ centred / (x.shape[0] - 1)
            precision = np.linalg.pinv(covariance, rcond=self.rcond, hermitian=True)
        self.precision_ = precision.astype(self.dtype)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        delta = (np.asarray(features, dtype=np.float64) - self.location_).astype(self.dtype)
        return np.einsum("ij,jk,ik->i", delta, self.precision_, delta).astype(np.float64) / delta.shape[1]


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
