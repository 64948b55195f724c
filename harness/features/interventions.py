"""Model-structure helpers and residual-stream interventions for Hugging Face causal LMs.

``block_list`` finds the decoder blocks (``block_list_owner``: the module holding them);
``add_to_residual`` adds a vector to the output of one block (the residual stream after block
``layer``, i.e. ``hidden_states[layer]``) at the last position, for every row or with a per-row
scale. Hooks are always removed on exit.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Union

import torch
from torch import nn

# where the decoder blocks live in common Hugging Face causal LMs
_BLOCK_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


def block_list_owner(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the decoder blocks of a Hugging Face causal LM and the attribute name
    they are under (Llama: ``(model.model, "layers")``), so they can be swapped for a while."""
    for path in _BLOCK_LISTS:
        *parents, name = path.split(".")
        holder: Optional[nn.Module] = model
        for part in parents:
            holder = getattr(holder, part, None)
            if holder is None:
                break
        if holder is not None and isinstance(getattr(holder, name, None), nn.ModuleList):
            return holder, name
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__} (looked for {', '.join(_BLOCK_LISTS)})")


def block_list(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM (Llama: ``model.layers``, GPT-2: ``transformer.h``)."""
    holder, name = block_list_owner(model)
    return getattr(holder, name)


def n_blocks(model: nn.Module) -> int:
    return len(block_list(model))


@contextlib.contextmanager
def add_to_residual(
    model: nn.Module, layer: int, vector: torch.Tensor, scales: Union[float, torch.Tensor] = 1.0
) -> Iterator[None]:
    """Add ``scales * vector`` to the residual stream after block ``layer`` (1-based, as in
    ``hidden_states``) at the last position of every row.

    vector: (d_model,); scales: a float or a (batch,) tensor, one scale per row. With left
    padding the last position is the answer position of every row.
    """
    blocks = block_list(model)
    if not 1 <= layer <= len(blocks):
        raise IndexError(f"layer {layer} out of range: this model has blocks 1..{len(blocks)}")

    def hook(module: nn.Module, args: tuple, output):
        hidden = output[0] if isinstance(output, tuple) else output
        scale = scales if not torch.is_tensor(scales) else scales.to(hidden.dtype).view(-1, 1)
        hidden = hidden.clone()
        hidden[:, -1, :] = hidden[:, -1, :] + scale * vector.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = blocks[layer - 1].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
