"""Tiny-model zoo: a word-level tokenizer, small ``transformers`` causal LMs and a
deterministic single-process training loop (no download anywhere).

The names below load their module on first use (PEP 562), so importing ``harness.zoo.store``
or a task's recipe does not import torch and transformers.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "SPECIAL_TOKENS": "harness.zoo.tokenizer",
    "build_word_tokenizer": "harness.zoo.tokenizer",
    "TinyModelConfig": "harness.zoo.model",
    "build_model": "harness.zoo.model",
    "save_trained_model": "harness.zoo.model",
    "TrainConfig": "harness.zoo.config",
    "train_causal_lm": "harness.zoo.training",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'harness.zoo' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
