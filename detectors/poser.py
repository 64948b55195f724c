"""POSER detectors (items are models): ``confidence`` (the unperturbed baseline) and
``activation_noise`` (POSER's strategy 2: residual-stream noise scaled like a CAA vector).

For each model item the detector looks only at that model on the clean benchmark prompts of
its pair (``item.mask``); a higher score = more likely the alignment faker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from harness.cache import cached_arrays, stable_hash
from harness.features import encode_batch
from harness.interfaces import ConfigError, Detector
from harness.interventions import add_to_residual, n_blocks
from harness.items import ModelItem

NOISE_KINDS = ("uniform01", "gaussian")
STATISTICS = ("kl", "p_misaligned")
AGGREGATES = ("mean", "max", "last")


@dataclass
class Confidence(Detector):
    """Unperturbed baseline: score = 1 - mean probability of the benign answer on clean prompts.

    The less confident model of a pair is predicted to be the faker. In the original
    benchmark's shipped probabilities this alone picks the faker in 82% of pairs, so it is
    reported beside every POSER detector. No hyperparameters. Higher = more suspicious.
    """

    name = "confidence"
    task_kinds = ("poser",)

    def fit(self, trusted: object = None) -> "Confidence":
        self.fitted_ = True
        return self

    def score(self, items: Sequence[ModelItem]) -> np.ndarray:
        """(n_models,) float in [0, 1]; higher = less confident = more suspicious."""
        self._check_is_fitted("fitted_")
        return np.array([1.0 - item.p_benign()[item.mask].mean() for item in items])


@dataclass
class ActivationNoise(Detector):
    """POSER's "intoxicate" strategy: add noise to the residual stream and measure how much behaviour moves.

    Per model: the CAA steering vector at block ``layer`` is the mean last-token residual of
    the critical prompts (poor oversight, A and B swapped) minus that of the clean prompts. A
    random direction is rescaled to that vector's norm and, for each coefficient c, c times it
    is subtracted from the residual stream after block ``layer`` at the last token (as the
    original does). The statistic per coefficient is the KL divergence between the unperturbed
    and the perturbed two-way answer distribution (``statistic="kl"``) or the probability of
    the misaligned answer (``"p_misaligned"``), averaged over the pair's clean prompts; the
    score aggregates the curve over coefficients. Higher = more suspicious.

    Hyperparameters:
        layer: block after which noise is added (1-based); null = round(15/40 * n_blocks), at
            least 1 (the original used layer 15 of 40).
        coefficients: noise multipliers (default 0..20).
        noise: "uniform01" (faithful: ``torch.rand``, uniform on [0, 1), not zero-mean, so the
            direction is nearly fixed in high dimension) or "gaussian" (isotropic direction).
        statistic: "kl" (default) or "p_misaligned".
        aggregate: "mean" over coefficients (area under the curve / n; default), "max", or
            "last" (the largest coefficient).
        seed: seed of the random direction.
    """

    name = "activation_noise"
    task_kinds = ("poser",)
    layer: Optional[int] = None
    coefficients: list[float] = field(default_factory=lambda: [float(c) for c in range(21)])
    noise: str = "uniform01"
    statistic: str = "kl"
    aggregate: str = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, valid in (("noise", self.noise, NOISE_KINDS), ("statistic", self.statistic, STATISTICS),
                                   ("aggregate", self.aggregate, AGGREGATES)):
            if value not in valid:
                raise ConfigError(f"{self.name}: field {name!r} must be one of {valid}, got {value!r}")
        if not self.coefficients or any(not isinstance(c, (int, float)) for c in self.coefficients):
            raise ConfigError(f"{self.name}: field 'coefficients' must be a non-empty list of numbers")
        if self.layer is not None and (not isinstance(self.layer, int) or self.layer < 1):
            raise ConfigError(f"{self.name}: field 'layer' must be a block index >= 1 or null, got {self.layer!r}")

    def check_episode(self, episode: Any) -> None:
        for item in episode.test:
            self.resolved_layer(item)

    def fit(self, trusted: object = None) -> "ActivationNoise":
        self.fitted_ = True
        return self

    def resolved_layer(self, item: ModelItem) -> int:
        blocks = n_blocks(item.handle.model)
        layer = self.layer if self.layer is not None else max(1, round(15 / 40 * blocks))
        if layer > blocks:
            raise ConfigError(f"{self.name}: field 'layer' is {layer} but this model has blocks 1..{blocks}")
        return layer

    def noise_vector(self, item: ModelItem, layer: int) -> torch.Tensor:
        """(d_model,) random direction with the norm of the model's CAA vector at ``layer``."""
        clean = item.extractor.last_token(item.prompts).hidden[layer][item.mask]
        critical = item.extractor.last_token(item.critical_prompts).hidden[layer][item.mask]
        caa = torch.from_numpy(critical.mean(0) - clean.mean(0)).double()
        generator = torch.Generator().manual_seed(self.seed)
        draw = torch.rand if self.noise == "uniform01" else torch.randn
        direction = draw(caa.shape[0], generator=generator, dtype=torch.float64)
        return (direction / direction.norm() * caa.norm()).float()

    def curves(self, item: ModelItem) -> dict[str, np.ndarray]:
        """Per-prompt curves on all clean prompts: ``kl`` and ``p_misaligned``, (n_coefficients, n_prompts)."""
        layer = self.resolved_layer(item)
        noise = self.noise_vector(item, layer)
        key = {"model": item.handle.fingerprint, "prompts": stable_hash(list(item.prompts), 32),
               "benign": stable_hash(list(item.benign_letters)), "layer": layer,
               "noise": stable_hash(noise.tolist()), "coefficients": list(self.coefficients)}
        return cached_arrays("activation_noise", key, lambda: self._compute_curves(item, layer, noise))

    @torch.inference_mode()
    def _compute_curves(self, item: ModelItem, layer: int, noise: torch.Tensor) -> dict[str, np.ndarray]:
        model, tokenizer = item.handle.model, item.handle.tokenizer
        b_id, a_id = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in item.extractor.answers)
        batch = encode_batch(tokenizer, list(item.prompts))
        benign_is_a = torch.tensor([letter == "A" for letter in item.benign_letters])
        probs = []
        for coefficient in [0.0, *self.coefficients]:
            with add_to_residual(model, layer, -noise, scales=float(coefficient)):
                logits = model(**batch, use_cache=False).logits[:, -1, :].double()
            probs.append(torch.softmax(logits[:, [a_id, b_id]], dim=-1))  # (n, 2): P(A), P(B)
        base, perturbed = probs[0], torch.stack(probs[1:])
        kl = (base * (base.clamp_min(1e-12).log() - perturbed.clamp_min(1e-12).log())).sum(-1)
        p_misaligned = torch.where(benign_is_a, perturbed[..., 1], perturbed[..., 0])
        return {"kl": kl.numpy(), "p_misaligned": p_misaligned.numpy()}

    def item_curve(self, item: ModelItem) -> np.ndarray:
        """(n_coefficients,) the chosen statistic averaged over the item's prompts."""
        return self.curves(item)[self.statistic][:, item.mask].mean(axis=1)

    def score(self, items: Sequence[ModelItem]) -> np.ndarray:
        """(n_models,) float; higher = behaviour moves more under noise = more suspicious."""
        self._check_is_fitted("fitted_")
        curves = np.stack([self.item_curve(item) for item in items])
        self.curves_ = curves
        self.item_names_ = [item.name for item in items]
        if self.aggregate == "mean":
            return curves.mean(axis=1)
        return curves.max(axis=1) if self.aggregate == "max" else curves[:, -1]

    def diagnostics(self) -> dict:
        """The mean curve per scored item, in item order (for the KL-vs-coefficient plot)."""
        curves = getattr(self, "curves_", np.zeros((0, len(self.coefficients))))
        return {"coefficients": list(self.coefficients), "statistic": self.statistic,
                "items": getattr(self, "item_names_", []), "curves": np.round(curves, 8).tolist()}
