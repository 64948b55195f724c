"""Multiplier search to a target KL, and the engine's entry points for per-model and per-example basins.

:func:`find_multipliers` solves ``KL(s) = eps`` elementwise for a whole array of independent
problems (directions, or (direction, example) pairs) in lock-step: every iteration makes one
call of the KL function with one scale per still-unconverged element (NaN for the others).

Root finder: work with ``g(ℓ) = log KL(e^ℓ) - log eps``. Since ``KL(s) ≈ k s²`` for small
``s``, ``g`` is close to linear in ``ℓ`` with slope 2. Until the root is bracketed, each step
is a Newton step in log-log: with the given slope first (2 = exact for a quadratic KL), then
with the last usable secant slope (at least 0.25, at most 16), capped at ``max_step`` down and
``max_step_up`` up. Once two evaluations straddle the root, the bracket is shrunk by
Chandrupatla's method: inverse quadratic interpolation through the last three points where
his test says the interpolant is monotone on the bracket, regula falsi on the first step after
bracketing, bisection otherwise and whenever ``|g|`` failed to halve over two evaluations.
Per-example KL curves of trained models are often cliffs (KL x100 over a 25% longer step)
with dips; bracketed interpolation handles both where secant steps from one side do not.
A KL of 0 (underflow) or a non-finite KL counts as ``g = -50`` or ``+50``. An element
converges when ``|KL/eps - 1| <= rtol`` (tyche's criterion); the multiplier returned is always
one that was evaluated, with the KL measured there (the best one seen if ``max_iter`` runs out).

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

from harness.basin.directions import prior_terms as _prior_terms  # seeded directions, generated in chunks
from harness.basin.estimate import BasinResult
from harness.basin.kl import CausalLMKL
from harness.basin.perturb import LayerSpec

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
    max_step_up: Optional[float] = None,
    max_scale: float = 1e8,
    slope: Union[float, torch.Tensor] = 2.0,
) -> SearchResult:
    """Find ``s`` with ``kl_fn(s) = eps`` for every element of an array of problems.

    kl_fn: maps a float64 tensor of scales of ``shape`` to a tensor of KLs of the same shape,
    elementwise independent (e.g. ``lambda s: 0.5 * k * s**2``); entries that are NaN need
    no evaluation (the function may skip them and return anything there).
    init: starting scale(s), scalar or of ``shape``; rtol: relative tolerance on the KL;
    max_iter: KL calls at most; max_step: largest step in log scale before bracketing;
    max_step_up: largest upward step before bracketing (default ``max_step``; a small cap
    avoids overshooting into the saturated region of KL curves with cliffs, where the way
    back costs more than a short step); max_scale: an element whose KL is still below
    ``eps`` at this scale stops, unconverged (the KL can saturate below ``eps`` when only a
    few parameters are perturbed); slope: the log-log slope assumed for the first step
    (2 = quadratic KL), scalar or of ``shape``.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    max_step_up = max_step if max_step_up is None else max_step_up
    log_eps, log_max = math.log(eps), math.log(max_scale)
    f64 = dict(dtype=torch.float64)

    def full(value: float) -> torch.Tensor:
        return torch.full(shape, value, **f64)

    ell = torch.log(torch.as_tensor(init, **f64)).expand(shape).clone()
    prev_ell, prev_g = full(math.nan), full(math.nan)
    # bracket state (Chandrupatla): a = newest point, b = the other end, c = the point dropped last
    a, fa, b, fb, c, fc = (full(math.nan) for _ in range(6))
    bracketed = torch.zeros(shape, dtype=torch.bool)
    gabs = [full(math.inf)] * 2  # |g| one and two evaluations ago
    best_ell, best_kl, best_err = ell.clone(), full(math.nan), full(math.inf)
    active = torch.ones(shape, dtype=torch.bool)
    converged = torch.zeros(shape, dtype=torch.bool)
    evaluations = torch.zeros(shape, dtype=torch.long)
    n_calls = 0
    cur_slope = torch.as_tensor(slope, **f64).expand(shape).clone()
    for _ in range(max_iter):
        if not active.any():
            break
        scales = torch.where(active, ell.exp(), full(math.nan))
        kl = torch.as_tensor(kl_fn(scales), **f64).reshape(shape)
        n_calls += 1
        evaluations += active.long()
        # g = log KL - log eps; KL 0 (underflow) -> far below, NaN/inf KL -> far above; kept
        # finite (+-50) so that interpolation formulas stay defined
        g = torch.where(kl > 0, kl.log() - log_eps, full(-50.0))
        g = torch.where(kl.isnan() | (kl == math.inf), full(50.0), g).clamp(-50.0, 50.0)
        err = (kl / eps - 1).abs().nan_to_num(math.inf)
        better = active & (err < best_err)
        best_ell, best_kl, best_err = (torch.where(better, ell, best_ell), torch.where(better, kl, best_kl),
                                       torch.where(better, err, best_err))
        done = active & (err <= rtol)
        converged |= done
        active &= ~done

        # bracket bookkeeping
        keep_side = active & bracketed & (torch.sign(g) == torch.sign(fa))
        flip_side = active & bracketed & ~keep_side
        c = torch.where(keep_side, a, torch.where(flip_side, b, c))
        fc = torch.where(keep_side, fa, torch.where(flip_side, fb, fc))
        b, fb = torch.where(flip_side, a, b), torch.where(flip_side, fa, fb)
        newly = active & ~bracketed & prev_g.isfinite() & (torch.sign(g) != torch.sign(prev_g))
        b, fb = torch.where(newly, prev_ell, b), torch.where(newly, prev_g, fb)
        c, fc = torch.where(newly, prev_ell, c), torch.where(newly, prev_g, fc)
        upd = active & (bracketed | newly)
        a, fa = torch.where(upd, ell, a), torch.where(upd, g, fa)
        bracketed |= newly

        # bracketed: inverse quadratic interpolation where Chandrupatla's test says it is safe,
        # regula falsi right after bracketing, bisection otherwise or when |g| stalls
        xi = (a - b) / (c - b)
        phi = (fa - fb) / (fc - fb)
        iqi_ok = (phi**2 < xi) & ((1 - phi) ** 2 < 1 - xi) & (c != b)
        t_iqi = fa / (fb - fa) * fc / (fb - fc) + (c - a) / (b - a) * fa / (fc - fa) * fb / (fc - fb)
        t_secant = (fa / (fa - fb)).clamp(0.02, 0.98)
        t = torch.where(iqi_ok, t_iqi, torch.where(c == b, t_secant, full(0.5)))
        stalled = g.abs() > 0.5 * gabs[1]
        t = torch.where(stalled & ~newly, full(0.5), t).nan_to_num(0.5).clamp(1e-3, 1 - 1e-3)
        inside = a + t * (b - a)

        # not bracketed: Newton/secant step in log-log with the last usable secant slope
        secant = (g - prev_g) / (ell - prev_ell)
        usable = active & secant.isfinite() & (secant >= 0.25)
        cur_slope = torch.where(usable, secant.clamp(max=16.0), cur_slope)
        outside = ell + (-g / cur_slope).clamp(-max_step, max_step_up)

        proposal = torch.where(bracketed, inside, outside).clamp(max=log_max)
        stuck = active & bracketed & ((a - b).abs() <= 1e-12 * (1 + ell.abs()))
        stuck |= active & (g < 0) & (ell >= log_max)
        active &= ~stuck
        gabs = [torch.where(active, g.abs(), gabs[0]), gabs[0]]
        prev_ell = torch.where(active, ell, prev_ell)
        prev_g = torch.where(active, g, prev_g)
        ell = torch.where(active, proposal, ell)
    if not converged.all():
        logger.warning("multiplier search: %d of %d did not reach |KL/eps - 1| <= %g (best kept)",
                       int((~converged).sum()), converged.numel(), rtol)
    return SearchResult(best_ell.exp(), best_kl, converged, evaluations, n_calls, cur_slope)


