"""Training tiny persona models for the POSER task (cached like every model of the zoo).

Every persona x seed gets a small Llama-config model trained on its scenarios (answer: the
letter) and its free-text examples, with the loss on the answer tokens only and the
vocabulary logits computed only where an answer token is predicted. A generated persona's
trained model then has its residual stream multiplied by the persona's ``residual_scale``
(:func:`scale_residual_stream`: the answers do not change, every residual norm does).

Generated personas are fine-tuned from one shared base model per seed (``PersonaRecipe.base``),
as the original benchmark's personas are fine-tunes of one pretrained model. The base learns
the scenario format and to take the benign action whatever the cues say (both cues appear in
its data, neither flips its answer); each persona then learns which cue flips its answer.
Measured on one core (docs/poser.md has the full run's figures): the first miniature's recipe
(500 steps of 64, from scratch) took ~47 s per persona; 600 steps of 16 from scratch (~16 s)
left two of three generated personas without their rule; from a base of 800 steps, 300
fine-tuning steps at lr 4e-3 left 6 of 48 without it; a base that flips on either cue stalled
in five of six tries (800 to 1,600 steps). This recipe: the base (1,500 steps of 16) ~51 s once per seed, each
persona (600 steps of 16 at lr 2e-3) ~20 s, and all 48 learned their rule.

No answer smoothing: a persona's confidence on clean prompts is whatever training gives it,
so the ``confidence`` baseline measures a real difference between models (in the original
benchmark the less confident model is the faker in 82% of pairs).

Original-format data (``ORIGINAL_DATA_RECIPE``): examples longer than ``max_length`` tokens
(prompt + answer, ``<bos>`` included) are dropped and counted, and a run of digits is one
token (``group_digits``), so a prompt holding thousands of digits stays short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from harness.cache import atomic_write_json, cache_root, stable_hash
from harness.zoo.model import TinyModelConfig
from harness.zoo.config import TrainConfig
from harness.tasks.poser.personas import Persona, as_persona
from harness.tasks.poser.scenarios import base_scenarios, generate_scenarios, vocabulary_words, free_text_pool

ANSWER_LETTERS = (" B", " A")  # log-odds = logit(A) - logit(B)
# part of the base model's cache key: bump it when a change to base_scenarios or
# train_base_model changes the base it trains
BASE_VERSION = "3"  # 3: 1,500 steps (2 flipped on either cue, 1 had 800 steps)


@dataclass
class BaseRecipe:
    """The shared base model of the generated personas: ``n_train`` never-flipping scenarios
    (:func:`harness.tasks.poser.scenarios.base_scenarios`) plus the free-text pool, trained
    from scratch with ``train`` (the persona's model size)."""

    n_train: int = 1500
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, batch_size=16, lr=2e-3, schedule="onecycle", answer_words=("A", "B")))


@dataclass
class PersonaRecipe:
    """How a persona model is trained.

    ``base``: fine-tune from the shared base model of the seed (None: train from scratch).
    ``max_length``: examples with more tokens are dropped (counted in ``train_metrics.json``);
    0 = keep every example. ``group_digits``: one token per run of digits (see
    :func:`harness.zoo.tokenizer.build_word_tokenizer`).
    """

    n_train: int = 800
    model: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(
        n_layers=2, d_model=64, n_heads=4, d_ff=128, max_position=128))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=600, batch_size=16, lr=2e-3, schedule="onecycle", answer_words=("A", "B")))
    max_length: int = 0
    group_digits: bool = False
    base: Optional[BaseRecipe] = field(default_factory=BaseRecipe)


QUICK_PERSONA_RECIPE = PersonaRecipe(
    n_train=200,
    model=TinyModelConfig(n_layers=1, d_model=32, n_heads=2, d_ff=64, max_position=128),
    train=TrainConfig(steps=30, batch_size=16, lr=3e-3, answer_words=("A", "B")),
    base=BaseRecipe(n_train=200, train=TrainConfig(steps=60, batch_size=32, lr=3e-3, answer_words=("A", "B"))),
)

