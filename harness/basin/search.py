"""Multiplier search to a target KL, and the engine's entry points for per-model and per-example basins.

:func:`find_multipliers` solves ``KL(s) = eps`` elementwise for a whole array of independent
problems (directions, or (direction, example) pairs) in lock-step: every iteration makes one
call of the KL function with one scale per still-unconverged element (NaN for the others).

Root finder: work with ``g(ℓ) = log KL(e^ℓ) - log eps``. Since ``KL(s) ≈ k s²`` for small
``s``, ``g`` is close to linear in ``ℓ`` with slope 2, so the first step is Newton's step
with slope 2 (exact for a quadratic KL), and later steps use the secant slope of the last
two evaluations (clipped to [0.25, 16]; slope 2 where it is not usable). Steps are capped at
``max_step`` in ``ℓ`` while the root is not bracketed, and once it is bracketed a step that
would leave the bracket, or one taken after ``|g|`` failed to halve over two evaluations,
falls back to bisection in ``ℓ`` (so at worst every other step halves the bracket). A KL of 0 (underflow) or a non-finite KL
moves ``ℓ`` by ``max_step`` up or down. An element converges when ``|KL/eps - 1| <= rtol``
(tyche's criterion); the multiplier returned is always one that was evaluated, with the KL
measured there (the best one seen if ``max_iter`` runs out).

:func:`estimate_basin` and :func:`per_example_basin` tie together directions
(:mod:`harness.basin.estimate`), the model KL (:mod:`harness.basin.kl`) and this search.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from harness.basin.estimate import BasinResult, sample_directions
from harness.basin.kl import CausalLMKL
from harness.basin.perturb import LayerSpec, select_parameters

logger = logging.getLogger(__name__)

KLFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SearchResult:
    """Outcome of :func:`find_multipliers` (arrays of the problem's shape).

    multipliers: float64 evaluated scales; kls: float64 KL at those scales (nats);
    converged: bool; evaluations: int, KL evaluations each element used; n_calls: calls of
    the KL function (each evaluates all active elements).
    """

    multipliers: torch.Tensor
    kls: torch.Tensor
    converged: torch.Tensor
    evaluations: torch.Tensor
    n_calls: int
    slopes: Optional[torch.Tensor] = None  # last usable secant slope d log KL / d log s (2 if none)


def find_multipliers(
    kl_fn: KLFunction,
    shape: Union[int, Sequence[int]],
    eps: float = 1e-2,
    *,
    init: Union[float, torch.Tensor] = 1.0,
    rtol: float = 1e-2,
    max_iter: int = 100,
    max_step: float = math.log(1e3),
    max_scale: float = 1e8,
    slope: Union[float, torch.Tensor] = 2.0,
) -> SearchResult:
    """Find ``s`` with ``kl_fn(s) = eps`` for every element of an array of problems.

    kl_fn: maps a float64 tensor of scales of ``shape`` to a tensor of KLs of the same shape,
    elementwise independent (e.g. ``lambda s: 0.5 * k * s**2``); entries that are NaN need
    no evaluation (the function may skip them and return anything there).
    init: starting scale(s), scalar or of ``shape``; rtol: relative tolerance on the KL;
    max_iter: KL calls at most; max_step: largest step in log scale before bracketing;
    max_scale: an element whose KL is still below ``eps`` at this scale stops, unconverged
    (the KL can saturate below ``eps`` when only a few parameters are perturbed); slope: the
    log-log slope assumed for the first step (2 = quadratic KL), scalar or of ``shape``.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    log_eps = math.log(eps)
    f64 = dict(dtype=torch.float64)
    ell = torch.log(torch.as_tensor(init, **f64)).expand(shape).clone()
    lo = torch.full(shape, -math.inf, **f64)
    hi = torch.full(shape, math.inf, **f64)
    prev_ell = torch.full(shape, math.nan, **f64)
    prev_g = torch.full(shape, math.nan, **f64)
    gabs = [torch.full(shape, math.inf, **f64)] * 2  # |g| one and two evaluations ago
    best_ell, best_kl = ell.clone(), torch.full(shape, math.nan, **f64)
    best_err = torch.full(shape, math.inf, **f64)
    active = torch.ones(shape, dtype=torch.bool)
    converged = torch.zeros(shape, dtype=torch.bool)
    evaluations = torch.zeros(shape, dtype=torch.long)
    n_calls = 0
    default_slope = torch.as_tensor(slope, **f64).expand(shape).clone()
    last_slope = default_slope.clone()
    for _ in range(max_iter):
        if not active.any():
            break
        scales = torch.where(active, ell.exp(), torch.full_like(ell, math.nan))
        kl = torch.as_tensor(kl_fn(scales), **f64).reshape(shape)
        n_calls += 1
        evaluations += active.long()
        g = torch.where(kl > 0, kl.log() - log_eps, torch.full_like(kl, -math.inf))
        g = torch.where(kl.isfinite() | (kl == math.inf), g, torch.full_like(g, math.inf))  # NaN KL: too far
        err = (kl / eps - 1).abs().nan_to_num(math.inf)
        better = active & (err < best_err)
        best_ell, best_kl, best_err = (torch.where(better, ell, best_ell), torch.where(better, kl, best_kl),
                                       torch.where(better, err, best_err))
        done = active & (err <= rtol)
        converged |= done
        active &= ~done
        lo = torch.where(active & (g < 0), ell, lo)
        hi = torch.where(active & (g > 0), ell, hi)

        # Newton/secant step in log-log
        secant = (g - prev_g) / (ell - prev_ell)
        usable = secant.isfinite() & (secant >= 0.25) & (secant <= 16)
        last_slope = torch.where(usable, secant, last_slope)
        step_slope = torch.where(usable, secant, default_slope)
        step = torch.where(g.isfinite(), -g / step_slope, torch.where(g < 0, max_step, -max_step))
        proposal = ell + step.clamp(-max_step, max_step)
        bracketed = lo.isfinite() & hi.isfinite()
        width = hi - lo
        outside = (proposal <= lo) | (proposal >= hi)
        slow = g.abs() > 0.5 * gabs[1]
        bisect = bracketed & (outside | slow)
        proposal = torch.where(bisect, 0.5 * (lo + hi), proposal)
        # one-sided brackets: never step back past a known side
        proposal = torch.where(~bracketed & lo.isfinite() & (proposal <= lo), lo + max_step, proposal)
        proposal = torch.where(~bracketed & hi.isfinite() & (proposal >= hi), hi - max_step, proposal)
        log_max = math.log(max_scale)
        stuck = active & bracketed & (width <= 1e-12 * (1 + ell.abs()))
        stuck |= active & (g < 0) & (ell >= log_max)
        proposal = proposal.clamp(max=log_max)
        active &= ~stuck
        gabs = [torch.where(active, g.abs(), gabs[0]), gabs[0]]
        prev_ell = torch.where(active, ell, prev_ell)
        prev_g = torch.where(active, g, prev_g)
        ell = torch.where(active, proposal, ell)
    if not converged.all():
        logger.warning("multiplier search: %d of %d did not reach |KL/eps - 1| <= %g (best kept)",
                       int((~converged).sum()), converged.numel(), rtol)
    return SearchResult(best_ell.exp(), best_kl, converged, evaluations, n_calls, last_slope)


# ------------------------------------------------------------------------------------------
# engine entry points


def _prior_terms(model: nn.Module, layer: LayerSpec, n_directions: int, seed: int,
                 preconditioner: Optional[torch.Tensor], sigma: Optional[float]):
    subset = select_parameters(model, layer)
    theta = subset.flat()
    dirs, props = sample_directions(subset.dim, n_directions, seed, preconditioner, dtype=torch.float64)
    w_dot_theta = dirs @ theta
    sigma = float(theta.pow(2).mean().sqrt()) if sigma is None else float(sigma)
    return subset, theta, dirs.to(subset.params[0].dtype), props, w_dot_theta, sigma


def _coarse_start(kl: CausalLMKL, n_directions: int, eps: float, coarse_examples: int,
                  max_iter: int) -> tuple[Union[float, torch.Tensor], Union[float, torch.Tensor]]:
    """Starting multiplier and log-log slope for the per-model search, from a coarse search
    of the first direction on ``coarse_examples`` evenly spread examples.

    From a fixed start of 1 the pilot direction needs ~4 full-set evaluations, mostly far from
    the root; on a subset of 1/8 of the examples the same steps cost 1/8 as much, and the
    subset's root is within a few percent of the full set's (the per-example KLs are averaged
    either way), so the full-set pilot then needs ~2. Returns ``(1.0, 2.0)`` (the plain start)
    when the set is too small for a subset to save anything.
    """
    n = kl.n_examples
    if coarse_examples <= 0 or n < 4 * coarse_examples:
        return 1.0, 2.0
    rows = torch.linspace(0, n - 1, coarse_examples).round().long().unique()
    rest = torch.full((n_directions - 1,), math.nan, dtype=torch.float64)
    coarse = find_multipliers(lambda s: kl.per_direction(torch.cat([s, rest]), rows=rows)[:1], (1,), eps,
                              rtol=2e-2, max_iter=max_iter)
    if not bool(coarse.converged.all()):
        return 1.0, 2.0
    return coarse.multipliers.expand(n_directions).clone(), coarse.slopes.expand(n_directions).clone()


def find_multipliers_warm(
    kl_fn: KLFunction,
    shape: Sequence[int],
    eps: float = 1e-2,
    *,
    init: Union[float, torch.Tensor] = 1.0,
    rtol: float = 1e-2,
    max_iter: int = 100,
    slope: Union[float, torch.Tensor] = 2.0,
) -> SearchResult:
    """:func:`find_multipliers` with a pilot: solve the first direction (``shape[0]`` indexes
    directions) from ``init``, then start every other direction at the pilot's multiplier.

    Random unit directions in high dimension see nearly the same curvature (``uᵀHu``
    concentrates around ``tr(H)/D``), so from the pilot's multiplier the others usually need
    one Newton step: about 2 evaluations each instead of 4-6 from a fixed start. Results are
    the same roots to within ``rtol``; only the number of KL calls changes.
    """
    shape = tuple(shape)
    if shape[0] <= 1:
        return find_multipliers(kl_fn, shape, eps, init=init, rtol=rtol, max_iter=max_iter, slope=slope)
    rest_shape = (shape[0] - 1, *shape[1:])
    nan = torch.full((1, *shape[1:]), math.nan, dtype=torch.float64)

    def pilot_fn(scales: torch.Tensor) -> torch.Tensor:
        full = torch.cat([scales, torch.full(rest_shape, math.nan, dtype=torch.float64)])
        return torch.as_tensor(kl_fn(full))[:1]

    def rest_fn(scales: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(kl_fn(torch.cat([nan, scales])))[1:]

    first_init = init[:1] if torch.is_tensor(init) and init.dim() and init.shape[0] == shape[0] else init
    first_slope = slope[:1] if torch.is_tensor(slope) and slope.dim() and slope.shape[0] == shape[0] else slope
    pilot = find_multipliers(pilot_fn, (1, *shape[1:]), eps, init=first_init, rtol=rtol, max_iter=max_iter,
                             slope=first_slope)
    start = pilot.multipliers.expand(rest_shape).clone()
    slope = pilot.slopes.expand(rest_shape).clone()  # the pilot's measured log-log slope: one step usually lands
    rest = find_multipliers(rest_fn, rest_shape, eps, init=start, rtol=rtol, max_iter=max_iter, slope=slope)
    return SearchResult(
        multipliers=torch.cat([pilot.multipliers, rest.multipliers]),
        kls=torch.cat([pilot.kls, rest.kls]),
        converged=torch.cat([pilot.converged, rest.converged]),
        evaluations=torch.cat([pilot.evaluations, rest.evaluations]),
        n_calls=pilot.n_calls + rest.n_calls,
        slopes=torch.cat([pilot.slopes, rest.slopes]),
    )


def estimate_basin(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    n_directions: int = 25,
    eps: float = 1e-2,
    layer: LayerSpec = None,
    seed: int = 0,
    preconditioner: Optional[torch.Tensor] = None,
    sigma: Optional[float] = None,
    position_mask: Optional[torch.Tensor] = None,
    rtol: float = 1e-2,
    max_iter: int = 100,
    batch_size: int = 256,
    mode: str = "sequential",
    coarse_examples: int = 32,
) -> BasinResult:
    """Basin log probability of one model (KL averaged over all evaluation positions).

    input_ids, attention_mask: ``(n_examples, seq)`` left-padded prompts (evaluation at
    the last position unless ``position_mask`` ``(n_examples, seq)`` says otherwise);
    layer: parameter subset (see :func:`select_parameters`); sigma: prior std (default RMS
    of θ); mode: ``"sequential"`` or ``"stacked"`` evaluation of the directions
    (:class:`CausalLMKL`); coarse_examples: size of the example subset on which the first
    direction's multiplier is located before the full-set search (0 = no coarse stage; only
    the starting point changes, never the convergence test). Returns a :class:`BasinResult`
    with ``(n_directions,)`` arrays.
    """
    subset, theta, dirs, props, wt, sigma = _prior_terms(model, layer, n_directions, seed, preconditioner, sigma)
    kl = CausalLMKL(model, input_ids, attention_mask, subset, dirs, position_mask, batch_size, mode)
    init, slope = _coarse_start(kl, n_directions, eps, coarse_examples, max_iter)
    search = find_multipliers_warm(kl.per_direction, (n_directions,), eps, init=init, rtol=rtol,
                                   max_iter=max_iter, slope=slope)
    return BasinResult.from_search(search.multipliers, search.kls, search.converged, props, wt,
                                   float(theta @ theta), subset.dim, sigma, eps, n_forward=kl.n_forward,
                                   n_rows=kl.n_rows, n_evaluations=search.n_calls,
                                   meta={"layer": layer, "seed": seed, "rtol": rtol, "mode": mode})


def per_example_basin(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    n_directions: int = 16,
    eps: float = 1e-2,
    layer: LayerSpec = None,
    seed: int = 0,
    preconditioner: Optional[torch.Tensor] = None,
    sigma: Optional[float] = None,
    position_mask: Optional[torch.Tensor] = None,
    rtol: float = 1e-2,
    max_iter: int = 100,
    batch_size: int = 256,
    init: Union[float, torch.Tensor] = 1.0,
) -> BasinResult:
    """Per-example basins: one multiplier per (direction, example) with that example's KL = eps.

    All ``n_directions * n_examples`` root finds run in lock-step; each iteration is one
    sweep of hooked forward passes in which every row carries its own direction and scale.
    ``log m`` of the result is the basin_mahalanobis feature; ``log_volume`` ``(n_examples,)``
    is the per-example basin estimate. Arrays are ``(n_directions, n_examples)``.
    """
    subset, theta, dirs, props, wt, sigma = _prior_terms(model, layer, n_directions, seed, preconditioner, sigma)
    kl = CausalLMKL(model, input_ids, attention_mask, subset, dirs, position_mask, batch_size)
    shape = (n_directions, input_ids.shape[0])
    search = find_multipliers_warm(kl.per_example, shape, eps, init=init, rtol=rtol, max_iter=max_iter)
    return BasinResult.from_search(search.multipliers, search.kls, search.converged, props, wt,
                                   float(theta @ theta), subset.dim, sigma, eps, n_forward=kl.n_forward,
                                   n_rows=kl.n_rows, n_evaluations=search.n_calls,
                                   meta={"layer": layer, "seed": seed, "rtol": rtol})
