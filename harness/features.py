"""Shared feature extraction: residual stream at the answer position and answer log-odds, cached.

One batched forward pass per batch of prompts, under ``torch.inference_mode()``, returns
every layer's residual stream at the last prompt token (where the model emits its answer)
and the log-odds of the positive vs the negative answer token. Results are cached on disk
(safetensors) under a key of (model fingerprint, prompts, answer words, extractor version),
so detectors never recompute activations and never run hooks of their own.

Attributions (:meth:`FeatureExtractor.attributions`) are computed the same way with gradients
enabled: gradient of the answer log-odds with respect to each layer's residual stream at the
answer position, times that activation (elementwise), cached under a separate key.

Layer convention: layer 0 is the embedding output, layer ``i`` the output of block ``i``
(``transformers``' ``hidden_states``; the last one has the final norm applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from harness.cache import arrays_at, cache_root, stable_hash
from harness.zoo.store import ModelHandle

# torch, transformers and the tokenizer helpers are imported where the model runs, so that
# loading the plugins (``harness list``) does not pay for them

EXTRACTOR_VERSION = "1"


@dataclass(frozen=True)
class LastTokenFeatures:
    """Features of n prompts.

    hidden: (n_layers + 1, n, d_model) float32, residual stream at the last prompt token.
    logodds: (n,) float32, logit(positive answer) - logit(negative answer) at that token.
    """

    hidden: np.ndarray
    logodds: np.ndarray

    @property
    def n_layers(self) -> int:
        return self.hidden.shape[0] - 1

    def layers(self, layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
        """Per-layer (n, d) arrays; default: every block output (layers 1..n_layers)."""
        return select_layers(self.hidden, layers)


def select_layers(stacked: np.ndarray, layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
    """(n_layers + 1, n, d) -> {layer: (n, d)}; default: every block output (layers 1..n_layers).

    Negative indices count from the end; keys are the non-negative layer indices.
    """
    n_layers = stacked.shape[0] - 1
    chosen = range(1, n_layers + 1) if layers is None else layers
    out = {}
    for layer in chosen:
        if not -stacked.shape[0] <= layer < stacked.shape[0]:
            raise IndexError(f"layer {layer} out of range: this model has layers 0..{n_layers}")
        out[int(layer) % stacked.shape[0]] = stacked[layer]
    return out


def length_sorted_batches(tokenizer, prompts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Index batches of prompts of similar token length (less padding, same results)."""
    lengths = np.array([len(ids) for ids in tokenizer(list(prompts))["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class FeatureExtractor:
    """Computes and caches :class:`LastTokenFeatures` for one model.

    Args:
        handle: the model (directory + fingerprint).
        answers: (negative, positive) answer words; log-odds = positive - negative.
        batch_size: prompts per forward pass.
        use_cache: read and write the on-disk cache.
        progress: show a tqdm bar while extracting.
    """

    def __init__(
        self,
        handle: ModelHandle,
        answers: Sequence[str] = (" False", " True"),
        batch_size: int = 256,
        use_cache: bool = True,
        progress: bool = True,
    ) -> None:
        self.handle = handle
        self.answers = tuple(answers)
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.progress = progress

    def cache_path(self, prompts: Sequence[str], kind: str = "last_token") -> Path:
        """Cache file of one feature ``kind`` ("last_token" or "attributions") of ``prompts``."""
        key = {
            "version": EXTRACTOR_VERSION,
            "model": self.handle.fingerprint,
            "prompts": stable_hash(list(prompts), 32),
            "answers": self.answers,
        }
        if kind != "last_token":  # the last-token key predates kinds; keep its files valid
            key["kind"] = kind
        return cache_root() / "features" / f"{stable_hash(key)}.safetensors"

    def last_token(self, prompts: Sequence[str]) -> LastTokenFeatures:
        """Features of ``prompts`` (from the cache when present)."""
        def compute() -> dict[str, np.ndarray]:
            features = self.compute(prompts)
            return {"hidden": features.hidden, "logodds": features.logodds}

        arrays = arrays_at(self.cache_path(prompts), compute, self.use_cache)
        return LastTokenFeatures(arrays["hidden"], arrays["logodds"])

    def compute(self, prompts: Sequence[str]) -> LastTokenFeatures:
        """Run the model over ``prompts`` in batches; no cache."""
        import torch

        with torch.inference_mode():
            return self._compute(prompts)

    def _compute(self, prompts: Sequence[str]) -> LastTokenFeatures:
        import torch
        from tqdm.auto import tqdm

        from harness.zoo.tokenizer import answer_token_ids, encode_batch

        model, tokenizer = self.handle.model, self.handle.tokenizer
        negative, positive = answer_token_ids(tokenizer, self.answers)
        hidden: Optional[np.ndarray] = None
        logodds = np.empty(len(prompts), dtype=np.float32)
        batches = length_sorted_batches(tokenizer, prompts, self.batch_size)
        for index in tqdm(batches, desc="extracting features", disable=not self.progress, leave=False):
            batch = encode_batch(tokenizer, [prompts[i] for i in index])
            out = model(**batch, output_hidden_states=True, use_cache=False)
            last = torch.stack([h[:, -1, :] for h in out.hidden_states]).float().cpu().numpy()
            if hidden is None:
                hidden = np.empty((last.shape[0], len(prompts), last.shape[2]), dtype=np.float32)
            hidden[:, index] = last
            final = out.logits[:, -1, :].float()
            logodds[index] = (final[:, positive] - final[:, negative]).cpu().numpy()
        assert hidden is not None, "no prompts given"
        return LastTokenFeatures(hidden, logodds)

    def attributions(self, prompts: Sequence[str]) -> np.ndarray:
        """Gradient x activation attributions of ``prompts`` (from the cache when present).

        Returns (n_layers + 1, n, d_model) float32: for layer l and item i,
        ``d logodds_i / d h_l[i, -1] * h_l[i, -1]`` elementwise, where ``h_l[i, -1]`` is the
        residual stream of layer l at the answer position (same layer convention as
        :class:`LastTokenFeatures`). Summed over d it is the first-order (linearised)
        contribution of that layer's activation to the log-odds.
        """
        def compute() -> dict[str, np.ndarray]:
            return {"attributions": self.compute_attributions(prompts)}

        return arrays_at(self.cache_path(prompts, kind="attributions"), compute, self.use_cache)["attributions"]

    def compute_attributions(self, prompts: Sequence[str]) -> np.ndarray:
        """Run the model with gradients over ``prompts`` in batches; no cache. See :meth:`attributions`.

        Items of a batch do not interact (attention mask, per-item position ids), so one
        backward pass of the batch's summed log-odds gives every item's own gradient.
        Parameter gradients are never accumulated (``torch.autograd.grad`` on the hidden states only).
        """
        import torch
        from tqdm.auto import tqdm

        from harness.zoo.tokenizer import answer_token_ids, encode_batch

        model, tokenizer = self.handle.model, self.handle.tokenizer
        negative, positive = answer_token_ids(tokenizer, self.answers)
        attributions: Optional[np.ndarray] = None
        batches = length_sorted_batches(tokenizer, prompts, self.batch_size)
        with torch.enable_grad():
            for index in tqdm(batches, desc="extracting attributions", disable=not self.progress, leave=False):
                batch = encode_batch(tokenizer, [prompts[i] for i in index])
                out = model(**batch, output_hidden_states=True, use_cache=False)
                final = out.logits[:, -1, :].float()
                logodds = final[:, positive] - final[:, negative]
                hidden = list(out.hidden_states)
                grads = torch.autograd.grad(logodds.sum(), hidden)
                last = torch.stack([(g[:, -1, :] * h[:, -1, :]).float() for g, h in zip(grads, hidden)])
                last = last.detach().cpu().numpy()
                if attributions is None:
                    attributions = np.empty((last.shape[0], len(prompts), last.shape[2]), dtype=np.float32)
                attributions[:, index] = last
        assert attributions is not None, "no prompts given"
        return attributions
