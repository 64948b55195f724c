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
The model is called with the attention mask and ``position_ids = cumsum(mask) - 1``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from harness.basin.perturb import HookedPerturbation, ParameterSubset, perturbed_weights

MODES = ("sequential", "stacked")


class CausalLMKL:
    """Next-token KL of a Hugging Face causal LM between θ and θ + s w, on a fixed batch.

    input_ids, attention_mask: ``(n_examples, seq)`` left-padded prompts; subset: the
    perturbed parameters; directions: ``(n_dirs, D)`` perturbation vectors ``w_i``;
    position_mask: optional ``(n_examples, seq)`` bool of evaluation positions (default: the
    last position of each row, the answer position of left-padded prompts); batch_size: rows
    per forward pass; mode: how :meth:`per_direction` runs many directions --
    ``"sequential"`` (weights perturbed in place, one direction at a time, plain passes) or
    ``"stacked"`` (several directions' copies of the batch in one hooked pass).

    Counters: ``n_forward`` (model calls) and ``n_rows`` (example rows processed).
    """

    def __init__(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        subset: ParameterSubset,
        directions: torch.Tensor,
        position_mask: Optional[torch.Tensor] = None,
        batch_size: int = 256,
        mode: str = "sequential",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model = model
        self.input_ids = input_ids
        self.attention_mask = attention_mask.long()
        self.position_ids = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.last_only = position_mask is None
        self.position_mask = position_mask.bool() if position_mask is not None else None
        self.subset = subset
        self.directions = directions
        self.batch_size = int(batch_size)
        self.mode = mode
        self.n_forward = 0
        self.n_rows = 0
        n = input_ids.shape[0]
        # per-example count of evaluation positions (weights of the position average)
        self.n_positions = (torch.ones(n) if self.last_only else self.position_mask.sum(-1).double()).double()
        self.base_logp = torch.cat([self._logprobs(torch.arange(s, min(s + self.batch_size, n)))
                                    for s in range(0, n, self.batch_size)])

    @property
    def n_examples(self) -> int:
        return self.input_ids.shape[0]

    # ---------------------------------------------------------------------------------------

    def _logprobs(self, rows: torch.Tensor) -> torch.Tensor:
        """float64 log-probs at the evaluation positions of ``rows``: ``(n_positions_total, vocab)``."""
        mask = self.attention_mask[rows]
        keep = mask.any(0).nonzero()
        first = int(keep[0]) if len(keep) else 0  # drop columns that are padding in every row
        kwargs = dict(input_ids=self.input_ids[rows, first:], attention_mask=mask[:, first:],
                      position_ids=self.position_ids[rows, first:], use_cache=False)
        if self.last_only:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            logits = self.model(**kwargs).logits
        self.n_forward += 1
        self.n_rows += len(rows)
        if self.last_only:
            logits = logits[:, -1]
        else:
            logits = logits[self.position_mask[rows, first:]]
        return torch.log_softmax(logits.double(), dim=-1)

    def _row_kl(self, rows: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
        """Per-row KL (mean over that row's evaluation positions) given perturbed log-probs."""
        base = self._base_for(rows)
        per_pos = (base.exp() * (base - logq)).sum(-1)
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
            for s in range(0, len(rows), self.batch_size):
                sl = slice(s, s + self.batch_size)
                hooks.set_rows(dirs[sl], scales[sl])
                out[sl] = self._row_kl(rows[sl], self._logprobs(rows[sl]))
        return out

    # ---------------------------------------------------------------------------------------

    def per_direction(self, scales: torch.Tensor) -> torch.Tensor:
        """``(n_dirs,)`` scales (NaN = skip) -> ``(n_dirs,)`` float64 KL averaged over all positions."""
        scales = torch.as_tensor(scales, dtype=torch.float64)
        out = torch.full(scales.shape, float("nan"), dtype=torch.float64)
        active = (~scales.isnan()).nonzero().flatten()
        n = self.n_examples
        weights = self.n_positions / self.n_positions.sum()
        if self.mode == "sequential":
            for d in active.tolist():
                with perturbed_weights(self.subset, self.directions[d], float(scales[d])):
                    kls = torch.cat([self._row_kl(r, self._logprobs(r))
                                     for r in torch.arange(n).split(self.batch_size)])
                out[d] = (weights * kls).sum()
            return out
        dirs = active.repeat_interleave(n)
        rows = torch.arange(n).repeat(len(active))
        kls = self._hooked_rows(dirs, rows, scales[dirs])
        out[active] = (kls.view(len(active), n) * weights).sum(-1)
        return out

    def per_example(self, scales: torch.Tensor) -> torch.Tensor:
        """``(n_dirs, n_examples)`` scales (NaN = skip) -> same-shape float64 per-example KL."""
        scales = torch.as_tensor(scales, dtype=torch.float64)
        out = torch.full(scales.shape, float("nan"), dtype=torch.float64)
        dirs, rows = (~scales.isnan()).nonzero(as_tuple=True)  # row-major: grouped by direction
        if len(dirs):
            out[dirs, rows] = self._hooked_rows(dirs, rows, scales[dirs, rows])
        return out
