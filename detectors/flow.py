"""Normalizing-flow detectors on one layer's activations: ``flow_mahalanobis``, ``flow_laplace``.

A neural spline flow (``zuko.flows.NSF``) is fitted by maximum likelihood on the trusted
items' activations of one layer (standardised, optionally reduced by PCA). ``flow_mahalanobis``
scores the Mahalanobis distance of an item's latent from the trusted latents;
``flow_laplace`` scores the negative log-likelihood under a flow trained with a standard
Laplace base distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from typing import TYPE_CHECKING

import numpy as np

from harness.api import ConfigError, TextItems, resolve_layer

from .layerwise import LayerwiseDetector
from .statistics import Mahalanobis

if TYPE_CHECKING:  # torch and sklearn load when a flow is fitted, not when the plugin registers
    import torch

FLOW_BASES = ("normal", "laplace")


class FlowScorer:
    """A normalizing flow fitted on (n, d) trusted features; scores latents or log-likelihoods.

    Inputs are standardised (trusted mean and std per feature); with ``pca_dim`` they are then
    projected on the top ``pca_dim`` principal components and whitened. The flow is
    ``zuko.flows.NSF(k, transforms=transforms, hidden_features=(hidden,) * 2)`` with base N(0, I)
    (base="normal") or a product of standard Laplace distributions (base="laplace"), trained
    with Adam (full passes over shuffled minibatches, ``epochs`` of them) to maximise the mean
    log-likelihood, all under a fixed ``seed`` (the global torch RNG is left as it was).

    score: "mahalanobis" (squared Mahalanobis distance of the latent from the trusted latents,
    divided by k; Ledoit-Wolf covariance) or "nll" (negative log-likelihood of the
    standardised, projected features under the flow). (m,) float, higher = more anomalous.
    """

    def __init__(
        self,
        base: str = "normal",
        score: str = "mahalanobis",
        pca_dim: Optional[int] = 16,
        transforms: int = 3,
        hidden: int = 64,
        epochs: int = 50,
        batch_size: int = 128,
        lr: float = 3e-3,
        seed: int = 0,
    ):
        if base not in FLOW_BASES:
            raise ValueError(f"base must be one of {FLOW_BASES}, got {base!r}")
        if score not in ("mahalanobis", "nll"):
            raise ValueError(f"score must be 'mahalanobis' or 'nll', got {score!r}")
        self.base = base
        self.score_kind = score
        self.pca_dim = pca_dim
        self.transforms = transforms
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def _prepare(self, features: np.ndarray) -> "torch.Tensor":
        import torch

        x = (np.asarray(features, dtype=np.float64) - self.location_) / self.scale_
        if self.pca_ is not None:
            x = self.pca_.transform(x)
        return torch.as_tensor(x, dtype=torch.float32)

    def _make_flow(self, k: int) -> "torch.nn.Module":
        import torch
        import zuko

        flow = zuko.flows.NSF(k, transforms=self.transforms, hidden_features=(self.hidden, self.hidden))
        if self.base == "laplace":  # one Laplace(0, 1) per latent; zuko makes it an Independent
            flow.base = zuko.lazy.UnconditionalDistribution(
                torch.distributions.Laplace, torch.zeros(k), torch.ones(k), buffer=True
            )
        return flow

    def fit(self, features: np.ndarray) -> "FlowScorer":
        import torch
        from sklearn.decomposition import PCA

        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need an (n >= 2, d) array of trusted features, got shape {x.shape}")
        self.location_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.pca_ = None
        if self.pca_dim is not None and self.pca_dim < x.shape[1]:
            k = min(self.pca_dim, x.shape[0] - 1)
            self.pca_ = PCA(k, whiten=True, random_state=self.seed).fit((x - self.location_) / self.scale_)
        data = self._prepare(x)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.flow_ = self._make_flow(data.shape[1])
            optimizer = torch.optim.Adam(self.flow_.parameters(), lr=self.lr)
            self.flow_.train()
            for _ in range(self.epochs):
                for batch in torch.randperm(len(data)).split(self.batch_size):
                    loss = -self.flow_().log_prob(data[batch]).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        self.flow_.eval()
        self.final_nll_ = float(-self.log_prob(x).mean())
        if self.score_kind == "mahalanobis":
            self.latent_scorer_ = Mahalanobis().fit(self.latents(x))
        return self

    def latents(self, features: np.ndarray) -> np.ndarray:
        """(m, d) -> (m, k) flow latents z = f(x) of the standardised, projected features."""
        import torch

        with torch.no_grad():
            return self.flow_().transform(self._prepare(features)).double().numpy()

    def log_prob(self, features: np.ndarray) -> np.ndarray:
        """(m, d) -> (m,) log-density (nats) of the standardised, projected features under the flow."""
        import torch

        with torch.no_grad():
            return self.flow_().log_prob(self._prepare(features)).double().numpy()

    def score(self, features: np.ndarray) -> np.ndarray:
        if self.score_kind == "mahalanobis":
            return self.latent_scorer_.score(self.latents(features))
        return -self.log_prob(features)


@dataclass
class FlowDetector(LayerwiseDetector):
    """Base of the flow detectors: one layer, one :class:`FlowScorer` (not registered itself)."""

    layer: Optional[int] = None
    pca_dim: Optional[int] = 16
    transforms: int = 3
    hidden: int = 64
    epochs: int = 50
    lr: float = 3e-3
    seed: int = 0

    flow_base = "normal"
    flow_score = "mahalanobis"

    def __post_init__(self) -> None:
        for name in ("transforms", "hidden", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{self.name}: field '{name}' must be a positive integer, got {value!r}")
        if self.pca_dim is not None and (not isinstance(self.pca_dim, int) or self.pca_dim < 1):
            raise ConfigError(f"{self.name}: field 'pca_dim' must be a positive integer or null, got {self.pca_dim!r}")
        if not self.lr > 0:
            raise ConfigError(f"{self.name}: field 'lr' must be positive, got {self.lr!r}")

    def make_scorer(self) -> FlowScorer:
        return FlowScorer(
            self.flow_base, self.flow_score, self.pca_dim, self.transforms, self.hidden, self.epochs, lr=self.lr, seed=self.seed
        )

    def check_layers(self, n_layers: int) -> None:
        resolve_layer(self.layer, n_layers, f"detector {self.name!r}")

    def fit(self, trusted: TextItems) -> "FlowDetector":
        self.layer_ = resolve_layer(self.layer, trusted.n_layers, f"detector {self.name!r}")
        return super().fit(trusted)

    def layer_features(self, items: TextItems) -> dict[int, np.ndarray]:
        self._check_is_fitted("layer_")
        return items.activations([self.layer_])

    def diagnostics(self) -> dict[str, Any]:
        """The layer used and the flow's mean trusted negative log-likelihood (empty before fit)."""
        if not hasattr(self, "scorers_"):
            return {}
        return {"layer": self.layer_, "trusted_nll": self.scorers_[self.layer_].final_nll_}