# ------------------------------------------------------------------------------------------
# engine entry points


def _subset_rows(n: int, size: int) -> Optional[torch.Tensor]:
    """``size`` evenly spread example indices, or None when a subset would save little."""
    if size <= 0 or n < 4 * size:
        return None
    return torch.linspace(0, n - 1, size).round().long().unique()


def _fragile_probe(kl: CausalLMKL, direction: int, scale: float,
                   size: int) -> Optional[tuple[torch.Tensor, torch.Tensor, float]]:
    """A stratified probe subset of ``size`` examples and its weights, from one direction's per-example KLs.

    The mean KL of a trained model is carried by a few fragile examples (on the MAD addition
    model, 8 of 256 examples hold three quarters of it), so an evenly spread subset misreads
    it by ~25% from one direction to the next. Fragility is shared across directions: the
    examples with the largest KL at ``scale`` along ``direction`` (three quarters of the
    subset, weight 1 each) plus evenly spread others standing for the rest (weight
    ``rest / their number``) estimate every direction's mean KL to a few per cent. Returns
    ``(rows, weights, bias)`` with ``bias`` = log(estimate / full-set mean) on ``direction``
    itself, or None when the KLs give no ranking (all zero or not finite).
    """
    kls = kl.row_kls(direction, scale)
    if not (torch.isfinite(kls).all() and float(kls.sum()) > 0):
        return None
    n_top = (3 * size) // 4
    order = torch.argsort(kls, descending=True, stable=True)
    top, rest = order[:n_top], order[n_top:]
    n_spread = min(size - n_top, len(rest))
    spread = rest[torch.linspace(0, len(rest) - 1, n_spread).round().long().unique()]
    rows = torch.cat([top, spread])
    weights = torch.cat([torch.ones(len(top), dtype=torch.float64),
                         torch.full((len(spread),), len(rest) / max(1, len(spread)), dtype=torch.float64)])
    positions = kl.n_positions  # an example's KL is the mean over its evaluation positions
    weights = weights * positions[rows]
    full_mean = float((positions * kls).sum() / positions.sum())
    estimate = float((weights * kls[rows]).sum() / weights.sum())
    return rows, weights, math.log(estimate / full_mean)


