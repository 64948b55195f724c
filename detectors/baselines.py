"""Baseline detectors that cannot see the mechanism: ``name_only`` and ``input_only`` (MAD),
``steering_norm`` (POSER).

A MAD test set contains, for every base statement, an Alice record and a Bob record that
differ only in the character's name. A detector could therefore look good by telling the
names apart, without seeing how the model computes its answer. These baselines measure how
far that gets:

* ``name_only`` sees nothing but the model's representation of the name token (its input
  embedding by default, or its residual stream at the name position);
* ``input_only`` sees no model at all: a smoothed n-gram language model of the trusted
  prompts scores how unusual a prompt's text is.

A detector is informative about the mechanism only where it beats both (and the no-quirk
control's floor, see docs/mad.md).

``steering_norm`` is the POSER counterpart: it scores a model by the norm of its steering
vector (or its residual scale), a magnitude that ``activation_noise`` uses to size its noise,
without perturbing anything.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from harness.api import ConfigError, Detector, ModelItem, ModelItems, TextItems, resolve_layer

from .statistics import COVARIANCE_ESTIMATORS, Mahalanobis

# words, single digits (as the tiny models' tokenizer splits them) and single symbols
TOKEN = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")
# what steering_norm can read (see SteeringNorm)
STEERING_QUANTITIES = ("steering", "residual", "ratio")


def name_prefixes(items: TextItems) -> list[str]:
    """Each prompt cut right after its character's name (``template_args.character`` of its record).

    Raises ConfigError when an item has no record naming its character, or the name is not in
    the prompt.
    """
    records = list(items.records)
    if len(records) != len(items.prompts):
        raise ConfigError("detector 'name_only' needs records with template_args.character (the name in the prompt)")
    prefixes = []
    for prompt, record in zip(items.prompts, records):
        name = (record.get("template_args") or {}).get("character")
        if not isinstance(name, str) or name not in prompt:
            raise ConfigError(
                f"detector 'name_only': record {record.get('id', '?')!r} has no template_args.character found in its prompt"
            )
        prefixes.append(prompt[: prompt.rindex(name) + len(name)])
    return prefixes


@dataclass
class NameOnly(Detector):
    """Mahalanobis distance of the character-name token's representation from the trusted names'.

    Each prompt is cut after its character's name and the model's residual stream is read at
    that last (name) position; layer 0 is the name token's input embedding, which depends on
    nothing but the name. Fit: mean and covariance over the trusted items; score = squared
    Mahalanobis distance / d. Higher = more anomalous. A baseline: it can only tell characters
    apart, never see how the model computes its answer.

    Hyperparameters:
        layer: 0 = the name token's input embedding (default); k = block k's output at the name
            position (it has seen the statement before the name too).
        covariance: "ledoit_wolf" (default; the trusted data hold only a few distinct names) or "pinv".
    """

    name = "name_only"
    accepts = (TextItems,)
    layer: int = 0
    covariance: str = "ledoit_wolf"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise ConfigError(f"{self.name}: field 'layer' must be an integer hidden-state index, got {self.layer!r}")
        if self.covariance not in COVARIANCE_ESTIMATORS:
            raise ConfigError(f"{self.name}: field 'covariance' must be one of {COVARIANCE_ESTIMATORS}, got {self.covariance!r}")

    def check_layers(self, n_layers: int) -> None:
        resolve_layer(self.layer, n_layers, f"detector {self.name!r}")

    def features(self, items: TextItems) -> np.ndarray:
        """(n, d) representation of each item's name token."""
        prefixes = TextItems(name_prefixes(items), items.extractor)
        layer = resolve_layer(self.layer, prefixes.n_layers, f"detector {self.name!r}")
        return prefixes.activations([layer])[layer].astype(np.float64)

    def fit(self, trusted: TextItems) -> "NameOnly":
        self.scorer_ = Mahalanobis(self.covariance).fit(self.features(trusted))
        return self

    def score(self, items: TextItems) -> np.ndarray:
        """(n_items,) float; higher = more anomalous."""
        self._check_is_fitted("scorer_")
        return self.scorer_.score(self.features(items))


class NgramModel:
    """Add-``alpha`` unigram model of tokens with a character-bigram model for unseen words."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, texts: Sequence[str]) -> "NgramModel":
        tokens = [t for text in texts for t in TOKEN.findall(text)]
        self.counts_ = Counter(tokens)
        self.total_ = sum(self.counts_.values())
        self.vocabulary_ = len(self.counts_) + 1  # + one slot for every unseen word together
        words = [t for t in self.counts_ for _ in range(self.counts_[t]) if t.isalpha()]
        self.char_bigrams_ = Counter(pair for w in words for pair in zip("^" + w.lower(), w.lower() + "$"))
        self.char_unigrams_ = Counter(a for w in words for a in "^" + w.lower())
        self.n_chars_ = len({c for w in words for c in w.lower()} | {"$"}) + 1
        return self

    def token_nll(self, token: str) -> float:
        """-log P(token): the unigram estimate, and for an unseen word the unseen-word share
        times the word's character-bigram probability."""
        count = self.counts_.get(token, 0)
        denominator = self.total_ + self.alpha * self.vocabulary_
        if count:
            return -math.log((count + self.alpha) / denominator)
        nll = -math.log(self.alpha / denominator)
        if token.isalpha():
            for a, b in zip("^" + token.lower(), token.lower() + "$"):
                nll -= math.log((self.char_bigrams_.get((a, b), 0) + self.alpha)
                                / (self.char_unigrams_.get(a, 0) + self.alpha * self.n_chars_))
        return nll

    def nll(self, text: str) -> float:
        """-log P(text) under the model (sum over its tokens)."""
        return float(sum(self.token_nll(t) for t in TOKEN.findall(text)))


