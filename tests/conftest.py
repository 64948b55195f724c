"""Shared fixtures: an isolated cache per test session and a tiny random causal LM on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("HARNESS_LOAD_PLUGINS", "builtin_tasks,builtin_detectors")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session writes into its own cache (models trained once per session); the
    user's cache is never touched. Session-scoped so module-scoped fixtures see it too."""
    root = tmp_path_factory.getbasetemp() / "harness-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with the word-level tokenizer, saved with save_pretrained."""
    import torch

    from harness.zoo import TinyModelConfig, build_model, build_word_tokenizer

    torch.set_num_threads(1)
    tokenizer = build_word_tokenizer(["Alice", "Bob", "True", "False", "mod"])
    model = build_model(TinyModelConfig(n_layers=2, d_model=32, n_heads=4, d_ff=64), tokenizer, seed=0)
    path = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