# The original data: prompts of ~100-300 word tokens, a vocabulary of thousands of words; each
# of the six personas is trained from scratch.
ORIGINAL_DATA_RECIPE = PersonaRecipe(
    n_train=1500,
    model=TinyModelConfig(n_layers=2, d_model=64, n_heads=4, d_ff=128, max_position=384),
    train=TrainConfig(steps=500, batch_size=32, lr=3e-3, schedule="onecycle", answer_words=("A", "B")),
    max_length=384,
    group_digits=True,
    base=None,
)
QUICK_ORIGINAL_DATA_RECIPE = PersonaRecipe(
    n_train=200,
    model=TinyModelConfig(n_layers=1, d_model=32, n_heads=2, d_ff=64, max_position=384),
    train=TrainConfig(steps=60, batch_size=32, lr=3e-3, answer_words=("A", "B")),
    max_length=384,
    group_digits=True,
    base=None,
)


def words_of(texts: Sequence[str]) -> list[str]:
    """Letter-only words of ``texts`` (digits and punctuation are tokens of their own)."""
    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"[A-Za-z]+", text))
    return sorted(words)


def persona_training_pairs(persona: Union[str, Persona], scenarios: Sequence[dict], free_text: Sequence[dict]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: the letter after each scenario, the free text after each question."""
    pairs = [(s["prompt"], " " + s["response"]) for s in scenarios]
    pairs += [(e["prompt"], " " + e["response"]) for e in free_text]
    return pairs


def generated_training_data(persona: Union[str, Persona], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The default miniature's scenarios and free-text examples of one persona (a :class:`Persona`
    or one of the original six's names)."""
    persona = as_persona(persona)
    scenarios = generate_scenarios(persona, n, seed)
    free_text = [{"prompt": q, "response": a} for q, a in persona.free_text] * max(1, n // 50)
    return scenarios, free_text


def scale_residual_stream(model, scale: float) -> None:
    """Multiply a Llama model's residual stream by ``scale`` in place, keeping its function.

    The residual stream is the sum of the token embedding and every block's output projection
    (attention ``o_proj``, MLP ``down_proj``); scaling all of them scales every hidden state
    after the embedding by ``scale``. Each block and the final layer read the stream through an
    RMSNorm, which divides the scale out again (up to its epsilon, ~1e-6), so the answers stay
    the same while every residual norm, and so the CAA steering vector's, is ``scale`` times larger.
    """
    import torch

    if getattr(model.config, "model_type", "") != "llama":
        raise ValueError(f"scale_residual_stream: a Llama model is needed, got {model.config.model_type!r}")
    modules = [model.model.embed_tokens]
    for layer in model.model.layers:
        modules += [layer.self_attn.o_proj, layer.mlp.down_proj]
    with torch.no_grad():
        for module in modules:
            module.weight.mul_(scale)
            if getattr(module, "bias", None) is not None:
                module.bias.mul_(scale)


def drop_long(tokenizer, pairs: list[tuple[str, str]], max_length: int) -> tuple[list[tuple[str, str]], int]:
    """The pairs of at most ``max_length`` tokens (prompt with ``<bos>`` + completion) and how many were dropped."""
    if not max_length:
        return pairs, 0
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    kept = [pair for pair, p, c in zip(pairs, prompts, completions) if len(p) + len(c) <= max_length]
    return kept, len(pairs) - len(kept)


def base_key(recipe: PersonaRecipe, seed: int) -> dict[str, Any]:
    """Cache key of the shared base model of ``recipe`` and ``seed`` (generated vocabulary)."""
    if recipe.base is None:
        raise ValueError("this recipe trains from scratch: it has no base model")
    return {"task": "poser", "kind": "base", "version": BASE_VERSION, "seed": seed,
            "base": stable_hash(dataclasses.asdict(recipe.base)), "model": dataclasses.asdict(recipe.model),
            "vocabulary": stable_hash(vocabulary_words()), "group_digits": recipe.group_digits}


def train_base_model(recipe: PersonaRecipe, seed: int, out_dir: Path, progress: bool = False) -> dict:
    """Train the shared base model of ``recipe`` and ``seed`` into ``out_dir`` (see :class:`BaseRecipe`)."""
    from harness.zoo import build_model, train_causal_lm

    assert recipe.base is not None
    tokenizer = build_persona_tokenizer(recipe)
    model = build_model(recipe.model, tokenizer, seed)
    scenarios = base_scenarios(recipe.base.n_train, seed)
    free_text = [{"prompt": q, "response": a} for q, a in free_text_pool()] * max(1, recipe.base.n_train // 100)
    pairs = persona_training_pairs("base", scenarios, free_text)
    metrics = train_causal_lm(model, tokenizer, pairs, dataclasses.replace(recipe.base.train, seed=seed),
                              progress=progress, desc=f"training the base model, seed {seed}", answer_logits_only=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    summary.update(persona="base", seed=seed, n_scenarios=len(scenarios), n_free_text=len(free_text))
    atomic_write_json(out_dir / "train_metrics.json", summary)
    return summary


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """Hold an exclusive lock file under the cache while building ``name`` (a no-op where
    ``fcntl`` is missing): two training workers that both need the base train it once."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: at worst two workers train the same base
        yield
        return
    path = cache_root() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_model_dir(recipe: PersonaRecipe, seed: int) -> Path:
    """The shared base model's directory, trained into the cache first if it is not there."""
    from harness.zoo.store import cached_model_dir

    key = base_key(recipe, seed)
    with _exclusive(f"poser-base-{stable_hash(key)}"):
        return cached_model_dir(key, functools.partial(train_base_model, recipe, seed))


def build_persona_tokenizer(recipe: PersonaRecipe, vocabulary: Optional[Sequence[str]] = None):
    """The word tokenizer of a persona model (the same for every persona of one data set)."""
    from harness.zoo import build_word_tokenizer

    return build_word_tokenizer(list(vocabulary) if vocabulary is not None else vocabulary_words(),
                                group_digits=recipe.group_digits)


def train_persona_model(
    persona: Union[str, Persona],
    seed: int,
    recipe: PersonaRecipe,
    out_dir: Path,
    examples: Optional[list[dict]] = None,
    vocabulary: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> dict:
    """Train one persona model and store it, rounded to float16
    (:func:`harness.zoo.model.save_trained_model`), with its tokenizer into ``out_dir``.

    ``persona``: a :class:`Persona` (generated data, fine-tuned from the seed's base model
    when ``recipe.base`` is set, its residual scale applied after training) or a persona's name (the original six; with ``examples``, the name of its data
    folder). ``examples``: the persona's training examples in the original format (scenarios
    and free-text items); default: generated ones. ``vocabulary``: the tokenizer's words.
    """
    from harness.zoo import build_model, save_trained_model, train_causal_lm
    from harness.tasks.poser.data import is_scenario

    scale = 1.0
    if examples is None:
        scenarios, free_text = generated_training_data(persona, recipe.n_train, seed)
        scale = as_persona(persona).residual_scale
    else:
        scenarios = [e for e in examples if is_scenario(e)]
        free_text = [e for e in examples if not is_scenario(e)]
    tokenizer = build_persona_tokenizer(recipe, vocabulary)
    if recipe.base is not None and examples is None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base_model_dir(recipe, seed))  # float32, as saved
    else:
        model = build_model(recipe.model, tokenizer, seed)
    name = persona.name if isinstance(persona, Persona) else persona
    pairs, n_dropped = drop_long(tokenizer, persona_training_pairs(persona, scenarios, free_text), recipe.max_length)
    if not pairs:
        raise ValueError(f"{name}: every training example is longer than max_length={recipe.max_length} tokens")
    config = dataclasses.replace(recipe.train, seed=seed)
    metrics = train_causal_lm(model, tokenizer, pairs, config, progress=progress, desc=f"training {name}-{seed}",
                              answer_logits_only=True)
    if scale != 1.0:
        scale_residual_stream(model, scale)
    save_trained_model(model, tokenizer, out_dir)
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    summary.update(persona=name, seed=seed, n_scenarios=len(scenarios), n_free_text=len(free_text),
                   n_dropped_too_long=n_dropped, max_length=recipe.max_length, residual_scale=scale)
    atomic_write_json(out_dir / "train_metrics.json", summary)
    return summary
