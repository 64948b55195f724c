"""The item types episodes hold and detectors accept: texts of one model, or models.

:class:`TextItems`: n prompts of one model, with lazy access to their features (the shared
:class:`~harness.features.extractor.FeatureExtractor` computes them once and caches them).
:class:`ModelItems`: the models an episode scores, each a :class:`ModelItem`. A task declares
which type its episodes hold (``Task.items``), a detector which types it can score
(``Detector.accepts``); the harness pairs them by type, whatever the task's kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from harness.features.extractor import FeatureExtractor, LastTokenFeatures
from harness.layers import resolve_layers


@dataclass
class TextItems:
    """n inputs of one model.

    Attributes:
        prompts: the n prompt strings (the answer is read at the last token).
        extractor: computes features for this model (None when built from arrays).
        records: the n dataset records (for tags and debugging; never labels for fitting).

    Layers are hidden-state indices (:mod:`harness.layers`); only the layers a detector asks
    for are extracted (and cached, layer by layer), once per items object.
    """

    prompts: Sequence[str]
    extractor: Optional[FeatureExtractor] = None
    records: Sequence[dict] = ()
    _hidden: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _attributions: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _logodds: Optional[np.ndarray] = field(default=None, repr=False)
    _n_layers: Optional[int] = field(default=None, repr=False)

    @classmethod
    def of_model(cls, model: Any, prompts: Sequence[str], answers: Sequence[str],
                 records: Sequence[dict] = ()) -> "TextItems":
        """Items of ``model`` (a :class:`~harness.zoo.store.ModelHandle`), whose answer is read at
        the last prompt token as ``answers = (negative, positive)``, e.g. ``(" False", " True")``;
        log-odds = logit(positive) - logit(negative)."""
        return cls(list(prompts), FeatureExtractor(model, answers=tuple(answers)), list(records))

    @classmethod
    def from_arrays(
        cls, hidden: np.ndarray, logodds: Optional[np.ndarray] = None, attributions: Optional[np.ndarray] = None
    ) -> "TextItems":
        """Items with precomputed features: hidden (n_layers + 1, n, d), logodds (n,),
        attributions (n_layers + 1, n, d) or None (then ``attributions()`` raises)."""
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim != 3:
            raise ValueError(f"hidden must be (n_layers + 1, n, d); got shape {hidden.shape}")
        n = hidden.shape[1]
        logodds = np.zeros(n, np.float32) if logodds is None else np.asarray(logodds, np.float32)
        by_layer = {}
        if attributions is not None:
            attributions = np.asarray(attributions, dtype=np.float32)
            if attributions.shape != hidden.shape:
                raise ValueError(f"attributions must have the shape of hidden {hidden.shape}; got {attributions.shape}")
            by_layer = dict(enumerate(attributions))
        return cls(prompts=[""] * n, _hidden=dict(enumerate(hidden)), _attributions=by_layer, _logodds=logodds,
                   _n_layers=hidden.shape[0] - 1)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_layers(self) -> int:
        """Blocks of the model (hidden states 0..n_layers), from its config: no feature is
        computed and no weight is loaded, so the runner's up-front checks stay cheap."""
        if self._n_layers is None:
            if self.extractor is None:
                raise ValueError("these items have neither features nor an extractor")
            self._n_layers = self.extractor.n_layers
        return self._n_layers

    def _resolve(self, layers: Optional[Sequence[int]]) -> list[int]:
        return resolve_layers(layers, self.n_layers, "items", "layers")

    def activations(self, layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
        """Residual stream at the answer position: hidden-state index -> (n, d_model) float32
        (default: every block output, 1..n_layers; negative indices count from the end)."""
        chosen = self._resolve(layers)
        self._fetch(self._hidden, chosen, lambda missing: self._extractor("features").layers(self.prompts, missing))
        return {layer: self._hidden[layer] for layer in chosen}

    def logodds(self) -> np.ndarray:
        """(n,) answer log-odds (positive minus negative answer logit)."""
        if self._logodds is None:
            self._logodds = self._extractor("features").logodds(self.prompts)
        return self._logodds

    def attributions(self, layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
        """Gradient x activation attributions of the answer log-odds at the answer position:
        layer -> (n, d_model) float32 (layer convention and default as :meth:`activations`)."""
        chosen = self._resolve(layers)
        if self.extractor is None and any(layer not in self._attributions for layer in chosen):
            raise ValueError("these items have no attributions: build them with from_arrays(..., attributions=...)")
        self._fetch(self._attributions, chosen,
                    lambda missing: self._extractor("attributions").attributions(self.prompts, missing))
        return {layer: self._attributions[layer] for layer in chosen}

    def features(self) -> LastTokenFeatures:
        """Every hidden state stacked, (n_layers + 1, n, d), with the log-odds."""
        hidden = self.activations(list(range(self.n_layers + 1)))
        return LastTokenFeatures(np.stack([hidden[layer] for layer in sorted(hidden)]), self.logodds())

    def _fetch(self, memo: dict[int, np.ndarray], layers: list[int], compute: Any) -> None:
        missing = [layer for layer in layers if layer not in memo]
        if missing:
            memo.update(compute(missing))

    def _extractor(self, what: str) -> FeatureExtractor:
        if self.extractor is None:
            raise ValueError(f"these items were built from arrays and have no model to compute {what} with")
        return self.extractor

    @property
    def handle(self) -> Any:
        if self.extractor is None:
            raise ValueError("these items were built from arrays and have no model")
        return self.extractor.handle


class ModelItems(list):
    """The models an episode scores: a list of :class:`ModelItem` (POSER's items)."""


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
        logodds_a = self.extractor.logodds(self.prompts).astype(np.float64)
        sign = np.where(np.asarray(self.benign_letters) == "A", 1.0, -1.0)
        return 1.0 / (1.0 + np.exp(-sign * logodds_a))
