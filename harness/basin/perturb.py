"""Parameter subsets of a torch model, and perturbing their weights in place along ``theta + s * w``.

:func:`select_parameters` picks the parameters a basin is measured over (a decoder block, a
submodule, named parameters or all of them) as a :class:`ParameterSubset`, the flat vector
``θ`` of dimension ``D`` that directions (:mod:`harness.basin.directions`) are drawn in.
:func:`perturbed_weights` adds ``s * w`` to those weights in place for one scale and restores
them bit-for-bit in ``finally`` by copying back a saved copy of the original values
(subtracting ``s * w`` again would leave float rounding error in the weights). Running a batch
with a different scale and direction per row, weights untouched, is
:class:`harness.basin.hooked.HookedPerturbation`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import torch
from torch import nn

from harness.features.interventions import block_list

LayerSpec = Union[None, int, str, Sequence[str]]


@dataclass
class ParameterSubset:
    """The parameters a basin is measured over, in a fixed order.

    names: parameter names (as in ``model.named_parameters()``, tied parameters once);
    params: the parameters themselves; offsets: start of each in the flat vector; dim: D.
    """

    names: list[str]
    params: list[nn.Parameter]
    offsets: list[int]
    dim: int

    def flat(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """θ as one ``(D,)`` vector."""
        return torch.cat([p.detach().reshape(-1).to(dtype) for p in self.params])

    def split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Views of a ``(..., D)`` tensor shaped like each parameter: ``(..., *param.shape)``."""
        lead = vector.shape[:-1]
        return [vector[..., o:o + p.numel()].reshape(*lead, *p.shape) for o, p in zip(self.offsets, self.params)]


def select_parameters(model: nn.Module, layer: LayerSpec = None) -> ParameterSubset:
    """Choose the parameters whose basin is measured.

    layer: ``None`` for every parameter; an int ``i`` for the parameters of decoder block
    ``i`` (``model.model.layers[i]`` for Llama, ``model.transformer.h[i]`` for GPT-2);
    a string for the parameters of the submodule of that name (e.g. ``"lm_head"``);
    a list of parameter names for exactly those parameters.
    """
    named = list(model.named_parameters())
    if layer is None:
        chosen = named
    elif isinstance(layer, int) and not isinstance(layer, bool):
        blocks = block_list(model)
        if not -len(blocks) <= layer < len(blocks):
            raise IndexError(f"layer {layer} out of range: the model has {len(blocks)} blocks")
        ids = {id(p) for p in blocks[layer].parameters()}
        chosen = [(n, p) for n, p in named if id(p) in ids]
    elif isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"no submodule named {layer!r}; e.g. {', '.join(list(modules)[1:6])}")
        ids = {id(p) for p in modules[layer].parameters()}
        chosen = [(n, p) for n, p in named if id(p) in ids]
    else:
        wanted = list(layer)
        by_name = dict(named)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(f"unknown parameter names {missing}; valid names include {list(by_name)[:5]}")
        chosen = [(n, by_name[n]) for n in wanted]
    if not chosen:
        raise ValueError(f"layer={layer!r} selects no parameters")
    offsets, total = [], 0
    for _, p in chosen:
        offsets.append(total)
        total += p.numel()
    return ParameterSubset([n for n, _ in chosen], [p for _, p in chosen], offsets, total)


@contextlib.contextmanager
def perturbed_weights(subset: ParameterSubset, direction: Union[torch.Tensor, Sequence[torch.Tensor]],
                      scale: float) -> Iterator[None]:
    """Within the block the subset's parameters are ``θ + scale * direction``.

    direction: a ``(D,)`` tensor, or one tensor per parameter of the subset (as
    :meth:`SubsetDirections.params` returns). A copy of the original values is saved (one
    block's worth of memory) and copied back in ``finally``: afterwards every parameter is
    bitwise what it was, even when the body raises.
    """
    parts = subset.split(direction) if torch.is_tensor(direction) else list(direction)
    if len(parts) != len(subset.params):
        raise ValueError(f"direction has {len(parts)} parts, the subset {len(subset.params)} parameters")
    saved = [p.detach().clone() for p in subset.params]
    try:
        with torch.no_grad():
            for p, v in zip(subset.params, parts):
                p.add_(v.to(p.device, p.dtype).view_as(p), alpha=float(scale))
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(subset.params, saved):
                p.copy_(s)