@dataclass
class FlowMahalanobis(FlowDetector):
    """Mahalanobis distance in the latent space of a normalizing flow fitted on one layer.

    The trusted activations of one layer (answer position) are standardised, projected on
    their top ``pca_dim`` principal components (whitened), and a neural spline flow
    (``zuko.flows.NSF``, standard normal base) is fitted to them by maximum likelihood; score
    = squared Mahalanobis distance (divided by the latent dimension, Ledoit-Wolf covariance)
    of the item's latent z = f(x) from the trusted latents. Higher = more anomalous.

    Hyperparameters:
        layer: layer index (1..n_layers are block outputs); null = the middle block
            ((n_layers + 1) // 2; default).
        pca_dim: principal components kept before the flow (default 16); null = no PCA.
        transforms: autoregressive spline transforms in the flow (default 3).
        hidden: width of the two hidden layers of each transform's network (default 64).
        epochs: passes over the trusted set, minibatches of 128 (default 50).
        lr: Adam learning rate (default 3e-3).
        seed: seeds the flow's initialisation and minibatch order (default 0).
    """

    name = "flow_mahalanobis"
    flow_base = "normal"
    flow_score = "mahalanobis"


@dataclass
class FlowLaplace(FlowDetector):
    """Negative log-likelihood under a normalizing flow with a Laplace base, fitted on one layer.

    As ``flow_mahalanobis`` (standardise, PCA to ``pca_dim`` whitened components, neural
    spline flow ``zuko.flows.NSF``), but the flow's base distribution is a product of
    standard Laplace distributions and the flow is trained by maximum likelihood under that
    base; score = -log p(x) of the item's standardised, projected activations (nats; the
    constant Jacobian of standardisation and PCA is left out). Higher = more anomalous.

    Hyperparameters:
        layer: layer index; null = the middle block ((n_layers + 1) // 2; default).
        pca_dim: principal components kept before the flow (default 16); null = no PCA.
        transforms: autoregressive spline transforms in the flow (default 3).
        hidden: width of the two hidden layers of each transform's network (default 64).
        epochs: passes over the trusted set, minibatches of 128 (default 50).
        lr: Adam learning rate (default 3e-3).
        seed: seeds the flow's initialisation and minibatch order (default 0).
    """

    name = "flow_laplace"
    flow_base = "laplace"
    flow_score = "nll"

