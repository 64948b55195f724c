"""Layerwise detectors: a per-layer feature map, a per-layer scorer, the mean over layers.

This is the shape of most rows of the MAD table (activations, probe, attribution x
Mahalanobis or LOF); a new detector of that shape only says which features and scorer.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from harness.interfaces import ConfigError, Detector, Episode
from harness.items import InputItems

from .statistics import FeatureScorer


class LayerwiseDetector(Detector):
    """Fit one scorer per layer on trusted features; score = mean of per-layer scores.

    Subclasses implement ``make_scorer()`` and may override ``layer_features(items)``
    (default: residual-stream activations at the answer position). ``layers`` is a dataclass
    field of the subclasses (None = every block output).
    """

    layers: Optional[Sequence[int]] = None
    task_kinds = ("mad",)

    def make_scorer(self) -> FeatureScorer:
        raise NotImplementedError

    def check_episode(self, episode: Episode) -> None:
        for layer in self.layers or ():
            check_layer_index(self.name, "layers", layer, episode.trusted.n_layers)

    def layer_features(self, items: InputItems) -> dict[int, np.ndarray]:
        return items.activations(self.layers)

    def fit(self, trusted: InputItems) -> "LayerwiseDetector":
        if self.layers is not None and len(self.layers) == 0:
            raise ConfigError(f"{self.name}: field 'layers' must name at least one layer or be null (all)")
        features = self.layer_features(trusted)
        self.scorers_ = {layer: self.make_scorer().fit(x) for layer, x in features.items()}
        return self

    def layer_scores(self, items: InputItems) -> dict[int, np.ndarray]:
        """Per-layer scores: layer -> (n_items,), higher = more anomalous."""
        self._check_is_fitted("scorers_")
        features = self.layer_features(items)
        return {layer: self.scorers_[layer].score(features[layer]) for layer in self.scorers_}

    def score(self, items: InputItems) -> np.ndarray:
        """(n_items,) float, mean over layers of the per-layer scores; higher = more anomalous."""
        return np.mean(np.stack(list(self.layer_scores(items).values())), axis=0)


def middle_block(n_layers: int) -> int:
    """The middle block output of a model with ``n_layers`` blocks (1 of 2, 2 of 4, 2 of 3)."""
    return max(1, (n_layers + 1) // 2)


def check_layer_index(detector: str, field: str, layer: int, n_layers: int) -> None:
    """ConfigError unless ``layer`` indexes the residual streams 0..n_layers (negative from the end)."""
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ConfigError(
            f"detector {detector!r} field {field!r}: layer {layer} out of range; this model has layers "
            f"0..{n_layers} (0 = embeddings, 1..{n_layers} = block outputs; negative counts from the end)"
        )


def resolve_layer(items: InputItems, layer: Optional[int]) -> int:
    """``layer`` as a non-negative index (None = the middle block); IndexError if out of range."""
    n_layers = items.features().n_layers
    chosen = middle_block(n_layers) if layer is None else layer
    if not -(n_layers + 1) <= chosen <= n_layers:
        raise IndexError(f"layer {chosen} out of range: this model has layers 0..{n_layers}")
    return chosen % (n_layers + 1)
