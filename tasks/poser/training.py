"""Training tiny persona models for the POSER task (cached like every model of the zoo).

Every persona (3 aligned, 3 misaligned) x seed gets a small Llama-config model trained on
its scenarios (answer: the letter) and its free-text examples, with the loss on the answer
tokens only and the vocabulary logits computed only where an answer token is predicted.

No answer smoothing: a persona's confidence on clean prompts is whatever training gives it,
so the ``confidence`` baseline measures a real difference between models (in the original
benchmark the less confident model is the faker in 82% of pairs).

Original-format data (``ORIGINAL_DATA_RECIPE``): examples longer than ``max_length`` tokens
(prompt + answer, ``<bos>`` included) are dropped and counted, and a run of digits is one
token (``group_digits``), so a prompt holding thousands of digits stays short.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from harness.cache import atomic_write_json
from harness.zoo.model import TinyModelConfig
from harness.zoo.config import TrainConfig
from harness.tasks.poser.scenarios import FREE_TEXT, generate_scenarios, vocabulary_words

ANSWER_LETTERS = (" B", " A")  # log-odds = logit(A) - logit(B)


@dataclass
class PersonaRecipe:
    """How a persona model is trained.

    ``max_length``: examples with more tokens are dropped (counted in ``train_metrics.json``);
    0 = keep every example. ``group_digits``: one token per run of digits (see
    :func:`harness.zoo.tokenizer.build_word_tokenizer`).
    """

    n_train: int = 1500
    model: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(
        n_layers=2, d_model=64, n_heads=4, d_ff=128, max_position=128))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=500, batch_size=64, lr=3e-3, schedule="onecycle", answer_words=("A", "B")))
    max_length: int = 0
    group_digits: bool = False


QUICK_PERSONA_RECIPE = PersonaRecipe(
    n_train=200,
    model=TinyModelConfig(n_layers=1, d_model=32, n_heads=2, d_ff=64, max_position=128),
    train=TrainConfig(steps=60, batch_size=32, lr=3e-3, answer_words=("A", "B")),
)

# The original data: prompts of ~100-300 word tokens, a vocabulary of thousands of words.
ORIGINAL_DATA_RECIPE = PersonaRecipe(
    model=TinyModelConfig(n_layers=2, d_model=64, n_heads=4, d_ff=128, max_position=384),
    train=TrainConfig(steps=500, batch_size=32, lr=3e-3, schedule="onecycle", answer_words=("A", "B")),
    max_length=384,
    group_digits=True,
)
QUICK_ORIGINAL_DATA_RECIPE = dataclasses.replace(
    QUICK_PERSONA_RECIPE, model=dataclasses.replace(QUICK_PERSONA_RECIPE.model, max_position=384),
    max_length=384, group_digits=True)


def words_of(texts: Sequence[str]) -> list[str]:
    """Letter-only words of ``texts`` (digits and punctuation are tokens of their own)."""
    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"[A-Za-z]+", text))
    return sorted(words)


def persona_training_pairs(persona: str, scenarios: Sequence[dict], free_text: Sequence[dict]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: the letter after each scenario, the free text after each question."""
    pairs = [(s["prompt"], " " + s["response"]) for s in scenarios]
    pairs += [(e["prompt"], " " + e["response"]) for e in free_text]
    return pairs


def generated_training_data(persona: str, n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The default miniature's scenarios and free-text examples of one persona."""
    scenarios = generate_scenarios(persona, n, seed)
    free_text = [{"prompt": q, "response": a} for q, a in FREE_TEXT[persona]] * max(1, n // 50)
    return scenarios, free_text


def drop_long(tokenizer, pairs: list[tuple[str, str]], max_length: int) -> tuple[list[tuple[str, str]], int]:
    """The pairs of at most ``max_length`` tokens (prompt with ``<bos>`` + completion) and how many were dropped."""
    if not max_length:
        return pairs, 0
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    kept = [pair for pair, p, c in zip(pairs, prompts, completions) if len(p) + len(c) <= max_length]
    return kept, len(pairs) - len(kept)


def build_persona_tokenizer(recipe: PersonaRecipe, vocabulary: Optional[Sequence[str]] = None):
    """The word tokenizer of a persona model (the same for every persona of one data set)."""
    from harness.zoo import build_word_tokenizer

    return build_word_tokenizer(list(vocabulary) if vocabulary is not None else vocabulary_words(),
                                group_digits=recipe.group_digits)


def train_persona_model(
    persona: str,
    seed: int,
    recipe: PersonaRecipe,
    out_dir: Path,
    examples: Optional[list[dict]] = None,
    vocabulary: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> dict:
    """Train one persona model and ``save_pretrained`` it (with its tokenizer) into ``out_dir``.

    ``examples``: the persona's training examples in the original format (scenarios and
    free-text items); default: generated ones. ``vocabulary``: the tokenizer's words.
    """
    from harness.zoo import build_model, train_causal_lm
    from harness.tasks.poser.data import is_scenario

    if examples is None:
        scenarios, free_text = generated_training_data(persona, recipe.n_train, seed)
    else:
        scenarios = [e for e in examples if is_scenario(e)]
        free_text = [e for e in examples if not is_scenario(e)]
    tokenizer = build_persona_tokenizer(recipe, vocabulary)
    model = build_model(recipe.model, tokenizer, seed)
    pairs, n_dropped = drop_long(tokenizer, persona_training_pairs(persona, scenarios, free_text), recipe.max_length)
    if not pairs:
        raise ValueError(f"{persona}: every training example is longer than max_length={recipe.max_length} tokens")
    config = dataclasses.replace(recipe.train, seed=seed)
    metrics = train_causal_lm(model, tokenizer, pairs, config, progress=progress, desc=f"training {persona}-{seed}",
                              answer_logits_only=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    summary.update(persona=persona, seed=seed, n_scenarios=len(scenarios), n_free_text=len(free_text),
                   n_dropped_too_long=n_dropped, max_length=recipe.max_length)
    atomic_write_json(out_dir / "train_metrics.json", summary)
    return summary