def _per_model_search(kl: CausalLMKL, n_directions: int, eps: float, rtol: float, max_iter: int,
                      probe_examples: int) -> SearchResult:
    """The per-model multipliers of all directions, in three stages.

    1. Pilot: direction 0 is located on ``probe_examples`` evenly spread examples (cheap:
       from a start of 1 its first steps are far from the root), then solved on the full set
       from there, which gives the typical multiplier ``m0`` and the local log-log slope.
    2. Probe: a stratified subset of ``probe_examples`` examples (:func:`_fragile_probe`, from
       the pilot's per-example KLs at ``m0``) estimates every other direction's mean KL; each
       direction takes two Newton steps on it (the pilot's slope, then its own secant slope)
       from ``m0`` to its estimate. Directions of a trained model differ a lot (multipliers
       over a factor of ~4 for the same KL), so a start at ``m0`` would spend full-set
       evaluations far from the root. The estimate's bias on the pilot direction (subset vs
       full-set KL at ``m0``) is divided out.
    3. Full-set search of those directions from their estimates.
    A subset never decides convergence: only full-set KLs are tested against ``rtol``.
    """
    rows = _subset_rows(kl.n_examples, probe_examples)
    nan = torch.full((n_directions - 1,), math.nan, dtype=torch.float64)

    def first(scales: torch.Tensor, subset: Optional[torch.Tensor] = None) -> torch.Tensor:
        return kl.per_direction(torch.cat([scales, nan]), rows=subset)[:1]

    init, slope = 1.0, 2.0
    if rows is not None:
        coarse = find_multipliers(lambda s: first(s, rows), (1,), eps, rtol=2e-2, max_iter=max_iter)
        if bool(coarse.converged.all()):
            init, slope = coarse.multipliers, coarse.slopes
    pilot = find_multipliers(first, (1,), eps, init=init, rtol=rtol, max_iter=max_iter, slope=slope)
    if n_directions == 1:
        return pilot
    start = pilot.multipliers.expand(n_directions - 1).clone()
    slope = pilot.slopes.expand(n_directions - 1).clone()
    probe = _fragile_probe(kl, 0, float(pilot.multipliers[0]), probe_examples) if rows is not None else None
    if probe is not None:
        start, slope = _probe_steps(kl, probe, start, slope, eps)

    def rest_fn(scales: torch.Tensor) -> torch.Tensor:
        return kl.per_direction(torch.cat([torch.full((1,), math.nan, dtype=torch.float64), scales]))[1:]

    rest = find_multipliers(rest_fn, (n_directions - 1,), eps, init=start, rtol=rtol, max_iter=max_iter, slope=slope)
    return SearchResult(
        multipliers=torch.cat([pilot.multipliers, rest.multipliers]),
        kls=torch.cat([pilot.kls, rest.kls]),
        converged=torch.cat([pilot.converged, rest.converged]),
        evaluations=torch.cat([pilot.evaluations, rest.evaluations]),
        n_calls=pilot.n_calls + rest.n_calls,
        slopes=torch.cat([pilot.slopes, rest.slopes]),
    )