@dataclass
class InputOnly(Detector):
    """Negative log-likelihood of the prompt text under an n-gram model of the trusted prompts.

    No model internals: the prompts are split into words, single digits and symbols; a
    unigram model with add-alpha smoothing is fitted on the trusted prompts, and a word never
    seen there (e.g. a test character's name) gets the unseen-word share times a character-
    bigram probability learned from the trusted words, so a name that looks unlike the trusted
    names scores higher. Score = -log P(prompt). Higher = more anomalous. A baseline for what
    the input text alone gives away.

    Hyperparameters:
        alpha: additive smoothing of both n-gram models (default 1.0).
    """

    name = "input_only"
    accepts = (TextItems,)
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and self.alpha > 0):
            raise ConfigError(f"{self.name}: field 'alpha' must be a positive number, got {self.alpha!r}")

    def fit(self, trusted: TextItems) -> "InputOnly":
        self.model_ = NgramModel(self.alpha).fit(list(trusted.prompts))
        return self

    def score(self, items: TextItems) -> np.ndarray:
        """(n_items,) float; higher = more anomalous."""
        self._check_is_fitted("model_")
        return np.array([self.model_.nll(prompt) for prompt in items.prompts], dtype=np.float64)


@dataclass
class SteeringNorm(Detector):
    """POSER baseline: score = a magnitude of the model's residual stream, with no detector method.

    It reads the norm of the CAA steering vector that ``activation_noise`` scales its noise to
    (the mean last-token residual after block ``layer`` on the contrast prompts minus that on
    the clean prompts, over every prompt of the pair's set), or the model's residual scale
    itself. No perturbation, no answer, no training: if it separates the pairs, a detector that
    leans on the same magnitude can look good without detecting alignment faking.
    Higher = more suspicious (the direction is arbitrary: read an accuracy far below 0.5 as
    signal too).

    Hyperparameters:
        quantity: "steering" (the steering vector's L2 norm; default), "residual" (the mean L2
            norm of the last-token residual after block ``layer`` on the clean prompts: the
            model's residual scale) or "ratio" (steering / residual: the steering norm in units
            of the model's own scale).
        layer: block whose output is read (1-based); null = round(15/40 * n_blocks), at least 1,
            the block ``activation_noise`` perturbs.
    """

    name = "steering_norm"
    accepts = (ModelItems,)
    quantity: str = "steering"
    layer: Optional[int] = None

    def __post_init__(self) -> None:
        if self.quantity not in STEERING_QUANTITIES:
            raise ConfigError(f"{self.name}: field 'quantity' must be one of {STEERING_QUANTITIES}, got {self.quantity!r}")
        if self.layer is not None and (not isinstance(self.layer, int) or isinstance(self.layer, bool)):
            raise ConfigError(f"{self.name}: field 'layer' must be an integer block index or null, got {self.layer!r}")

    def _noise(self):
        from .poser import ActivationNoise

        return ActivationNoise(layer=self.layer)

    def check_layers(self, n_layers: int) -> None:
        self._noise().block_layer(n_layers)

    def fit(self, trusted: object = None) -> "SteeringNorm":
        self.fitted_ = True
        return self

    def magnitudes(self, item: ModelItem) -> dict[str, float]:
        """``steering``, ``residual`` and ``ratio`` of one model item (see the class docstring)."""
        noise = self._noise()
        layer = noise.resolved_layer(item)
        clean = item.extractor.layers(item.prompts, [layer])[layer].astype(np.float64)
        steering = noise.steering_norm(item, layer)
        residual = float(np.linalg.norm(clean, axis=1).mean())
        return {"steering": steering, "residual": residual, "ratio": steering / residual if residual else float("nan")}

    def score(self, items: Sequence[ModelItem]) -> np.ndarray:
        """(n_models,) float: the chosen magnitude; higher = more suspicious."""
        self._check_is_fitted("fitted_")
        values = [self.magnitudes(item) for item in items]
        self.magnitudes_ = {q: np.array([v[q] for v in values]) for q in STEERING_QUANTITIES}
        self.item_names_ = [item.name for item in items]
        return self.magnitudes_[self.quantity].copy()

    def diagnostics(self) -> dict:
        """Per scored item, in item order: all three magnitudes (whichever one is the score)."""
        return {"items": getattr(self, "item_names_", []), "quantity": self.quantity,
                **{q: np.round(v, 8).tolist() for q, v in getattr(self, "magnitudes_", {}).items()}}
