"""Detectors on gradient x activation attributions: ``attribution_mahalanobis_mean``, ``attribution_lof_mean``.

Per layer, each item is described by the attribution of the answer log-odds to that layer's
residual stream at the answer position (``d logodds / d h * h``, elementwise, (n, d)), served
by the shared feature extractor and its cache; Mahalanobis or LOF per layer; mean over layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from harness.api import TextItems

from .activations import ActivationsLOF, ActivationsMahalanobis


@dataclass
class AttributionMahalanobis(ActivationsMahalanobis):
    """Mahalanobis distance of gradient x activation attributions, averaged over layers.

    Per layer l: features = (d logodds / d h_l) * h_l elementwise, h_l the residual stream at
    the answer position ((n, d), from ``TextItems.attributions``); mean and covariance of the
    trusted items' attributions; score = (a - mu)^T Sigma^+ (a - mu) / d; mean over layers.
    Higher = more anomalous.

    Hyperparameters:
        layers: layer indices (1..n_layers are block outputs, 0 the embeddings); null = all blocks.
        covariance: "ledoit_wolf" (default) or "pinv" (pseudo-inverse with cutoff rcond).
        rcond: pseudo-inverse cutoff for covariance="pinv" (default 1e-3).
    """

    name = "attribution_mahalanobis_mean"
    layers: Optional[list[int]] = None
    covariance: str = "ledoit_wolf"
    rcond: float = 1e-3

    def layer_features(self, items: TextItems) -> dict[int, np.ndarray]:
        return items.attributions(self.resolved_layers(items))

    def memory_need(self, episode) -> int:
        return super().memory_need(episode) + backward_bytes(episode)


def backward_bytes(episode) -> int:
    """What a backward pass keeps: about 16 activations of (micro-batch x tokens x d) per block
    (attention and MLP intermediates), micro-batches a quarter of the forward batch and, with
    ``--batch-size auto``, at most ``ATTRIBUTION_BATCH_BYTES`` (the extractor's bound)."""
    from harness.features.extractor import ATTRIBUTION_BATCH_BYTES, ATTRIBUTION_BATCH_DIVISOR
    from harness.plan.memory import DEFAULT_TOKENS
    from harness.runtime import current

    handle = getattr(getattr(episode.trusted, "extractor", None), "handle", None)
    if handle is None:
        return 0
    runtime = current()
    micro = max(1, runtime.initial_batch_size() // ATTRIBUTION_BATCH_DIVISOR)
    need = 16 * micro * DEFAULT_TOKENS * handle.d_model * handle.n_layers * 4
    return min(need, ATTRIBUTION_BATCH_BYTES) if runtime.batch_size == "auto" else need


@dataclass
class AttributionLOF(ActivationsLOF):
    """Local outlier factor of gradient x activation attributions, averaged over layers.

    Per layer l: features = (d logodds / d h_l) * h_l elementwise at the answer position;
    score = -score_samples of ``LocalOutlierFactor(novelty=True)`` fitted on the trusted
    items' attributions; mean over layers. Higher = more anomalous.

    Hyperparameters:
        layers: layer indices; null = all blocks.
        n_neighbors: LOF neighbourhood size (default 20, capped at n_trusted - 1).
    """

    name = "attribution_lof_mean"
    layers: Optional[list[int]] = None
    n_neighbors: int = 20

    def layer_features(self, items: TextItems) -> dict[int, np.ndarray]:
        return items.attributions(self.resolved_layers(items))

    def memory_need(self, episode) -> int:
        return super().memory_need(episode) + backward_bytes(episode)
