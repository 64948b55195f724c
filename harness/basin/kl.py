"""KL functions of a causal LM under parameter perturbation, for the multiplier search.

:class:`CausalLMKL` holds a fixed evaluation batch (left-padded prompts), the model's
unperturbed next-token log-probabilities at the evaluation positions (computed once), and
perturbation directions. It measures ``KL(p_θ || p_θ')`` of the next-token distribution,
averaged over evaluation positions:

* :meth:`CausalLMKL.per_direction` -- ``scales (n_dirs,) -> (n_dirs,)``: KL averaged over
  every evaluation position of every example, at ``θ + s_i w_i``;
* :meth:`CausalLMKL.per_example` -- ``scales (n_dirs, n_examples) -> (n_dirs, n_examples)``:
  each example's own KL at its own scale, all (direction, example) pairs in lock-step
  batched hooked passes.

Both accept NaN scales for entries that need no evaluation (already converged) and return
NaN there; that is the contract :func:`harness.basin.search.find_multipliers` relies on.
The model is called with ``position_ids = cumsum(mask) - 1``. Forward batches hold rows of
one prompt length where there are enough of them (:meth:`CausalLMKL._batches`): with the
padding columns dropped such a batch needs no attention mask, so it runs no padded tokens and
takes the unmasked causal attention path (about 20% less time per row than mixed lengths).

Directions come from a :class:`~harness.basin.directions.SubsetDirections` (seeded, generated
on demand in bounded memory) or a dense ``(n_dirs, D)`` tensor. Inputs are moved to the
model's device batch by batch; the unperturbed log-probs and the KL arithmetic stay on that
device in float64, and the KLs returned are CPU tensors.

When only the last position is evaluated (the default), the last decoder block's attention
output projection and MLP run on the last position alone (:func:`last_position_only`): their
outputs at earlier positions only feed positions whose logits are discarded. This is checked
against a full forward pass when the KL object is built and switched off if it does not match.

When every perturbed parameter lies in decoder block ``k > 0`` or later, the blocks before it
compute the same thing at every scale: their output (block ``k``'s input) is computed once per
example and each evaluation runs blocks ``k..`` only (:func:`blocks_from`). On a 30-block model
perturbed in its last block that is most of a forward pass saved. It is checked the same way
(against full passes on a few rows) and switched off where it does not match, e.g. for a model
that adds position embeddings to ``inputs_embeds`` (GPT-2).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional, Union

import torch
from torch import nn

from harness.basin.directions import SubsetDirections, as_subset_directions
from harness.basin.hooked import HookedPerturbation
from harness.basin.perturb import ParameterSubset, perturbed_weights
from harness.features.interventions import block_list, block_list_owner

logger = logging.getLogger(__name__)

MODES = ("auto", "sequential", "stacked")


def resolve_mode(mode: str, model: nn.Module) -> str:
    """``"auto"`` -> ``"stacked"`` on an accelerator (a wide batch costs little more than a narrow
    one there), ``"sequential"`` on the CPU (where a hooked pass costs about two plain ones)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    device = next(model.parameters()).device
    return "sequential" if device.type == "cpu" else "stacked"


def _last_block_tails(model: nn.Module) -> list[nn.Module]:
    """Modules of the last decoder block that act position-wise after attention mixed the
    positions: the attention output projection and the MLP (Llama and GPT-2 naming)."""
    try:
        block = block_list(model)[-1]
    except ValueError:
        return []
    tails = []
    for path in ("self_attn.o_proj", "attn.c_proj", "mlp"):
        module: Optional[nn.Module] = block
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Module):
            tails.append(module)
    return tails


@contextlib.contextmanager
def last_position_only(modules: list[nn.Module]) -> Iterator[None]:
    """Within the block, ``modules`` see only the last position of their input.

    Their outputs become ``(batch, 1, ...)`` and broadcast against the block's residual
    ``(batch, seq, ...)``: positions other than the last get wrong hidden states, which is
    harmless when only the last position's logits are read (``logits_to_keep=1``). In the last
    block of a small transformer the MLP and the output projection are most of the block's work,
    so a forward pass costs noticeably less (about 15% for a 2-block model).
    """
    def keep_last(module, args):
        return (args[0][:, -1:], *args[1:])

    handles = [m.register_forward_pre_hook(keep_last) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Captured(Exception):
    """Raised by the capture hook to end a forward pass once block k's input is recorded."""


def first_perturbed_block(model: nn.Module, subset: ParameterSubset) -> int:
    """Index of the first decoder block holding a perturbed parameter; 0 when a perturbed
    parameter lies outside every block (embeddings, final norm, a tied head) or the blocks
    cannot be found: then no prefix can be reused."""
    try:
        blocks = block_list(model)
    except ValueError:
        return 0
    owner = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    indices = [owner.get(id(p)) for p in subset.params]
    if not indices or any(i is None for i in indices):
        return 0
    return min(indices)


@contextlib.contextmanager
def blocks_from(model: nn.Module, start: int) -> Iterator[None]:
    """Within the context the model has only decoder blocks ``start..``: called with
    ``inputs_embeds`` = block ``start``'s input it computes what the whole model computes (for
    architectures that feed ``inputs_embeds`` straight into the first block). The modules are
    the model's own, so hooks on them still fire."""
    parent, attr = block_list_owner(model)
    blocks = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(blocks)[start:]))
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