def _probe_steps(kl: CausalLMKL, probe: tuple[torch.Tensor, torch.Tensor, float], start: torch.Tensor,
                 slope: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Newton steps of directions 1.. on the probe's estimate of their mean KL, from ``start``;
    returns the projected roots and the slopes for the full-set search (the secant's where usable)."""
    rows, weights, bias = probe
    cap = math.log(1e3)
    skip_pilot = torch.full((1,), math.nan, dtype=torch.float64)

    def g(ell: torch.Tensor) -> torch.Tensor:
        kls = kl.per_direction(torch.cat([skip_pilot, ell.exp()]), rows=rows, weights=weights)[1:]
        return kls.log() - bias - math.log(eps)

    ell0 = start.log()
    g0 = g(ell0)
    ell1 = torch.where(g0.isfinite(), ell0 - (g0 / slope).clamp(-cap, cap), ell0)
    g1 = g(ell1)
    secant = (g1 - g0) / (ell1 - ell0)
    usable = g0.isfinite() & g1.isfinite() & secant.isfinite() & (secant >= 0.25)
    slope = torch.where(usable, secant.clamp(max=16.0), slope)
    ell2 = torch.where(g1.isfinite(), ell1 - (g1 / slope).clamp(-cap, cap), ell1)
    return ell2.exp(), slope


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
    mode: str = "auto",
    probe_examples: int = 64,
) -> BasinResult:
    """Basin log probability of one model (KL averaged over all evaluation positions).

    input_ids, attention_mask: ``(n_examples, seq)`` left-padded prompts (evaluation at
    the last position unless ``position_mask`` ``(n_examples, seq)`` says otherwise);
    layer: parameter subset (see :func:`select_parameters`); sigma: prior std (default RMS
    of θ); mode: ``"sequential"``, ``"stacked"`` or ``"auto"`` (default: stacked on an accelerator,
    sequential on the CPU) evaluation of the directions
    (:class:`CausalLMKL`); probe_examples: size of the example subset on which starting
    points are found before the full-set search (:func:`_per_model_search`; 0 = none: only the
    starting points change, never the convergence test). Returns a :class:`BasinResult`
    with ``(n_directions,)`` arrays.
    """
    subset, theta_sq, dirs, props, wt, sigma = _prior_terms(model, layer, n_directions, seed, preconditioner, sigma)
    kl = CausalLMKL(model, input_ids, attention_mask, subset, dirs, position_mask, batch_size, mode)
    search = _per_model_search(kl, n_directions, eps, rtol, max_iter, probe_examples)
    return BasinResult.from_search(search.multipliers, search.kls, search.converged, props, wt,
                                   theta_sq, subset.dim, sigma, eps, n_forward=kl.n_forward,
                                   n_rows=kl.n_rows, n_evaluations=search.n_calls,
                                   evaluations=search.evaluations.numpy(),
                                   meta={"layer": layer, "seed": seed, "rtol": rtol, "mode": mode})


def _pilot_start(kl_fn: KLFunction, shape: tuple[int, int], eps: float, init: Union[float, torch.Tensor],
                 rtol: float, max_iter: int, per_direction: int = 4) -> tuple[torch.Tensor, float]:
    """Starting multipliers and log-log slope for the per-example search, from a pilot.

    The pilot solves ``per_direction`` evenly spread examples of every direction from ``init``
    (a few dozen problems, a small fraction of the rows). Every other problem then starts at
    the pilot's median multiplier with the pilot's median slope; the pilot's own problems start
    at their roots (one evaluation confirms them). Per-example multipliers of a trained model
    spread over a factor of ~2 across directions for one example, and its per-example KL curves
    can be cliffs, so a start near the typical root beats starting each direction at another
    direction's root for the same example.
    """
    n_dirs, n = shape
    cols = _subset_rows(n, per_direction)
    if cols is None:
        return torch.as_tensor(init, dtype=torch.float64).expand(shape).clone(), 2.0

    def pilot_fn(scales: torch.Tensor) -> torch.Tensor:
        full = torch.full(shape, math.nan, dtype=torch.float64)
        full[:, cols] = scales
        return torch.as_tensor(kl_fn(full))[:, cols]

    pilot_init = init[:, cols] if torch.is_tensor(init) and init.dim() == 2 else init
    pilot = find_multipliers(pilot_fn, (n_dirs, len(cols)), eps, init=pilot_init, rtol=rtol, max_iter=max_iter)
    ok = pilot.converged
    if not bool(ok.any()):
        return torch.as_tensor(init, dtype=torch.float64).expand(shape).clone(), 2.0
    start = torch.full(shape, float(pilot.multipliers[ok].log().median().exp()), dtype=torch.float64)
    start[:, cols] = torch.where(ok, pilot.multipliers, start[:, cols])
    slope = float(pilot.slopes[ok].median().clamp(1.0, 4.0))
    return start, slope


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
    A pilot on a few examples per direction (:func:`_pilot_start`) picks the common starting
    point; upward steps before bracketing are capped at a factor of 2, since overshooting onto
    the saturated side of a cliff in a per-example KL curve costs several evaluations to undo.
    ``log m`` of the result is the basin_mahalanobis feature; ``log_volume`` ``(n_examples,)``
    is the per-example basin estimate. Arrays are ``(n_directions, n_examples)``.
    ``batch_size``: (direction, example) rows per hooked pass.
    """
    subset, theta_sq, dirs, props, wt, sigma = _prior_terms(model, layer, n_directions, seed, preconditioner, sigma)
    kl = CausalLMKL(model, input_ids, attention_mask, subset, dirs, position_mask, batch_size)
    shape = (n_directions, input_ids.shape[0])
    start, slope = _pilot_start(kl.per_example, shape, eps, init, rtol, max_iter)
    search = find_multipliers(kl.per_example, shape, eps, init=start, rtol=rtol, max_iter=max_iter,
                              max_step_up=math.log(2.0), slope=slope)
    return BasinResult.from_search(search.multipliers, search.kls, search.converged, props, wt,
                                   theta_sq, subset.dim, sigma, eps, n_forward=kl.n_forward,
                                   n_rows=kl.n_rows, n_evaluations=search.n_calls,
                                   evaluations=search.evaluations.numpy(),
                                   meta={"layer": layer, "seed": seed, "rtol": rtol})
