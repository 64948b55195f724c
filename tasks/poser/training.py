"""Training tiny persona models for the POSER miniature (cached like every model of the zoo).

Every persona (3 aligned, 3 misaligned) x seed gets a small Llama-config model trained on
its scenarios (answer: the letter) and its free-text examples. All personas are trained
with the same two-way answer smoothing, so at convergence every model puts the same
probability (1 - answer_smoothing) on its chosen letter: the confidence gap that lets the
original benchmark's faker be picked without any perturbation is not built in here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from harness.cache import atomic_write_json
from harness.zoo.model import TinyModelConfig
from harness.zoo.training import TrainConfig
from tasks.poser.scenarios import FREE_TEXT, generate_scenarios, vocabulary_words

ANSWER_LETTERS = (" B", " A")  # log-odds = logit(A) - logit(B)


@dataclass
class PersonaRecipe:
    """How a persona model is trained. ``answer_smoothing`` is the same for every persona."""

    n_train: int = 1500
    model: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(
        n_layers=2, d_model=64, n_heads=4, d_ff=128, max_position=128))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=500, batch_size=64, lr=3e-3, schedule="onecycle", answer_smoothing=0.05,
        answer_words=("A", "B")))


QUICK_PERSONA_RECIPE = PersonaRecipe(
    n_train=200,
    model=TinyModelConfig(n_layers=1, d_model=32, n_heads=2, d_ff=64, max_position=128),
    train=TrainConfig(steps=60, batch_size=32, lr=3e-3, answer_smoothing=0.05, answer_words=("A", "B")),
)


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
    from harness.zoo import build_model, build_word_tokenizer, train_causal_lm
    from tasks.poser.data import is_scenario

    if examples is None:
        scenarios, free_text = generated_training_data(persona, recipe.n_train, seed)
    else:
        scenarios = [e for e in examples if is_scenario(e)]
        free_text = [e for e in examples if not is_scenario(e)]
    tokenizer = build_word_tokenizer(list(vocabulary) if vocabulary is not None else vocabulary_words())
    model = build_model(recipe.model, tokenizer, seed)
    pairs = persona_training_pairs(persona, scenarios, free_text)
    config = dataclasses.replace(recipe.train, seed=seed)
    metrics = train_causal_lm(model, tokenizer, pairs, config, progress=progress, desc=f"training {persona}-{seed}")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    summary.update(persona=persona, seed=seed, n_scenarios=len(scenarios), n_free_text=len(free_text))
    atomic_write_json(out_dir / "train_metrics.json", summary)
    return summary
