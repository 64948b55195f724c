"""Sparse-autoencoder detectors on one layer's activations: ``sae_diag_mahalanobis``, ``sae_l0``.

A ReLU sparse autoencoder with an L1 penalty is trained on one layer's activations of the
trusted items only, like every other detector's fit: an SAE that also saw the items it scores
would learn latents for the anomalies themselves (half of a MAD test pool is anomalous), a
view of the test set no other detector gets. ``sae_diag_mahalanobis`` scores the diagonal
Mahalanobis distance of an item's SAE latents from the trusted latents; ``sae_l0`` the number
of latents the item activates. The two train the same SAE, so it is trained once and cached
under a key of the activations and the training's hyperparameters.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Optional

from typing import TYPE_CHECKING

import numpy as np

from harness.api import ConfigError, Detector, TextItems, resolve_layer
from harness.cache import cached_arrays

from .statistics import DiagonalMahalanobis

if TYPE_CHECKING:  # torch loads when an SAE is trained, not when the plugin registers
    import torch

logger = logging.getLogger(__name__)

# part of a trained SAE's cache key: bump it when a change to the training changes its weights
SAE_VERSION = "1"


@dataclass
class SAEDetector(Detector):
    """Base of the SAE detectors (not registered itself): an SAE trained on trusted activations.

    ``fit(trusted)`` trains the SAE on the trusted activations of the chosen layer and fits
    what the subclass learns from the trusted latents; ``score(items)`` only encodes.
    """

    layer: Optional[int] = None
    expansion: int = 4
    l1: float = 1e-2
    steps: int = 2000
    lr: float = 1e-2
    seed: int = 0

    accepts = (TextItems,)

    def __post_init__(self) -> None:
        for name in ("expansion", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{self.name}: field '{name}' must be a positive integer, got {value!r}")
        if not self.l1 >= 0:
            raise ConfigError(f"{self.name}: field 'l1' must be non-negative, got {self.l1!r}")
        if not self.lr > 0:
            raise ConfigError(f"{self.name}: field 'lr' must be positive, got {self.lr!r}")

    def check_layers(self, n_layers: int) -> None:
        resolve_layer(self.layer, n_layers, f"detector {self.name!r}")

    def fit(self, trusted: TextItems) -> "SAEDetector":
        self.layer_ = resolve_layer(self.layer, trusted.n_layers, f"detector {self.name!r}")
        self.trusted_ = np.asarray(trusted.activations([self.layer_])[self.layer_], dtype=np.float32)
        self._train(self.trusted_)
        self.on_trained()
        logger.info("%s: SAE trained on %d trusted activations, FVE %.3f", self.name, len(self.trusted_), self.fve_)
        return self

    def _normalise(self, x: np.ndarray) -> "torch.Tensor":
        import torch

        return torch.as_tensor((x - self.location_) / self.scale_, dtype=torch.float32)

    def _train(self, activations: np.ndarray) -> None:
        """Train the SAE on (n, d) activations: centred by their mean and divided by their
        root-mean-square deviation per dimension (one scalar, so geometry is kept)."""
        import torch

        from .sae_model import SparseAutoencoder

        self.location_ = activations.mean(axis=0)
        rms = float(np.sqrt(((activations - self.location_) ** 2).mean()))
        self.scale_ = rms if rms > 0 else 1.0
        data = self._normalise(activations)
        # sae_diag_mahalanobis and sae_l0 train the same SAE on the same trusted activations
        # (minutes on a pretrained model's features): it is trained once and cached
        key = {"version": SAE_VERSION, "torch": torch.__version__.split("+")[0],
               "data": hashlib.sha256(data.numpy().tobytes()).hexdigest(), "shape": list(data.shape),
               "expansion": self.expansion, "l1": self.l1, "steps": self.steps, "lr": self.lr, "seed": self.seed}
        weights = cached_arrays("sae", key, lambda: self._trained_weights(data))
        with torch.random.fork_rng(devices=[]):  # the module's initialisation draws: keep the global RNG
            sae = SparseAutoencoder(data.shape[1], self.expansion * data.shape[1])
        sae.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})
        self.sae_ = sae.eval()
        with torch.no_grad():
            residual = (sae.decode(sae.encode(data)) - data).pow(2).sum()
            total = (data - data.mean(dim=0)).pow(2).sum()
        self.fve_ = float(1.0 - residual / total) if total > 0 else float("nan")
        self.trusted_l0_ = float(self.l0(self.latents(self.trusted_)).mean())

    def _trained_weights(self, data: "torch.Tensor") -> dict[str, np.ndarray]:
        """Train the SAE on the normalised (n, d) ``data``: its weights by name."""
        import torch

        from .sae_model import SparseAutoencoder

        batch_size = 128
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            sae = SparseAutoencoder(data.shape[1], self.expansion * data.shape[1])
            optimizer = torch.optim.Adam(sae.parameters(), lr=self.lr)
            step = 0
            while step < self.steps:  # shuffled passes over the data until `steps` minibatches
                for batch in torch.randperm(len(data)).split(batch_size)[: self.steps - step]:
                    loss = sae.loss(data[batch], self.l1)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    step += 1
        return {name: value.detach().numpy().copy() for name, value in sae.state_dict().items()}

    def latents(self, activations: np.ndarray) -> np.ndarray:
        """(n, d) activations -> (n, n_latents) SAE latents (float64, >= 0)."""
        import torch

        self._check_is_fitted("sae_")
        with torch.no_grad():
            return self.sae_.encode(self._normalise(np.asarray(activations, dtype=np.float32))).double().numpy()

    @staticmethod
    def l0(latents: np.ndarray) -> np.ndarray:
        """(n, n_latents) -> (n,) number of active (strictly positive) latents."""
        return (latents > 0).sum(axis=1).astype(np.float64)

    def item_activations(self, items: TextItems) -> np.ndarray:
        """(n, d) activations of ``items`` at the fitted layer."""
        self._check_is_fitted("sae_")
        return np.asarray(items.activations([self.layer_])[self.layer_], dtype=np.float32)

    def on_trained(self) -> None:
        """Fit whatever the subclass learns from the trusted latents (after training)."""

    def diagnostics(self) -> dict[str, Any]:
        """Layer, fraction of variance explained on the trusted activations and mean trusted L0
        (empty before ``fit``)."""
        out: dict[str, Any] = {}
        if hasattr(self, "layer_"):
            out["layer"] = self.layer_
        if hasattr(self, "fve_"):
            out.update(fve=self.fve_, trusted_l0=self.trusted_l0_, n_latents=self.expansion * self.trusted_.shape[1])
        return out


@dataclass
class SAEDiagMahalanobis(SAEDetector):
    """Diagonal Mahalanobis distance over the latents of a sparse autoencoder on one layer.

    A ReLU SAE (n_latents = expansion x d, L1 penalty weighted by decoder norms; inputs
    centred and scaled to unit mean square per dimension) is trained on the layer's
    answer-position activations of the trusted items (seeded Adam). Score = sum_i (z_i - mu_i)^2 / (var_i +
    1e-6) / n_latents over the item's latents z, with mu, var from the trusted latents.
    Higher = more anomalous. ``diagnostics()`` reports the fraction of variance explained (fve).

    Hyperparameters:
        layer: hidden-state index (harness.layers: 0 = embeddings, 1..n_layers = block outputs,
            negative from the end); null = the middle block ((n_layers + 1) // 2; default).
        expansion: latents per input dimension (default 4).
        l1: weight of the sparsity penalty (default 1e-2).
        steps: Adam steps on minibatches of 128 drawn in shuffled passes over the trusted activations (default 2000).
        lr: Adam learning rate (default 1e-2).
        seed: seeds initialisation and minibatch order (default 0).
    """

    name = "sae_diag_mahalanobis"

    def on_trained(self) -> None:
        self.latent_scorer_ = DiagonalMahalanobis().fit(self.latents(self.trusted_))

    def score(self, items: TextItems) -> np.ndarray:
        """(n_items,) float, diagonal Mahalanobis over SAE latents; higher = more anomalous."""
        return self.latent_scorer_.score(self.latents(self.item_activations(items)))


@dataclass
class SAEL0(SAEDetector):
    """Number of active latents (L0) of a sparse autoencoder on one layer.

    The SAE of ``sae_diag_mahalanobis`` (ReLU, L1 penalty, trained on the layer's trusted
    activations); score = number of latents
    strictly above zero for the item (an integer, as float). Higher = more anomalous.
    ``diagnostics()`` reports the fraction of variance explained (fve) and the trusted mean L0.

    Hyperparameters:
        layer: layer index; null = the middle block ((n_layers + 1) // 2; default).
        expansion: latents per input dimension (default 4).
        l1: weight of the sparsity penalty (default 1e-2).
        steps: Adam steps on minibatches of 128 drawn in shuffled passes over the trusted activations (default 2000).
        lr: Adam learning rate (default 1e-2).
        seed: seeds initialisation and minibatch order (default 0).
    """

    name = "sae_l0"

    def score(self, items: TextItems) -> np.ndarray:
        """(n_items,) float, number of active SAE latents; higher = more anomalous."""
        return self.l0(self.latents(self.item_activations(items)))
