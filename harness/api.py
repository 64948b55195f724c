"""The plugin API: the one module a detector-harness plugin imports. Everything else is private.

A detector plugin needs ``hookimpl``, ``Detector`` and the item type it scores (``TextItems``
or ``ModelItems``); optionally ``Scores`` (to leave items out) and ``ConfigError`` (to refuse a
bad hyperparameter). A task plugin adds ``Task``, ``Episode``, ``RunContext`` and, when the
harness trains its models, ``ModelRecipe`` and ``train_tiny_lm``.

Conventions, once: scores are higher = more suspicious; a ``Layer`` is a hidden-state index
(0 = embeddings, 1..L = block outputs, negative counts from the end; ``resolve_layer`` checks
one against a model's depth); labels are 1 = anomalous / misaligned.
"""

from __future__ import annotations

from harness import hookimpl
from harness.interfaces import ConfigError, Detector, Episode, NotFittedError, RunContext, Scores, Task
from harness.features.items import ModelItem, ModelItems, TextItems
from harness.layers import Layer, resolve_layer
from harness.zoo.sources import ModelRecipe, train_tiny_lm


__all__ = [
    "hookimpl",
    "Detector",
    "Task",
    "Episode",
    "RunContext",
    "TextItems",
    "ModelItems",
    "ModelItem",
    "Scores",
    "Layer",
    "resolve_layer",
    "ModelRecipe",
    "train_tiny_lm",
    "ConfigError",
    "NotFittedError",
]