class CausalLMKL:
    """Next-token KL of a Hugging Face causal LM between θ and θ + s w, on a fixed batch.

    input_ids, attention_mask: ``(n_examples, seq)`` left-padded prompts; subset: the
    perturbed parameters; directions: ``(n_dirs, D)`` perturbation vectors ``w_i``;
    position_mask: optional ``(n_examples, seq)`` bool of evaluation positions (default: the
    last position of each row, the answer position of left-padded prompts); batch_size: rows
    per forward pass; mode: how :meth:`per_direction` runs many directions --
    ``"sequential"`` (weights perturbed in place, one direction at a time, plain passes; the
    weights are restored bitwise from a saved copy after each), ``"stacked"`` (the directions
    of one lock-step round share hooked passes as rows, as per-example searches do) or
    ``"auto"`` (stacked on an accelerator, sequential on the CPU). directions: ``(n_dirs, D)``
    tensor or :class:`SubsetDirections`.

    reuse_prefix: compute the unperturbed blocks before the first perturbed one once per
    example (module docstring); ``prefix_block`` is that block's index, 0 when not used.

    Counters: ``n_forward`` (model calls) and ``n_rows`` (example rows processed).
    """

    def __init__(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        subset: ParameterSubset,
        directions: Union[torch.Tensor, SubsetDirections],
        position_mask: Optional[torch.Tensor] = None,
        batch_size: int = 256,
        mode: str = "sequential",
        reuse_prefix: bool = True,
    ) -> None:
        self.model = model
        self.mode = resolve_mode(mode, model)
        self.device = next(model.parameters()).device
        self.input_ids = input_ids
        self.attention_mask = attention_mask.long()
        self.position_ids = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.last_only = position_mask is None
        self.position_mask = position_mask.bool() if position_mask is not None else None
        self.subset = subset
        self.directions = as_subset_directions(subset, directions)
        self.batch_size = int(batch_size)
        self.n_forward = 0
        self.n_rows = 0
        self._last_full: dict[int, tuple[float, torch.Tensor]] = {}  # direction -> (scale, row KLs)
        n = input_ids.shape[0]
        # Rows whose mask is zeros then ones (left padding) need no mask once their padding
        # columns are dropped; batches of equal-length rows then run maskless (is_causal
        # attention, no padded tokens: ~25% cheaper per row on CPU). Other rows sort last.
        seq = input_ids.shape[1]
        lengths = self.attention_mask.sum(-1)
        compact = (self.attention_mask.bool() == (torch.arange(seq) >= seq - lengths[:, None])).all(-1)
        self._length_key = torch.where(compact, lengths, torch.full_like(lengths, seq + 1))
        # per-example count of evaluation positions (weights of the position average)
        self.n_positions = (torch.ones(n) if self.last_only else self.position_mask.sum(-1).double()).double()
        self._tails: list[nn.Module] = []
        self.prefix_block = 0
        self._prefix: Optional[torch.Tensor] = None
        if self.last_only:
            self._tails = self._checked_tails()
        if reuse_prefix:
            self._use_prefix(first_perturbed_block(model, subset))
        self.base_logp = torch.cat([self._logprobs(torch.arange(s, min(s + self.batch_size, n)))
                                    for s in range(0, n, self.batch_size)])

    @property
    def n_examples(self) -> int:
        return self.input_ids.shape[0]

    # ---------------------------------------------------------------------------------------

    def _checked_tails(self) -> list[nn.Module]:
        """The modules :func:`last_position_only` may truncate, if that leaves the last
        position's logits unchanged on a few rows (else none: an unfamiliar architecture)."""
        tails = _last_block_tails(self.model)
        if not tails:
            return []
        rows = torch.arange(min(8, self.n_examples))
        full = self._logprobs(rows)
        self._tails = tails
        cut = self._logprobs(rows)
        self.n_forward -= 2  # the check is not part of the search
        self.n_rows -= 2 * len(rows)
        if not torch.allclose(cut, full, rtol=1e-5, atol=1e-6):
            logger.info("basin KL: last-position truncation changes the logits of %s; not used",
                        type(self.model).__name__)
            return []
        return tails

    def _capture_prefix(self, start: int) -> torch.Tensor:
        """Block ``start``'s input for every example: ``(n_examples, seq, d_model)`` on the CPU.
        Columns a capture batch dropped are padding of all its rows and stay zero; a later batch
        that keeps them for another row masks them out for these."""
        block = block_list(self.model)[start]
        prefix: Optional[torch.Tensor] = None
        captured: list[torch.Tensor] = []

        def capture(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured.append(hidden.detach().to("cpu", copy=True))
            raise _Captured

        handle = block.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            for batch in self._batches(torch.arange(self.n_examples)):
                first = self._first_column(batch)
                try:
                    self._forward(batch, first)
                except _Captured:
                    pass
                hidden = captured.pop()
                if prefix is None:
                    prefix = torch.zeros(self.n_examples, self.input_ids.shape[1], hidden.shape[-1], dtype=hidden.dtype)
                prefix[batch, first:] = hidden
        finally:
            handle.remove()
        assert prefix is not None
        return prefix

    def _use_prefix(self, start: int) -> None:
        """Reuse block ``start``'s input (``start > 0``) if, on a few rows, blocks ``start..`` run
        from it give the full passes' log-probs."""
        if start <= 0 or self.n_examples == 0:
            return
        rows = torch.arange(min(8, self.n_examples))
        full = self._logprobs(rows)
        try:
            self._prefix, self.prefix_block = self._capture_prefix(start), start
            cut = self._logprobs(rows)
        except Exception as exc:  # an architecture whose forward does not take inputs_embeds like this
            logger.info("basin KL: reusing the blocks before %d failed on %s (%s); not used",
                        start, type(self.model).__name__, exc)
            cut = None
        self.n_forward -= 1 + (cut is not None)  # the check is not part of the search
        self.n_rows -= (1 + (cut is not None)) * len(rows)
        if cut is None or not torch.allclose(cut, full, rtol=1e-5, atol=1e-6):
            if cut is not None:
                logger.info("basin KL: blocks %d.. from cached inputs change the logits of %s; not used",
                            start, type(self.model).__name__)
            self._prefix, self.prefix_block = None, 0

    def _batches(self, rows: torch.Tensor, dirs: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Split ``rows`` into forward-pass batches: positions into ``rows``, each batch of
        at most ``batch_size`` rows of one length (lengths with fewer than ``min_rows`` rows in
        this call are merged into a neighbour, padded: an extra model call costs more than a
        little padding), ordered by direction within a batch when ``dirs`` is given."""
        min_rows = 64
        key = self._length_key[rows]
        values, counts = torch.unique(key, return_counts=True)
        group_of = torch.zeros(int(values.max()) + 1, dtype=torch.long)  # length key -> group
        group, size = 0, 0
        for v, c in zip(values.tolist(), counts.tolist()):
            if size >= min_rows:
                group, size = group + 1, 0
            group_of[v] = group
            size += c
        if size < min_rows and group > 0:  # a small last group joins the previous one
            group_of.clamp_(max=group - 1)
        groups = group_of[key]
        sort_key = groups * (int(dirs.max()) + 1 if dirs is not None and len(dirs) else 1)
        if dirs is not None:
            sort_key = sort_key + dirs
        order = torch.sort(sort_key, stable=True).indices
        batches = []
        for g in torch.unique(groups).tolist():
            members = order[groups[order] == g]
            n_batches = -(-len(members) // self.batch_size)
            batches.extend(members.tensor_split(n_batches))
        return batches

    def _first_column(self, rows: torch.Tensor) -> int:
        """The first column that is not padding in every one of ``rows`` (earlier ones are dropped)."""
        keep = self.attention_mask[rows].any(0).nonzero()
        return int(keep[0]) if len(keep) else 0

    def _forward(self, rows: torch.Tensor, first: int) -> torch.Tensor:
        """The model's logits on ``rows`` from column ``first`` (the last position's only when
        only it is evaluated); from block ``prefix_block`` on when a prefix is cached."""
        mask = self.attention_mask[rows, first:]
        to = dict(device=self.device, non_blocking=True)
        kwargs = dict(attention_mask=None if bool(mask.all()) else mask.to(**to),
                      position_ids=self.position_ids[rows, first:].to(**to), use_cache=False)
        if self._prefix is not None:
            kwargs["inputs_embeds"] = self._prefix[rows, first:].to(**to)
            start = blocks_from(self.model, self.prefix_block)
        else:
            kwargs["input_ids"] = self.input_ids[rows, first:].to(**to)
            start = contextlib.nullcontext()
        if self.last_only:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode(), last_position_only(self._tails), start:
            return self.model(**kwargs).logits

    def _logprobs(self, rows: torch.Tensor) -> torch.Tensor:
        """float64 log-probs at the evaluation positions of ``rows``: ``(n_positions_total, vocab)``."""
        first = self._first_column(rows)
        logits = self._forward(rows, first)
        self.n_forward += 1
        self.n_rows += len(rows)
        if self.last_only:
            logits = logits[:, -1]
        else:
            logits = logits[self.position_mask[rows, first:].to(logits.device)]
        return torch.log_softmax(logits.double(), dim=-1)

    def _row_kl(self, rows: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
        """Per-row KL (mean over that row's evaluation positions) given perturbed log-probs:
        a CPU float64 ``(len(rows),)``."""
        base = self._base_for(rows)
        per_pos = (base.exp() * (base - logq)).sum(-1).cpu()
        if self.last_only:
            return per_pos
        owner = torch.repeat_interleave(torch.arange(len(rows)), self.position_mask[rows].sum(-1))
        sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, owner, per_pos)
        return sums / self.n_positions[rows]

    def _base_for(self, rows: torch.Tensor) -> torch.Tensor:
        if self.last_only:
            return self.base_logp[rows]
        starts = torch.cat([torch.zeros(1, dtype=torch.long), self.position_mask.sum(-1).cumsum(0)])
        return torch.cat([self.base_logp[starts[r]:starts[r + 1]] for r in rows.tolist()])

    def _hooked_rows(self, dirs: torch.Tensor, rows: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """Per-row KL of (direction, example, scale) triples, grouped by direction, batched."""
        out = torch.empty(len(rows), dtype=torch.float64)
        with HookedPerturbation(self.model, self.subset, self.directions) as hooks:
            for batch in self._batches(rows, dirs):
                hooks.set_rows(dirs[batch], scales[batch])
                out[batch] = self._row_kl(rows[batch], self._logprobs(rows[batch]))
        return out

    # ---------------------------------------------------------------------------------------

    def per_direction(self, scales: torch.Tensor, rows: Optional[torch.Tensor] = None,
                      weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(n_dirs,)`` scales (NaN = skip) -> ``(n_dirs,)`` float64 KL averaged over all positions.

        rows: optional subset of example indices to average over instead of all examples (a
        cheap, approximate KL for a coarse search); weights: optional ``(len(rows),)`` weights
        of the average (e.g. a stratified estimate of the full-set mean), normalised here;
        default: each row by its number of evaluation positions.
        """
        scales = torch.as_tensor(scales, dtype=torch.float64)
        out = torch.full(scales.shape, float("nan"), dtype=torch.float64)
        active = (~scales.isnan()).nonzero().flatten()
        rows = torch.arange(self.n_examples) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        n = len(rows)
        weights = self.n_positions[rows] if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        weights = weights / weights.sum()
        if self.mode == "sequential":
            for d in active.tolist():
                kls = self.row_kls(d, float(scales[d]), rows)
                if len(rows) == self.n_examples:  # a full-set evaluation: kept for row_kls
                    self._last_full[d] = (float(scales[d]), kls)
                out[d] = (weights * kls).sum()
            return out
        dirs = active.repeat_interleave(n)
        kls = self._hooked_rows(dirs, rows.repeat(len(active)), scales[dirs])
        out[active] = (kls.view(len(active), n) * weights).sum(-1)
        return out

    def row_kls(self, direction: int, scale: float, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each row's own KL ``(len(rows),)`` (default: every example) at ``θ + scale w_direction``,
        from plain passes at in-place perturbed weights (restored bitwise afterwards). The
        full-set KLs of a direction's last sequential :meth:`per_direction` evaluation are
        reused when asked again at that scale."""
        if rows is None:
            last = self._last_full.get(direction)
            if last is not None and last[0] == scale:
                return last[1].clone()
        rows = torch.arange(self.n_examples) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        kls = torch.empty(len(rows), dtype=torch.float64)
        with perturbed_weights(self.subset, self.directions.params(direction), scale):
            for batch in self._batches(rows):
                kls[batch] = self._row_kl(rows[batch], self._logprobs(rows[batch]))
        return kls

    def per_example(self, scales: torch.Tensor) -> torch.Tensor:
        """``(n_dirs, n_examples)`` scales (NaN = skip) -> same-shape float64 per-example KL."""
        scales = torch.as_tensor(scales, dtype=torch.float64)
        out = torch.full(scales.shape, float("nan"), dtype=torch.float64)
        dirs, rows = (~scales.isnan()).nonzero(as_tuple=True)  # row-major: grouped by direction
        if len(dirs):
            out[dirs, rows] = self._hooked_rows(dirs, rows, scales[dirs, rows])
        return out
