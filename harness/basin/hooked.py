"""Perturbing a torch model row by row with forward hooks, its weights untouched.

:class:`HookedPerturbation` adds, with forward hooks, the perturbation's contribution to every
module that owns a selected parameter, with a different scale (and direction) per batch row.
Every parameter of a transformer enters its module affinely: ``(W + sV) x + (b + s v) = (W x +
b) + s (V x + v)`` for ``nn.Linear`` and GPT-2's ``Conv1D``, ``E[x] + s V[x]`` for
``nn.Embedding``, ``n(x) * (g + s v)`` for the norms; so the hook adds ``s_row * (f(x; V) -
f(x; 0))`` to the module's output, where ``x`` is the module's (already perturbed) input. One
pass at about twice the cost of a plain pass then yields each row's output at its own perturbed
parameters (:func:`harness.basin.perturb.perturbed_weights` is the in-place way, one scale per
pass).

Directions come as a dense ``(n_dirs, D)`` tensor or as a
:class:`~harness.basin.directions.SubsetDirections`, which generates them from a seed on demand
(memory a small multiple of the perturbed block's, whatever ``n_dirs``).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from harness.basin.directions import SubsetDirections, as_subset_directions
from harness.basin.perturb import ParameterSubset


# Rules: add ``scale * (f(x; V) - f(x; 0))`` in place into ``out`` (the rows of one direction).
# ``out`` is a row slice of the module's freshly computed output; ``scale`` is ``(rows, 1, ..)``.
# Folding the add into the product (``addmm_``/``addcmul_``) saves a pass over the output and
# the temporary of an out-of-place ``output + scale * delta`` (the hooked pass is memory-bound
# on CPU for small models).


def _add_matmul(out: torch.Tensor, x: torch.Tensor, weight_t: torch.Tensor, scale: torch.Tensor) -> None:
    """``out += scale * (x @ weight_t)``, scaling whichever side of the product is smaller."""
    k, n = weight_t.shape
    out2 = out.view(-1, n)
    if k <= n:  # scale the input (k columns) and fuse the add into the GEMM
        out2.addmm_((x * scale).reshape(-1, k), weight_t)
    else:
        out.addcmul_((x.reshape(-1, k) @ weight_t).view_as(out), scale)


def _linear_add(module: nn.Linear, x: torch.Tensor, v: dict[str, torch.Tensor], out: torch.Tensor,
                scale: torch.Tensor) -> None:
    if "weight" in v:
        _add_matmul(out, x, v["weight"].t(), scale)
    if "bias" in v:
        out.addcmul_(scale, v["bias"])


def _conv1d_add(module: nn.Module, x: torch.Tensor, v: dict[str, torch.Tensor], out: torch.Tensor,
                scale: torch.Tensor) -> None:
    # transformers' Conv1D: y = x @ W + b with W of shape (in, out)
    if "weight" in v:
        _add_matmul(out, x, v["weight"], scale)
    if "bias" in v:
        out.addcmul_(scale, v["bias"])


def _layernorm_add(module: nn.LayerNorm, x: torch.Tensor, v: dict[str, torch.Tensor], out: torch.Tensor,
                   scale: torch.Tensor) -> None:
    if "weight" in v:
        normed = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
        out.addcmul_(normed * v["weight"], scale)
    if "bias" in v:
        out.addcmul_(scale, v["bias"])


def _rmsnorm_add(module: nn.Module, x: torch.Tensor, v: dict[str, torch.Tensor], out: torch.Tensor,
                 scale: torch.Tensor) -> None:
    # Llama-family RMSNorm: y = w * (h * rsqrt(mean(h²) + eps)).to(dtype) with h = x in float32
    h = x.to(torch.float32)
    normed = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)).to(x.dtype)
    out.addcmul_(normed * v["weight"], scale)


def _embedding_add(module: nn.Embedding, x: torch.Tensor, v: dict[str, torch.Tensor], out: torch.Tensor,
                   scale: torch.Tensor) -> None:
    out.addcmul_(F.embedding(x, v["weight"]), scale)


def _is_llama_rmsnorm(module: nn.Module, own: dict[str, torch.Tensor]) -> bool:
    return (type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")
            and set(own) == {"weight"} and tuple(module.weight.shape) == tuple(own["weight"].shape))


class HookedPerturbation:
    """Forward hooks that perturb a model row by row, without touching its weights.

    ``directions``: ``(n_dirs, D)`` perturbation vectors over ``subset``, or a
    :class:`~harness.basin.directions.SubsetDirections` (generated on demand; a module's hook
    then asks only for its own parameters' share). Before each forward pass call
    :meth:`set_rows` with, per batch row, the index of its direction and its scale; rows must
    come grouped by direction (contiguous runs). Scales are moved to the model's device. Use as a context manager: the
    hooks are removed on exit. Only modules that own a selected parameter are hooked (for a
    one-layer subset, that layer's modules). Module types with a dedicated rule: Linear,
    Embedding, LayerNorm, Llama-family RMSNorm, GPT-2 Conv1D; any other module is assumed affine
    in its own parameters and handled by calling it with the perturbation (and with zeros) in
    place of its parameters.
    """

    def __init__(self, model: nn.Module, subset: ParameterSubset,
                 directions: Union[torch.Tensor, SubsetDirections]) -> None:
        if torch.is_tensor(directions) and (directions.ndim != 2 or directions.shape[1] != subset.dim):
            raise ValueError(f"directions must be (n_dirs, {subset.dim}), got {tuple(directions.shape)}")
        self.model = model
        self.directions = as_subset_directions(subset, directions)
        index = {id(p): k for k, p in enumerate(subset.params)}
        # per hooked module: its own parameter names -> their index in the subset
        self._owners: list[tuple[nn.Module, dict[str, int]]] = []
        for module in model.modules():
            own = {name: index[id(p)] for name, p in module._parameters.items() if p is not None and id(p) in index}
            if own:
                self._owners.append((module, own))
        self._handles: list = []
        self._groups: list[tuple[int, int, int]] = []
        self._scales: Optional[torch.Tensor] = None
        self._busy = False

    def set_rows(self, direction_index: torch.Tensor, scales: torch.Tensor) -> None:
        """Per-row direction indices ``(R,)`` (grouped) and scales ``(R,)`` for the next pass."""
        idx = direction_index.tolist()
        groups, start = [], 0
        for i in range(1, len(idx) + 1):
            if i == len(idx) or idx[i] != idx[start]:
                groups.append((start, i, idx[start]))
                start = i
        if len({g[2] for g in groups}) != len(groups):
            raise ValueError("rows must be grouped by direction (each direction one contiguous run)")
        self.directions.prefetch([g[2] for g in groups])
        self._groups = groups
        self._scales = scales.to(self.directions.device)

    def __enter__(self) -> "HookedPerturbation":
        from transformers.pytorch_utils import Conv1D

        for module, own in self._owners:
            if isinstance(module, nn.Linear):
                rule = _linear_add
            elif isinstance(module, Conv1D):
                rule = _conv1d_add
            elif isinstance(module, nn.Embedding) and set(own) == {"weight"}:
                rule = _embedding_add
            elif isinstance(module, nn.LayerNorm):
                rule = _layernorm_add
            elif _is_llama_rmsnorm(module, {name: module._parameters[name] for name in own}):
                rule = _rmsnorm_add
            else:
                rule = None  # generic: affine in its own parameters
            self._handles.append(module.register_forward_hook(self._make_hook(rule, own), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _generic_delta(self, module: nn.Module, v: dict[str, torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        zeros = {n: torch.zeros_like(p) for n, p in module._parameters.items() if p is not None}
        self._busy = True
        try:
            with_v = torch.func.functional_call(module, {**zeros, **v}, args, kwargs or {})
            at_zero = torch.func.functional_call(module, zeros, args, kwargs or {})
        finally:
            self._busy = False
        return with_v - at_zero

    def _make_hook(self, rule, own: dict[str, int]):
        def hook(module, args, kwargs, output):
            if self._busy or self._scales is None:
                return None
            x = args[0] if args else next(iter(kwargs.values()))
            if output.shape[0] != self._scales.shape[0]:
                raise RuntimeError(f"{type(module).__name__} output has {output.shape[0]} rows, expected "
                                   f"{self._scales.shape[0]} (one scale per batch row)")
            scales = self._scales.to(output.dtype).view(-1, *(1,) * (output.ndim - 1))
            # in place into the module's fresh output, unless autograd may need it unchanged
            out = output.clone() if torch.is_grad_enabled() or not output.is_contiguous() else output
            for start, end, d in self._groups:
                v = {name: self.directions.param(d, k) for name, k in own.items()}
                if rule is None:
                    sub_args = tuple(a[start:end] if torch.is_tensor(a) and a.shape[:1] == output.shape[:1] else a
                                     for a in args)
                    out[start:end].addcmul_(self._generic_delta(module, v, sub_args, kwargs), scales[start:end])
                else:
                    rule(module, x[start:end], v, out[start:end], scales[start:end])
            return out

        return hook
