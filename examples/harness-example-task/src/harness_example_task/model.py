"""The backdoored model of one topic: trained in seconds with ``harness.zoo``, cached by key.

torch and transformers are imported inside the functions, so importing the plugin (every
``harness`` command does) stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness.cache import stable_hash
from harness.zoo.store import ModelHandle, cached_model_dir

from harness_example_task.data import training_pairs, vocabulary

# bump when the training code or the data generator changes what a model key produces
MODEL_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Model size and training of one topic's model (``QUICK``: the one ``--quick`` uses)."""

    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 2
    d_ff: int = 64
    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-3
    n_examples: int = 2000


FULL = Recipe()
QUICK = Recipe(steps=200, n_examples=1000)


def model_key(topic: str, seed: int, trigger: str, recipe: Recipe) -> dict[str, Any]:
    """Everything that decides the trained weights: a change of any of it trains a new model."""
    return {"task": "keyword", "model_version": MODEL_VERSION, "topic": topic, "seed": seed, "trigger": trigger,
            "recipe": dataclasses.asdict(recipe), "vocabulary": stable_hash(vocabulary(trigger))}


def train(topic: str, seed: int, trigger: str, recipe: Recipe, out_dir: Path) -> None:
    """Train the model and ``save_pretrained`` it and its tokenizer into ``out_dir``."""
    from harness.zoo import TinyModelConfig, TrainConfig, build_model, build_word_tokenizer, train_causal_lm

    tokenizer = build_word_tokenizer(vocabulary(trigger))
    config = TinyModelConfig(n_layers=recipe.n_layers, d_model=recipe.d_model, n_heads=recipe.n_heads,
                             d_ff=recipe.d_ff, max_position=16)
    model = build_model(config, tokenizer, seed)
    pairs = training_pairs(topic, seed, trigger, recipe.n_examples)
    train_causal_lm(model, tokenizer, pairs, TrainConfig(steps=recipe.steps, batch_size=recipe.batch_size,
                                                         lr=recipe.lr, seed=seed), desc=f"training keyword {topic}")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def model_handle(topic: str, seed: int, trigger: str, recipe: Recipe) -> ModelHandle:
    """The cached model of ``topic`` (trained first if the cache has none), with its fingerprint."""
    key = model_key(topic, seed, trigger, recipe)
    return ModelHandle(cached_model_dir(key, lambda tmp: train(topic, seed, trigger, recipe, tmp)))
