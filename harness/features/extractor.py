"""Shared feature extraction: residual stream at the answer position and answer log-odds, cached.

One batched forward pass per batch of prompts, under ``torch.inference_mode()``, reads the
residual stream at the last prompt token (where the model emits its answer) of the layers
asked for, and the log-odds of the positive vs the negative answer token. Only the last
position's logits are computed (``logits_to_keep=1``) and only the two answer columns are
kept: never full-vocabulary logits of every position. Each layer is cached in its own file
(safetensors) under a key of (model fingerprint, prompts, answer words, dtype, extractor
version, layer). A pass stores every layer it computed, not only those asked for (up to
:data:`FEATURE_PASS_BYTES`), so the prompts are run once whichever layers are asked for later;
detectors never recompute activations or run hooks of their own.

Attributions (:meth:`FeatureExtractor.attributions`) are computed with gradients enabled but
the model's parameters frozen: the gradient of the answer log-odds with respect to the
requested layers' residual streams only, times that activation (elementwise), in
micro-batches, cached per layer under a separate key.

Storage: float32, or float16 for models of at least
:data:`harness.runtime.FLOAT16_STORAGE_PARAMS` parameters (``storage_dtype`` overrides);
arrays are returned as float32 either way.

Layer convention (:mod:`harness.layers`): hidden-state index 0 is the embedding output,
``i`` the output of block ``i`` (``transformers``' ``hidden_states``; the last one has the
final norm applied), negative indices count from the end.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from harness.cache import CacheCorruption, cache_root, load_verified_arrays, stable_hash, write_arrays
from harness.runtime import FLOAT16_STORAGE_PARAMS, with_batch_backoff
from harness.runtime import current as current_runtime
from harness.zoo.store import ModelHandle

if TYPE_CHECKING:
    from harness.zoo.tokenizer import AnswerTokens

logger = logging.getLogger(__name__)

# torch, transformers and the tokenizer helpers are imported where the model runs, so that
# loading the plugins (``harness list``) does not pay for them

EXTRACTOR_VERSION = "1"
STORAGE_DTYPES = ("float32", "float16")


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
    """Computes and caches the answer-position features of one model, layer by layer.

    Args:
        handle: the model (directory + fingerprint).
        answers: (negative, positive) answer words; log-odds = positive - negative.
        batch_size: prompts per forward pass; default: the run's ``--batch-size``
            (:mod:`harness.runtime`), which with ``auto`` halves on out-of-memory.
        use_cache: read and write the on-disk cache.
        progress: show a tqdm bar while extracting.
        storage_dtype: ``float32`` or ``float16`` on disk; default by model size (see module).
    """

    def __init__(
        self,
        handle: ModelHandle,
        answers: Sequence[str] = (" False", " True"),
        batch_size: Optional[int] = None,
        use_cache: bool = True,
        progress: bool = True,
        storage_dtype: Optional[str] = None,
    ) -> None:
        if storage_dtype is not None and storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
        self.handle = handle
        self.answers = tuple(answers)
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.progress = progress
        self.storage_dtype = storage_dtype
        self._answer_tokens: Optional["AnswerTokens"] = None

    # -- layout and keys --------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Blocks of the model (hidden-state indices run 0..n_layers), from its config."""
        return self.handle.n_layers

    def _storage(self) -> str:
        if self.storage_dtype is not None:
            return self.storage_dtype
        return "float16" if self.handle.n_parameters >= FLOAT16_STORAGE_PARAMS else "float32"

    def _key(self, prompts: Sequence[str], kind: str) -> dict:
        key = {
            "version": EXTRACTOR_VERSION,
            "model": self.handle.fingerprint,
            "prompts": stable_hash(list(prompts), 32),
            "answers": self.answers,
            **current_runtime().key(),
            **({"answer_tokens": self.answer_tokens().describe()} if self.answer_tokens().prefix else {}),
        }
        if self._storage() != "float32":
            key["storage"] = self._storage()
        if kind != "last_token":  # the last-token key predates kinds; keep its files valid
            key["kind"] = kind
        return key

    def cache_path(self, prompts: Sequence[str], kind: str = "last_token", layer: Optional[int] = None) -> Path:
        """Cache file of one layer (or, with ``layer=None``, the log-odds) of one feature
        ``kind`` ("last_token" or "attributions") of ``prompts``."""
        part = "logodds" if layer is None else f"layer{layer}"
        return cache_root() / "features" / f"{stable_hash(self._key(prompts, kind))}-{part}.safetensors"

    def answer_tokens(self) -> "AnswerTokens":
        """How the answers are read from this model's tokenizer (see
        :func:`harness.zoo.tokenizer.answer_tokens`); loads the tokenizer only."""
        from harness.zoo.tokenizer import answer_tokens

        if self._answer_tokens is None:
            self._answer_tokens = answer_tokens(self.handle.tokenizer, self.answers)
        return self._answer_tokens

    # -- public API -------------------------------------------------------------------------
    def last_token(self, prompts: Sequence[str], layers: Optional[Sequence[int]] = None) -> LastTokenFeatures:
        """Features of ``prompts`` (from the cache when present): every hidden state stacked, as
        the detectors that need all of them use; :meth:`layers` reads only some."""
        every = list(range(self.n_layers + 1))
        hidden = self.layers(prompts, every)
        return LastTokenFeatures(np.stack([hidden[layer] for layer in every]), self.logodds(prompts))

    def layers(self, prompts: Sequence[str], layers: Sequence[int]) -> dict[int, np.ndarray]:
        """Hidden-state index -> (n, d) float32 residual stream at the answer position, for the
        requested (non-negative) layers only; missing layers are computed in one pass."""
        return self._cached(prompts, "last_token", list(layers))[0]

    def logodds(self, prompts: Sequence[str]) -> np.ndarray:
        """(n,) float32 answer log-odds (positive minus negative answer logit)."""
        return self._cached(prompts, "last_token", [])[1]

    def attributions(self, prompts: Sequence[str], layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
        """Gradient x activation attributions: hidden-state index -> (n, d_model) float32.

        For layer l and item i, ``d logodds_i / d h_l[i, -1] * h_l[i, -1]`` elementwise, where
        ``h_l[i, -1]`` is the residual stream of layer l at the answer position. Summed over d
        it is the first-order (linearised) contribution of that layer's activation to the
        log-odds. Default: every hidden state.
        """
        chosen = list(range(self.n_layers + 1)) if layers is None else list(layers)
        return self._cached(prompts, "attributions", chosen)[0]

    def compute(self, prompts: Sequence[str], layers: Optional[Sequence[int]] = None) -> LastTokenFeatures:
        """Run the model over ``prompts``; no cache (``layers`` default: every hidden state)."""
        chosen = list(range(self.n_layers + 1)) if layers is None else list(layers)
        hidden, logodds = self._run(prompts, chosen, gradients=False)
        return LastTokenFeatures(np.stack([hidden[layer] for layer in chosen]), logodds)

    # -- cache --------------------------------------------------------------------------------
    def _cached(self, prompts: Sequence[str], kind: str, layers: list[int]) -> tuple[dict[int, np.ndarray], np.ndarray]:
        bad = [layer for layer in layers if not 0 <= layer <= self.n_layers]
        if bad:
            raise IndexError(f"layer {bad[0]} out of range: this model has hidden states 0..{self.n_layers}")
        out: dict[int, np.ndarray] = {}
        missing = []
        for layer in dict.fromkeys(layers):
            arrays = self._read(self.cache_path(prompts, kind, layer))
            if arrays is None:
                missing.append(layer)
            else:
                out[layer] = arrays["x"].astype(np.float32)
        logodds_path = self.cache_path(prompts, "last_token")
        logodds_arrays = self._read(logodds_path)
        if missing or logodds_arrays is None:
            computed = missing if kind == "attributions" else self._pass_layers(prompts, missing, set(out))
            hidden, logodds = self._run(prompts, computed, gradients=kind == "attributions")
            for layer in computed:
                stored = hidden[layer].astype(self._storage())
                self._write(self.cache_path(prompts, kind, layer), {"x": stored})
                if layer in missing:
                    out[layer] = stored.astype(np.float32)  # what a later read returns: no cache-dependent numbers
            if logodds_arrays is None:
                self._write(logodds_path, {"logodds": logodds})
        else:
            logodds = logodds_arrays["logodds"]
        return {layer: out[layer] for layer in layers}, logodds

    def _pass_layers(self, prompts: Sequence[str], missing: list[int], cached: set[int]) -> list[int]:
        """The layers a forward pass over ``prompts`` stores: every hidden state not cached yet.

        The pass computes all of them anyway (``output_hidden_states``), and a MAD episode asks
        for its test prompts' log-odds (the validity gate) before any detector asks for a layer:
        storing only what was asked ran the model over the same prompts twice. A stack larger
        than :data:`FEATURE_PASS_BYTES` (a large model over many prompts) keeps to ``missing``.
        """
        every = [layer for layer in range(self.n_layers + 1) if layer not in cached and layer not in missing]
        stack_bytes = (self.n_layers + 1) * len(prompts) * self.handle.d_model * 4
        if not self.use_cache or stack_bytes > FEATURE_PASS_BYTES:
            return missing
        return sorted(missing + every)

    def _read(self, path: Path) -> Optional[dict[str, np.ndarray]]:
        if not self.use_cache or not path.exists():
            return None
        try:
            return load_verified_arrays(path)
        except CacheCorruption as exc:
            logger.warning("damaged cache file, recomputing: %s", exc)
            path.unlink(missing_ok=True)
            return None

    def _write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        if self.use_cache:
            write_arrays(path, arrays)

    # -- the model ------------------------------------------------------------------------------
    def _run(self, prompts: Sequence[str], layers: list[int], gradients: bool) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """One pass over ``prompts`` in batches of similar length: the requested layers at the
        answer position (or their attributions) and the answer log-odds."""
        if not len(prompts):
            raise ValueError("no prompts given")
        runtime = current_runtime()
        batch_size = self.batch_size or runtime.initial_batch_size()
        auto = self.batch_size is None and runtime.batch_size == "auto"
        if gradients:  # backward passes keep every block's activations: smaller batches
            batch_size = max(1, batch_size // ATTRIBUTION_BATCH_DIVISOR)
            if auto:
                longest = max(len(ids) for ids in self.handle.tokenizer(list(prompts))["input_ids"])
                longest += len(self.answer_tokens().prefix)
                batch_size = min(batch_size, attribution_batch_cap(self.handle.model, longest))
        what = f"{'attributions' if gradients else 'feature extraction'} of {self.handle.path.name}"
        return with_batch_backoff(lambda size: self._run_batches(prompts, layers, gradients, size), batch_size,
                                  what, auto=auto)

    def _run_batches(self, prompts: Sequence[str], layers: list[int], gradients: bool,
                     batch_size: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
        import torch
        from tqdm.auto import tqdm

        from harness.zoo.tokenizer import encode_batch

        model, tokenizer = self.handle.model, self.handle.tokenizer
        device = self.handle.input_device
        answer = self.answer_tokens()
        negative, positive = answer.negative, answer.positive
        hidden: dict[int, np.ndarray] = {}
        logodds = np.empty(len(prompts), dtype=np.float32)
        batches = length_sorted_batches(tokenizer, prompts, batch_size)
        desc = "extracting attributions" if gradients else "extracting features"
        with frozen_parameters(model) if gradients else torch.inference_mode():
            for index in tqdm(batches, desc=desc, disable=not self.progress, leave=False):
                batch = encode_batch(tokenizer, [prompts[i] for i in index])
                if answer.prefix:  # the answers' shared first tokens follow the prompt
                    batch = with_suffix(batch, answer.prefix)
                batch = {k: v.to(device) for k, v in batch.items()}
                if gradients:  # the graph starts at the embeddings: gradients w.r.t. activations only
                    embeddings = model.get_input_embeddings()(batch.pop("input_ids"))
                    batch["inputs_embeds"] = embeddings.detach().requires_grad_(True)
                with torch.enable_grad() if gradients else contextlib.nullcontext():
                    out = model(**batch, output_hidden_states=True, use_cache=False, **last_logits_only(model))
                    final = out.logits[:, -1, :]
                    odds = (final[:, positive] - final[:, negative]).float()
                    states = [out.hidden_states[layer] for layer in layers]
                    if gradients and layers:
                        grads = torch.autograd.grad(odds.sum(), states)
                        rows = [(g[:, -1, :] * h[:, -1, :]).float() for g, h in zip(grads, states)]
                    else:
                        rows = [h[:, -1, :].float() for h in states]
                logodds[index] = odds.detach().cpu().numpy()
                for layer, row in zip(layers, rows):
                    if layer not in hidden:
                        hidden[layer] = np.empty((len(prompts), row.shape[-1]), dtype=np.float32)
                    hidden[layer][index] = row.detach().cpu().numpy()
                del out, states, rows
        return hidden, logodds


def with_suffix(batch: dict[str, Any], suffix: Sequence[int]) -> dict[str, Any]:
    """A left-padded batch with the same token ids appended to every row (the answers' shared
    prefix): the last position then predicts the first token where the answers differ."""
    import torch

    rows = batch["input_ids"].shape[0]
    extra = torch.tensor(list(suffix), dtype=batch["input_ids"].dtype).expand(rows, -1)
    out = dict(batch)
    out["input_ids"] = torch.cat([batch["input_ids"], extra], dim=1)
    out["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(extra)], dim=1)
    if "position_ids" in batch:
        last = batch["position_ids"][:, -1:]
        out["position_ids"] = torch.cat([batch["position_ids"], last + torch.arange(1, len(suffix) + 1)], dim=1)
    return out


# a forward pass stores every hidden state at the answer position while their float32 stack over
# the pass's prompts stays under this (SmolLM2-135M, 1,300 prompts: 93 MB)
FEATURE_PASS_BYTES = 1 << 30

# the parameters of a model whose attributions are computed never need gradients: freezing
# them keeps autograd from allocating parameter gradients; backward passes keep activations,
# so attribution batches are this many times smaller than forward-only ones
ATTRIBUTION_BATCH_DIVISOR = 4
# and at most this many bytes of kept activations per batch (--batch-size auto): on a CPU an
# out-of-memory error may never come (the machine swaps or the process is killed), so the bound
# is set before the pass, not found by backing off
ATTRIBUTION_BATCH_BYTES = 1 << 30


def attribution_batch_cap(model: Any, n_tokens: int) -> int:
    """The most prompts of ``n_tokens`` tokens whose backward pass keeps at most
    :data:`ATTRIBUTION_BATCH_BYTES` of activations. Per token and decoder block a backward pass
    keeps about 16 vectors of the model's width and 4 of its MLP's (norms, projections,
    attention, the gated MLP): measured on SmolLM2-135M (30 blocks, width 576, MLP 1536), 64
    prompts of about 30 tokens peaked 3.8 GB above the loaded model, 66 KB per token and block
    against this estimate's 61. The tiny models' batches stay far below the bound."""
    config = model.config
    width = config.hidden_size
    mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * width
    dtype = next(model.parameters()).dtype
    per_prompt = n_tokens * config.num_hidden_layers * (16 * width + 4 * mlp) * dtype.itemsize
    return max(1, ATTRIBUTION_BATCH_BYTES // per_prompt)


@contextlib.contextmanager
def frozen_parameters(model: Any) -> Iterator[None]:
    """Parameters with ``requires_grad=False`` inside, as they were afterwards."""
    previous = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in previous:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in previous:
            parameter.requires_grad_(flag)


def last_logits_only(model: Any) -> dict[str, Any]:
    """``{"logits_to_keep": 1}`` where the model's forward takes it (transformers >= 4.50
    causal LMs): logits of the last position only, not of every position."""
    import inspect

    forward = inspect.signature(type(model).forward).parameters
    if "logits_to_keep" in forward:
        return {"logits_to_keep": 1}
    if "num_logits_to_keep" in forward:
        return {"num_logits_to_keep": 1}
    return {}
