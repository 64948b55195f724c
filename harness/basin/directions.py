"""Seeded random directions in parameter space, generated on demand in bounded memory.

A basin estimate needs ``n`` random unit directions over the ``D`` perturbed parameters. For a
block of a 7B model a dense ``(n, D)`` array is tens of GB, so nothing here ever holds one:

* :class:`SeededDirections` defines direction ``i`` as ``w_i = P u_i / ||u_i||`` with
  ``u_i ~ N(0, I_D)``. The vector is cut into fixed blocks of :data:`RNG_BLOCK` entries; block
  ``b`` of direction ``i`` is drawn in float32 on the CPU by a ``torch.Generator`` seeded from
  ``(seed, i, b)``. Any slice ``w_i[lo:hi]`` can therefore be generated alone, and a direction
  is the same whatever chunks it is generated in, whichever device it is later moved to and
  however many directions are drawn. ``||u_i||`` is summed in float64 block by block, in block
  order, so the norm does not depend on the chunking either.
* :class:`SubsetDirections` serves those directions shaped like the parameters of a
  :class:`~harness.basin.perturb.ParameterSubset`, in the parameters' dtype and on their device,
  keeping at most ``cache_bytes`` of them materialised (least recently used first out). Small
  blocks keep every direction; a large block keeps what fits and regenerates the rest, one
  parameter at a time for the hooks, so the memory is a small multiple of the block's size.
* :func:`prior_terms` computes, in one generation pass per direction, what the Gaussian-prior
  estimate needs (``||P u||``, ``w·θ``, ``θ·θ``, the RMS of θ) without materialising θ in float64.

:class:`DenseDirections` adapts an explicit ``(n, D)`` tensor to the same interface (tests,
small experiments).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from harness.basin.perturb import LayerSpec, ParameterSubset, select_parameters

RNG_BLOCK = 1 << 20  # entries per generator; fixed: changing it changes every direction
DEFAULT_CACHE_BYTES = 256 << 20  # directions kept materialised, when each is small
# A direction larger than this is not kept beyond one: drawing it again costs little next to the
# forward passes of a model that large, and keeping several would break the memory bound.
LARGE_DIRECTION_BYTES = 16 << 20


def block_seed(seed: int, index: int, block: int) -> int:
    """Generator seed of block ``block`` of direction ``index`` in a run seeded with ``seed``."""
    state = np.random.SeedSequence([int(seed), int(index), int(block)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63: a valid manual_seed


class SeededDirections:
    """``n`` seeded unit directions in ``R^dim`` (times a diagonal preconditioner), never stored.

    seed: run seed; preconditioner: optional ``(dim,)`` diagonal ``P`` (``w_i = P u_i/||u_i||``);
    start: index of the first direction (direction ``k`` here is global direction ``start + k``).
    Norms ``||u_i||`` and ``props`` (``||w_i||``) are computed on first use, one generation pass
    per direction, and kept (``n`` floats).
    """

    def __init__(self, dim: int, n: int, seed: int = 0, preconditioner: Optional[torch.Tensor] = None,
                 start: int = 0) -> None:
        if dim < 1 or n < 0:
            raise ValueError(f"need dim >= 1 and n >= 0, got dim={dim}, n={n}")
        if preconditioner is not None:
            preconditioner = torch.as_tensor(preconditioner).detach().reshape(-1).cpu()
            if preconditioner.numel() != dim:
                raise ValueError(f"preconditioner has {preconditioner.numel()} entries, expected {dim} (one per parameter)")
        self.dim, self.n, self.seed, self.start = int(dim), int(n), int(seed), int(start)
        self.preconditioner = preconditioner
        self._norms: Optional[torch.Tensor] = None
        self._props: Optional[torch.Tensor] = None
        self._last: Optional[tuple[int, int, torch.Tensor]] = None  # the last raw block drawn

    def __len__(self) -> int:
        return self.n

    @property
    def n_blocks(self) -> int:
        return -(-self.dim // RNG_BLOCK)

    def raw_block(self, i: int, block: int) -> torch.Tensor:
        """Block ``block`` of the unnormalised Gaussian ``u_i``: float32, CPU, ``RNG_BLOCK`` long
        (shorter for the last block)."""
        if self._last is not None and self._last[:2] == (i, block):  # slices of neighbouring parameters
            return self._last[2]
        size = min(RNG_BLOCK, self.dim - block * RNG_BLOCK)
        gen = torch.Generator().manual_seed(block_seed(self.seed, self.start + i, block))
        u = torch.randn(size, generator=gen, dtype=torch.float32)
        self._last = (i, block, u)
        return u

    def _statistics(self, theta: Optional[Callable[[int, int], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        """One generation pass over every direction: ``||u_i||``, ``props`` and, given ``theta``
        (``(lo, hi) -> θ[lo:hi]`` float64 CPU), the dot products ``w_i·θ`` ``(n,)`` float64.

        Sums run over RNG blocks in block order, so they never depend on how callers chunk."""
        norm2 = [0.0] * self.n
        pu2 = [0.0] * self.n
        dots = [0.0] * self.n
        for b in range(self.n_blocks):
            lo, hi = b * RNG_BLOCK, min((b + 1) * RNG_BLOCK, self.dim)
            t = theta(lo, hi) if theta is not None else None
            pre = self.preconditioner[lo:hi].double() if self.preconditioner is not None else None
            for i in range(self.n):
                u = self.raw_block(i, b).double()
                norm2[i] += float(u @ u)
                pu = u * pre if pre is not None else u
                if pre is not None:
                    pu2[i] += float(pu @ pu)
                if t is not None:
                    dots[i] += float(pu @ t)
        norms = torch.tensor(norm2, dtype=torch.float64).sqrt()
        self._norms = norms
        if self.preconditioner is None:
            self._props = torch.ones(self.n, dtype=torch.float64)
        else:
            self._props = torch.tensor(pu2, dtype=torch.float64).sqrt() / norms
        return torch.tensor(dots, dtype=torch.float64) / norms if theta is not None else None

    def dot(self, theta: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        """``(n,)`` float64 ``w_i·θ`` for ``θ`` given by slices ``(lo, hi) -> θ[lo:hi]`` (float64,
        CPU); computed together with the norms in one generation pass per direction."""
        return self._statistics(theta)

    @property
    def norms(self) -> torch.Tensor:
        """``(n,)`` float64 ``||u_i||`` (before normalisation)."""
        if self._norms is None:
            self._statistics()
        return self._norms

    @property
    def props(self) -> torch.Tensor:
        """``(n,)`` float64 ``||w_i|| = ||P u_i|| / ||u_i||`` (ones without a preconditioner)."""
        if self._props is None:
            self._statistics()
        return self._props

    def slice(self, i: int, lo: int, hi: int) -> torch.Tensor:
        """``w_i[lo:hi]``: float32, CPU. Generates only the RNG blocks that overlap the slice."""
        if not (0 <= i < self.n and 0 <= lo <= hi <= self.dim):
            raise IndexError(f"slice [{lo}:{hi}] of direction {i}: valid are directions 0..{self.n - 1}, 0 <= lo <= hi <= {self.dim}")
        if lo == hi:
            return torch.empty(0, dtype=torch.float32)
        first, last = lo // RNG_BLOCK, (hi - 1) // RNG_BLOCK
        parts = [self.raw_block(i, b) for b in range(first, last + 1)]
        u = (parts[0] if len(parts) == 1 else torch.cat(parts))[lo - first * RNG_BLOCK: hi - first * RNG_BLOCK]
        return self._finish(i, u, lo, hi)

    def _finish(self, i: int, u: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Normalise a raw slice (float32 division: elementwise, so chunking cannot change it)."""
        w = u / torch.tensor(float(self.norms[i]), dtype=torch.float32)
        if self.preconditioner is not None:
            w = w * self.preconditioner[lo:hi].to(torch.float32)
        return w

    def chunks(self, i: int, chunk_size: int = RNG_BLOCK) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(lo, hi, w_i[lo:hi])`` over the whole direction, ``chunk_size`` entries at a time."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        for lo in range(0, self.dim, chunk_size):
            hi = min(lo + chunk_size, self.dim)
            yield lo, hi, self.slice(i, lo, hi)

    def vector(self, i: int, dtype: torch.dtype = torch.float32, device: Union[str, torch.device, None] = None) -> torch.Tensor:
        """Direction ``i`` as one ``(dim,)`` tensor (``dim`` entries: only for one direction at a time)."""
        out = torch.empty(self.dim, dtype=dtype, device=device)
        for lo, hi, w in self.chunks(i):
            out[lo:hi] = w
        return out

    def dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """All directions as ``(n, dim)`` (small problems and tests only: ``n * dim`` entries)."""
        out = torch.empty(self.n, self.dim, dtype=dtype)
        for i in range(self.n):
            out[i] = self.vector(i, dtype)
        return out


