"""Layerwise detectors: a per-layer feature map, a per-layer scorer, the mean over layers.

This is the shape of most rows of the MAD table (activations, probe, attribution x
Mahalanobis or LOF); a new detector of that shape only says which features and scorer.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from harness.api import Detector, Episode, TextItems
from harness.layers import resolve_layers

from .statistics import FeatureScorer


class LayerwiseDetector(Detector):
    """Fit one scorer per layer on trusted features; score = mean of per-layer scores.

    Subclasses implement ``make_scorer()`` and may override ``layer_features(items)``
    (default: residual-stream activations at the answer position). ``layers`` is a dataclass
    field of the subclasses (None = every block output).
    """

    layers: Optional[Sequence[int]] = None
    accepts = (TextItems,)

    def make_scorer(self) -> FeatureScorer:
        raise NotImplementedError

    def check_layers(self, n_layers: int) -> None:
        resolve_layers(self.layers, n_layers, f"detector {self.name!r}")

    def layer_features(self, items: TextItems) -> dict[int, np.ndarray]:
        return items.activations(self.resolved_layers(items))

    def memory_need(self, episode: Episode) -> int:
        """Features of every item and layer used (float32), plus a d x d float32 statistic per
        layer (Mahalanobis' precision matrix; LOF keeps the trusted features instead):
        (n_items x d + d^2) x 4 bytes x layers, with float64 working copies while fitting."""
        trusted, test = episode.trusted, episode.test
        handle = getattr(getattr(trusted, "extractor", None), "handle", None)
        if handle is None:
            return 0
        d, layers = handle.d_model, len(self.resolved_layers(trusted))
        return (len(trusted) + len(test)) * d * layers * 4 * 2 + d * d * layers * 4 + 4 * d * d * 8

    def resolved_layers(self, items: TextItems) -> list[int]:
        """``layers`` as hidden-state indices of the items' model (None: every block output)."""
        return resolve_layers(self.layers, items.n_layers, f"detector {self.name!r}")

    def fit(self, trusted: TextItems) -> "LayerwiseDetector":
        features = self.layer_features(trusted)
        self.scorers_ = {layer: self.make_scorer().fit(x) for layer, x in features.items()}
        return self

    def layer_scores(self, items: TextItems) -> dict[int, np.ndarray]:
        """Per-layer scores: layer -> (n_items,), higher = more anomalous."""
        self._check_is_fitted("scorers_")
        features = self.layer_features(items)
        return {layer: self.scorers_[layer].score(features[layer]) for layer in self.scorers_}

    def score(self, items: TextItems) -> np.ndarray:
        """(n_items,) float, mean over layers of the per-layer scores; higher = more anomalous."""
        return np.mean(np.stack(list(self.layer_scores(items).values())), axis=0)

