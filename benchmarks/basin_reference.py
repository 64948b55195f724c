"""Plain reference for the basin engine: tyche's radius search as written, minus its off-by-one.

Directions are processed one at a time; each starts at multiplier 1, doubles until the KL is
above ``eps``, then bisects until ``|KL - eps| <= rtol * eps`` (tyche's defaults: rtol 1e-2,
up to 100 iterations). Two configurations of tyche:

* ``cache=False`` (tyche's default): every KL evaluation recomputes the unperturbed outputs;
* ``cache=True`` (tyche's ``cache_mode``): the unperturbed log-probs of every example are
  computed once per call, batched, and each KL evaluation runs only the perturbed pass.

Either way the weights are perturbed explicitly and restored bitwise afterwards (tyche's own
cache mode leaves them perturbed). Unlike tyche, the multiplier returned is the one whose KL
was evaluated. Directions, parameter subsets and the
Gaussian-prior estimate are the engine's own (:mod:`harness.basin.estimate`), so a comparison
isolates the search and the model evaluation. Used by ``benchmarks/basin.py`` and the tests.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from harness.basin.estimate import BasinResult
from harness.basin.perturb import LayerSpec, ParameterSubset, perturbed_weights
from harness.basin.directions import prior_terms


class ReferenceKL:
    """KL at the last position between θ and θ + m w.

    cache: False recomputes the unperturbed side on each call (tyche's default); True computes
    it once for all examples here (tyche's ``cache_mode``).
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 subset: ParameterSubset, batch_size: int = 256, cache: bool = False) -> None:
        self.model, self.input_ids, self.subset, self.batch_size = model, input_ids, subset, batch_size
        self.attention_mask = attention_mask.long()
        self.position_ids = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.n_forward = 0
        self.n_rows = 0
        self.base = self._logprobs(torch.arange(input_ids.shape[0])) if cache else None

    def _logprobs(self, rows: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in rows.split(self.batch_size):
            with torch.inference_mode():
                logits = self.model(input_ids=self.input_ids[chunk], attention_mask=self.attention_mask[chunk],
                                    position_ids=self.position_ids[chunk], use_cache=False).logits[:, -1]
            self.n_forward += 1
            self.n_rows += len(chunk)
            out.append(torch.log_softmax(logits.double(), -1))
        return torch.cat(out)

    def __call__(self, direction: Union[torch.Tensor, Sequence[torch.Tensor]], mult: float,
                 rows: Optional[torch.Tensor] = None) -> float:
        """Mean KL over ``rows`` (default: all examples) at ``θ + mult * direction`` (a ``(D,)``
        tensor or one tensor per parameter)."""
        rows = torch.arange(self.input_ids.shape[0]) if rows is None else rows
        base = self.base[rows] if self.base is not None else self._logprobs(rows)
        with perturbed_weights(self.subset, direction, mult):
            pert = self._logprobs(rows)
        return float((base.exp() * (base - pert)).sum(-1).mean())


def bisection_search(kl_of_mult: Callable[[float], float], eps: float, rtol: float = 1e-2,
                     max_iter: int = 100, init: float = 1.0) -> tuple[float, float, bool]:
    """tyche's search for one direction: returns (evaluated multiplier, its KL, converged)."""
    mult, lo, hi = init, 0.0, float("inf")
    kl = kl_of_mult(mult)
    for _ in range(max_iter):
        if abs(kl - eps) <= rtol * eps:
            return mult, kl, True
        if kl < eps:
            lo = mult
        else:
            hi = mult
        mult = mult * 2.0 if hi == float("inf") else 0.5 * (lo + hi)
        kl = kl_of_mult(mult)
    return mult, kl, abs(kl - eps) <= rtol * eps


def reference_basin(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                    n_directions: int = 25, eps: float = 1e-2, layer: LayerSpec = None, seed: int = 0,
                    preconditioner: Optional[torch.Tensor] = None, sigma: Optional[float] = None,
                    rtol: float = 1e-2, max_iter: int = 100, batch_size: int = 256,
                    cache: bool = False) -> BasinResult:
    """Per-model basin, directions one at a time (same directions as ``estimate_basin``);
    cache: tyche's ``cache_mode`` (unperturbed log-probs computed once)."""
    subset, theta_sq, dirs, props, wt, sigma = prior_terms(model, layer, n_directions, seed, preconditioner, sigma)
    kl = ReferenceKL(model, input_ids, attention_mask, subset, batch_size, cache)
    found = [bisection_search(lambda m, i=i: kl(dirs.params(i), m), eps, rtol, max_iter) for i in range(n_directions)]
    mults, kls, conv = (torch.tensor([f[i] for f in found]) for i in range(3))
    return BasinResult.from_search(mults, kls, conv, props, wt, theta_sq, subset.dim, sigma, eps,
                                   n_forward=kl.n_forward, n_rows=kl.n_rows)


def reference_per_example(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                          n_directions: int = 16, eps: float = 1e-2, layer: LayerSpec = None, seed: int = 0,
                          preconditioner: Optional[torch.Tensor] = None, sigma: Optional[float] = None,
                          rtol: float = 1e-2, max_iter: int = 100, cache: bool = False) -> BasinResult:
    """Per-example multipliers by looping the reference over examples and directions; cache:
    tyche's ``cache_mode`` (every example's unperturbed log-probs computed once, batched)."""
    subset, theta_sq, dirs, props, wt, sigma = prior_terms(model, layer, n_directions, seed, preconditioner, sigma)
    kl = ReferenceKL(model, input_ids, attention_mask, subset, cache=cache)
    n = input_ids.shape[0]
    mults = torch.empty(n_directions, n, dtype=torch.float64)
    kls, conv = torch.empty_like(mults), torch.empty(n_directions, n, dtype=torch.bool)
    for j in range(n):
        rows = torch.tensor([j])
        for i in range(n_directions):
            d = dirs.params(i)
            mults[i, j], kls[i, j], conv[i, j] = bisection_search(lambda m: kl(d, m, rows), eps, rtol, max_iter)
    return BasinResult.from_search(mults, kls, conv, props, wt, theta_sq, subset.dim, sigma, eps,
                                   n_forward=kl.n_forward, n_rows=kl.n_rows)