def sample_directions(dim: int, n: int, seed: int = 0, preconditioner: Optional[torch.Tensor] = None,
                      dtype: torch.dtype = torch.float32, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``(n, dim)`` directions of :class:`SeededDirections` and their ``(n,)`` float64 props.

    The same vectors the engine perturbs along; dense, so for small ``dim`` only.
    """
    source = SeededDirections(dim, n, seed, preconditioner, start)
    return source.dense(dtype), source.props.clone()


class DenseDirections:
    """An explicit ``(n, D)`` tensor behind the interface of :class:`SeededDirections`."""

    def __init__(self, directions: torch.Tensor) -> None:
        if directions.ndim != 2:
            raise ValueError(f"directions must be (n_dirs, D), got {tuple(directions.shape)}")
        self.directions = directions
        self.n, self.dim = directions.shape

    def __len__(self) -> int:
        return self.n

    def slice(self, i: int, lo: int, hi: int) -> torch.Tensor:
        return self.directions[i, lo:hi]

    def vector(self, i: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        return self.directions[i].to(dtype=dtype, device=device)


DirectionSource = Union[SeededDirections, DenseDirections]


class SubsetDirections:
    """Directions over a parameter subset, shaped like its parameters, in their dtype and device.

    source: a :class:`SeededDirections` (or :class:`DenseDirections`, or a dense ``(n, D)``
    tensor); cache_bytes: how much of them to keep materialised (default: as many as fit in
    :data:`DEFAULT_CACHE_BYTES`, or a single one when one direction is over
    :data:`LARGE_DIRECTION_BYTES`). A direction that
    is not cached is regenerated when asked for; :meth:`param` then builds one parameter's
    slice alone, so a hooked module never materialises more than its own parameters' share.
    """

    def __init__(self, subset: ParameterSubset, source: Union[DirectionSource, torch.Tensor],
                 cache_bytes: Optional[int] = None) -> None:
        if torch.is_tensor(source):
            source = DenseDirections(source)
        if source.dim != subset.dim:
            raise ValueError(f"directions must be (n_dirs, {subset.dim}), got ({len(source)}, {source.dim})")
        self.subset, self.source = subset, source
        first = subset.params[0]
        self.dtype, self.device = first.dtype, first.device
        one = subset.dim * first.element_size()
        if cache_bytes is None:
            cache_bytes = one if one > LARGE_DIRECTION_BYTES else DEFAULT_CACHE_BYTES
        self.cache_bytes = int(cache_bytes)
        self.capacity = int(self.cache_bytes // one)  # whole directions kept
        self._cache: "OrderedDict[int, list[torch.Tensor]]" = OrderedDict()
        self.n_generated = 0  # whole directions built (cache misses), for tests and tuning

    def __len__(self) -> int:
        return len(self.source)

    @property
    def dim(self) -> int:
        return self.subset.dim

    def _build(self, i: int, k: Optional[int] = None) -> Union[torch.Tensor, list[torch.Tensor]]:
        """Parameter ``k``'s slice of direction ``i`` (or views of the whole direction, one per
        parameter), built from the source one RNG block at a time."""
        lo, hi = (0, self.dim) if k is None else (self.subset.offsets[k], self.subset.offsets[k] + self.subset.params[k].numel())
        buf = torch.empty(hi - lo, dtype=self.dtype, device=self.device)
        start = lo
        while start < hi:  # bounded CPU chunks, aligned to RNG blocks, whatever the parameter's size
            end = min((start // RNG_BLOCK + 1) * RNG_BLOCK, hi)
            buf[start - lo:end - lo] = self.source.slice(i, start, end)
            start = end
        if k is not None:
            return buf.view(self.subset.params[k].shape)
        return self.subset.split(buf)

    def params(self, i: int) -> list[torch.Tensor]:
        """Direction ``i`` as one tensor per parameter (from the cache, or built and cached)."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        views = self._build(i)
        self.n_generated += 1
        if self.capacity > 0:
            while len(self._cache) >= self.capacity:
                self._cache.popitem(last=False)
            self._cache[i] = views
        return views

    def param(self, i: int, k: int) -> torch.Tensor:
        """Parameter ``k``'s share of direction ``i``: a view into the cache, else built alone
        (not cached: a hooked pass asks each module for its own share only)."""
        if i in self._cache:
            return self._cache[i][k]
        return self._build(i, k)

    def prefetch(self, indices: Sequence[int]) -> None:
        """Materialise directions ``indices`` (the next pass's) if all of them fit the cache;
        otherwise leave them to :meth:`param`, which builds one parameter's share at a time."""
        wanted = list(dict.fromkeys(int(i) for i in indices))
        if len(wanted) <= self.capacity:
            for i in wanted:
                self.params(i)

    def vector(self, i: int) -> torch.Tensor:
        """Direction ``i`` as one ``(D,)`` tensor in the parameters' dtype and device."""
        return torch.cat([v.reshape(-1) for v in self.params(i)])


