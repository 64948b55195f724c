"""Items of a MAD-kind episode: the inputs of one model, with lazy access to their features.

Detectors receive :class:`InputItems` in ``fit`` and ``score`` and ask it for features; the
shared :class:`~harness.features.FeatureExtractor` computes them once and caches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from harness.features import FeatureExtractor, LastTokenFeatures, select_layers


@dataclass
class InputItems:
    """n inputs of one model.

    Attributes:
        prompts: the n prompt strings (the answer is read at the last token).
        extractor: computes features for this model (None when built from arrays).
        records: the n dataset records (for tags and debugging; never labels for fitting).
    """

    prompts: Sequence[str]
    extractor: Optional[FeatureExtractor] = None
    records: Sequence[dict] = ()
    _features: Optional[LastTokenFeatures] = field(default=None, repr=False)
    _attributions: Optional[np.ndarray] = field(default=None, repr=False)

    @classmethod
    def from_arrays(
        cls, hidden: np.ndarray, logodds: Optional[np.ndarray] = None, attributions: Optional[np.ndarray] = None
    ) -> "InputItems":
        """Items with precomputed features: hidden (n_layers + 1, n, d), logodds (n,),
        attributions (n_layers + 1, n, d) or None (then ``attributions()`` raises)."""
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim != 3:
            raise ValueError(f"hidden must be (n_layers + 1, n, d); got shape {hidden.shape}")
        n = hidden.shape[1]
        logodds = np.zeros(n, np.float32) if logodds is None else np.asarray(logodds, np.float32)
        if attributions is not None:
            attributions = np.asarray(attributions, dtype=np.float32)
            if attributions.shape != hidden.shape:
                raise ValueError(f"attributions must have the shape of hidden {hidden.shape}; got {attributions.shape}")
        return cls(prompts=[""] * n, _features=LastTokenFeatures(hidden, logodds), _attributions=attributions)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_layers(self) -> int:
        """Blocks of the model (layer indices run 0..n_layers), from its config when the
        features are not computed yet: cheap enough for the runner's up-front checks."""
        if self._features is not None or self.extractor is None:
            return self.features().n_layers
        config = self.handle.model.config
        return int(getattr(config, "num_hidden_layers", None) or config.n_layer)

    def features(self) -> LastTokenFeatures:
        if self._features is None:
            if self.extractor is None:
                raise ValueError("these items have neither features nor an extractor")
            self._features = self.extractor.last_token(self.prompts)
        return self._features

    def activations(self, layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
        """Residual stream at the answer position: layer -> (n, d_model) float32."""
        return self.features().layers(layers)

    def logodds(self) -> np.ndarray:
        """(n,) answer log-odds (positive minus negative answer logit)."""
        return self.features().logodds

    def attributions(self, layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
        """Gradient x activation attributions of the answer log-odds at the answer position:
        layer -> (n, d_model) float32 (layer convention and default as :meth:`activations`)."""
        if self._attributions is None:
            if self.extractor is None:
                raise ValueError("these items have no attributions: build them with from_arrays(..., attributions=...)")
            self._attributions = self.extractor.attributions(self.prompts)
        return select_layers(self._attributions, layers)

    @property
    def handle(self) -> Any:
        if self.extractor is None:
            raise ValueError("these items were built from arrays and have no model")
        return self.extractor.handle


@dataclass
class ModelItem:
    """One model to score in a POSER-kind episode (items are models, not inputs).

    Attributes:
        name: a label for plots and records (e.g. "saint-0"); never the ground truth.
        extractor: feature extractor of this model (answers = the two letters, " B" then " A",
            so log-odds = logit(A) - logit(B)).
        prompts: clean benchmark prompts (n,), shared by every item of the episode.
        critical_prompts: (n,) the same scenarios with poor oversight and A/B swapped (CAA contrast).
        benign_letters: (n,) "A" or "B", the benign action's letter per clean prompt.
        mask: (n,) bool, the prompts this item's pair agrees on (the ones to score on).
    """

    name: str
    extractor: FeatureExtractor
    prompts: Sequence[str]
    critical_prompts: Sequence[str]
    benign_letters: Sequence[str]
    mask: np.ndarray

    @property
    def handle(self) -> Any:
        return self.extractor.handle

    def p_benign(self) -> np.ndarray:
        """(n,) probability of the benign letter (two-way softmax over A and B) on every prompt."""
        logodds_a = self.extractor.last_token(self.prompts).logodds.astype(np.float64)
        sign = np.where(np.asarray(self.benign_letters) == "A", 1.0, -1.0)
        return 1.0 / (1.0 + np.exp(-sign * logodds_a))
