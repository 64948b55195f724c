"""The one layer convention of the harness, and the one helper that resolves and checks it.

Every ``layer``/``layers`` hyperparameter and option means a **hidden-state index**, as in
``transformers``' ``output_hidden_states``: ``0`` is the embedding output, ``1..L`` the outputs
of blocks 1..L (for most models the last one has the final norm applied), negative indices
count from the end (``-1`` = the last block's output). A detector that perturbs or reads a
*block* (basin volume, activation noise) takes the block whose output is hidden state
``layer``: ``layer=1`` is the first block, so it must be in 1..L (or negative).

A hyperparameter holding one layer is annotated :data:`Layer`; ``None`` in it means the
detector's documented default (every block output for ``layers``, the middle block for a
single ``layer`` of a feature detector, the whole model for a weight-perturbing one).
"""

from __future__ import annotations

from typing import Optional, Sequence

from harness.interfaces import ConfigError

# A hidden-state index (the convention above): the type of every ``layer`` hyperparameter.
Layer = int


def resolve_layer(layer: Optional[Layer], n_layers: int, owner: str, field: str = "layer", block: bool = False) -> int:
    """``layer`` as a non-negative hidden-state index of a model with ``n_layers`` blocks
    (None: the middle block's output, :func:`middle_block`).

    ``block=True``: the layer names a block (its output), so 0, the embeddings, is refused.
    Raises a ConfigError naming ``owner`` and ``field`` and the valid range.
    """
    if layer is None:
        layer = middle_block(n_layers)
    low = 1 if block else 0
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ConfigError(f"{owner} field {field!r} must be an integer hidden-state index, got {layer!r}")
    index = layer + n_layers + 1 if layer < 0 else layer
    if not low <= index <= n_layers:
        what = (f"blocks 1..{n_layers} (layer L = the block whose output is hidden state L; "
                f"negative counts from the end)") if block else (
                f"hidden states 0..{n_layers} (0 = embeddings, 1..{n_layers} = block outputs; negative counts "
                "from the end)")
        raise ConfigError(f"{owner} field {field!r}: layer {layer} out of range; this model has {what}.")
    return index


def resolve_layers(layers: Optional[Sequence[int]], n_layers: int, owner: str, field: str = "layers") -> list[int]:
    """Hidden-state indices of ``layers`` (None = every block output, 1..n_layers), checked."""
    if layers is None:
        return list(range(1, n_layers + 1))
    if not len(layers):
        raise ConfigError(f"{owner} field {field!r} must name at least one layer or be null (every block output)")
    return list(dict.fromkeys(resolve_layer(layer, n_layers, owner, field) for layer in layers))


def middle_block(n_layers: int) -> int:
    """Hidden-state index of the middle block's output (1 of 2, 2 of 4, 2 of 3)."""
    return max(1, (n_layers + 1) // 2)