def as_subset_directions(subset: ParameterSubset, directions) -> SubsetDirections:
    """``directions`` (a :class:`SubsetDirections`, a source, or a dense tensor) over ``subset``."""
    if isinstance(directions, SubsetDirections):
        if directions.subset is not subset and directions.subset.names != subset.names:
            raise ValueError("the directions were built for another parameter subset")
        return directions
    return SubsetDirections(subset, directions)


def subset_slice(subset: ParameterSubset, lo: int, hi: int) -> torch.Tensor:
    """``θ[lo:hi]`` of the subset's flat parameter vector, float64 on the CPU (one slice only)."""
    parts = []
    for p, o in zip(subset.params, subset.offsets):
        a, b = max(lo, o), min(hi, o + p.numel())
        if a < b:
            parts.append(p.detach().reshape(-1)[a - o:b - o].to("cpu", torch.float64))
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)


def prior_terms(model: nn.Module, layer: LayerSpec, n_directions: int, seed: int,
                preconditioner: Optional[torch.Tensor] = None, sigma: Optional[float] = None,
                cache_bytes: Optional[int] = None):
    """Everything the Gaussian-prior estimate needs, without a dense direction array.

    Returns ``(subset, theta_sq, directions, props, w_dot_theta, sigma)``: the selected
    parameters; ``θ·θ`` (float); a :class:`SubsetDirections`; ``(n,)`` float64 ``||P u||``;
    ``(n,)`` float64 ``w_i·θ``; the prior's sigma (default: RMS of θ). Each direction is
    generated once here, one RNG block at a time, and θ is read one block's slice at a time.
    """
    subset = select_parameters(model, layer)
    source = SeededDirections(subset.dim, n_directions, seed, preconditioner)
    theta_sq = 0.0
    for lo in range(0, subset.dim, RNG_BLOCK):
        t = subset_slice(subset, lo, min(lo + RNG_BLOCK, subset.dim))
        theta_sq += float(t @ t)
    w_dot_theta = source.dot(lambda lo, hi: subset_slice(subset, lo, hi))
    sigma = math.sqrt(theta_sq / subset.dim) if sigma is None else float(sigma)
    return subset, theta_sq, SubsetDirections(subset, source, cache_bytes), source.props.clone(), w_dot_theta, sigma
