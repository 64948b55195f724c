"""Items of a MAD-kind episode: the inputs of one model, with lazy access to their features.

Detectors receive :class:`InputItems` in ``fit`` and ``score`` and ask it for features; the
shared :class:`~harness.features.FeatureExtractor` computes them once and caches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from harness.features import FeatureExtractor, LastTokenFeatures


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

    @classmethod
    def from_arrays(cls, hidden: np.ndarray, logodds: Optional[np.ndarray] = None) -> "InputItems":
        """Items with precomputed features: hidden (n_layers + 1, n, d), logodds (n,)."""
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim != 3:
            raise ValueError(f"hidden must be (n_layers + 1, n, d); got shape {hidden.shape}")
        n = hidden.shape[1]
        logodds = np.zeros(n, np.float32) if logodds is None else np.asarray(logodds, np.float32)
        return cls(prompts=[""] * n, _features=LastTokenFeatures(hidden, logodds))

    def __len__(self) -> int:
        return len(self.prompts)

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

    @property
    def handle(self) -> Any:
        if self.extractor is None:
            raise ValueError("these items were built from arrays and have no model")
        return self.extractor.handle
