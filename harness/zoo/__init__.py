"""Tiny-model zoo: a word-level tokenizer, small ``transformers`` causal LMs and a
deterministic single-process training loop (no download anywhere)."""

from harness.zoo.model import TinyModelConfig, build_model
from harness.zoo.tokenizer import SPECIAL_TOKENS, build_word_tokenizer
from harness.zoo.training import TrainConfig, train_causal_lm

__all__ = [
    "SPECIAL_TOKENS",
    "TinyModelConfig",
    "TrainConfig",
    "build_model",
    "build_word_tokenizer",
    "train_causal_lm",
]
