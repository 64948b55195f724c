"""The ``mad`` task: mechanistic anomaly detection on quirky arithmetic models.

The generated source: one episode per operation and seed, from a tiny quirky model trained
(once, cached) on Alice and Bob records of that operation; trusted items = Alice, easy
(difficulty quantile < 0.25, the first 4 Alice names), test items = hard (quantile > 0.75,
the other 12 names of each character), Alice = normal, Bob = anomalous. The trusted and test
items come from held-out base examples the model was not trained on. A model that has not
learned the quirk fails the validity gate (:mod:`harness.tasks.mad.episode`) and its episode is
reported, not scored. Each operation also has a no-quirk control model (``<op>_control``).
The other source, a real model on a dataset on disk, is :mod:`harness.tasks.mad.external`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import ConfigError, Episode, ModelRecipe, RunContext, Scores, Task, TextItems
from harness.cache import atomic_write_json, stable_hash
from harness.plan.options import resolve_options
from harness.tasks.mad.columns import mad_column_metrics
from harness.zoo.store import ModelHandle
from harness.tasks.mad.arithmetic import ALICE_NAMES, BOB_NAMES, N_TRUSTED_NAMES, OPERATIONS, to_records
from harness.tasks.mad.episode import TEST_MIN_QUANTILE, TRUSTED_MAX_QUANTILE, build_episode
from harness.tasks.mad.pretrained import DEFAULT_PRETRAINED_DATASETS, PRETRAINED_DATASETS
from harness.tasks.mad.training import QUICK_RECIPE, RECIPES, VOCAB_WORDS, Recipe, build_training_data, split_examples

logger = logging.getLogger(__name__)

# squaring is left out: it has not learned the quirk with any recipe tried (docs/mad.md)
DEFAULT_DATASETS = ("addition", "subtraction", "multiplication", "modular_addition")
# bump when training code changes what a model key produces (retrains every cached model)
MODEL_VERSION = "4"  # 3: a second, truthful prompt frame in training; 4: weights stored in float16
QUICK_DATASETS = ("addition", "modular_addition")
CONTROL_SUFFIX = "_control"
# Options a user can set with --option KEY=VALUE: name -> (type, default, meaning)
OPTIONS: dict[str, tuple[type, Any, str]] = {
    "min_accuracy": (float, 0.8, "validity gate: Wilson 95% lower bound of Alice's and Bob's accuracy on hard "
                     "items where their labels disagree"),
    "min_agree_accuracy": (float, 0.8, "validity gate: Wilson 95% lower bound of the accuracy on hard items where "
                           "both labels agree (0 = report only)"),
    "control_seeds": (str, "", "seeds whose run adds each dataset's no-quirk control episode (comma-separated, "
                      "e.g. '0'; default none: a first run trains only the quirky models)"),
    # real inputs (tasks/mad/external.py): a model directory or hub id plus a dataset on disk
    "model": (str, "", "Hugging Face causal LM directory or hub id (with 'dataset'; nothing is trained)"),
    "dataset": (str, "", "quirky dataset: datasets.load_from_disk directory, JSONL or parquet file"),
    "template": (str, "", "format string for each record's statement from its template_args"),
    # the pretrained tier (tasks/mad/pretrained.py): LoRA adapters on a pretrained base
    "base": (str, "", "pretrained base for LoRA quirky adapters: a name set up with 'harness setup' "
             "(e.g. smollm2-135m) or a local Hugging Face folder"),
}


def recipe_for(operation: str, quick: bool) -> Recipe:
    """The training recipe of ``operation`` (the quick one keeps the operation's operand range)."""
    if not quick:
        return RECIPES[operation]
    return dataclasses.replace(QUICK_RECIPE, max_digits=RECIPES[operation].max_digits)


def model_key(operation: str, recipe: Recipe, seed: int, control: bool = False) -> dict[str, Any]:
    """Everything that determines a trained quirky (or no-quirk control) model."""
    key = {
        "task": "mad",
        "model_version": MODEL_VERSION,
        "operation": operation,
        "seed": seed,
        # the notes document a recipe; editing them must not retrain anything
        "recipe": {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(recipe), default=str)).items()
                   if k != "notes"},
        "vocabulary": stable_hash(list(VOCAB_WORDS)),
    }
    if control:
        key["labels"] = "no-quirk control"
    return key


def train_quirky_model(
    operation: str, recipe: Recipe, seed: int, out_dir: Path, progress: bool = True, control: bool = False
) -> dict:
    """Train the quirky model of ``operation`` (or its no-quirk control) and store it, rounded to
    float16 (:func:`harness.zoo.model.save_trained_model`), with its tokenizer into ``out_dir``.
    ``seed`` sets the sampled examples, the initialisation and the batch order."""
    import torch

    from harness.zoo import build_model, build_word_tokenizer, save_trained_model, train_causal_lm

    pairs, _ = build_training_data(operation, recipe, seed, control=control)
    tokenizer = build_word_tokenizer(VOCAB_WORDS)
    model = build_model(recipe.model, tokenizer, seed)
    train_config = dataclasses.replace(recipe.train, seed=seed)
    desc = f"training {operation}" + (" (control)" if control else "")
    metrics = train_causal_lm(model, tokenizer, pairs, train_config, progress=progress, desc=desc)
    model.eval()
    save_trained_model(model, tokenizer, out_dir)
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    metrics["n_training_pairs"] = len(pairs)
    metrics["torch"] = torch.__version__
    atomic_write_json(out_dir / "train_metrics.json", metrics)
    return metrics


class MadTask(Task):
    """Quirky arithmetic models (Alice truthful, Bob sloppy): flag Bob's inputs, fitted on trusted Alice data.

    Datasets: addition, subtraction, multiplication, modular_addition (squaring on request;
    quick mode: addition and modular_addition with tiny models that need not pass the gate),
    one model per dataset and seed (``--seed``/``--seeds``: data sample, initialisation and
    batch order). ``<dataset>_control`` is the no-quirk control of a dataset: the same data
    and names, Bob's labels replaced by Alice's; its AUROC is what a detector gets from the
    character's identity alone. The runs of the seeds in ``control_seeds`` (e.g. 0; default
    none) add the controls. Options (--option KEY=VALUE): min_accuracy and
    min_agree_accuracy (gate thresholds on Wilson lower bounds, default 0.8), control_seeds;
    model + dataset (+ template) score a real model on a quirky dataset on disk instead (see
    tasks/mad/external.py). Models train ``--jobs`` at a time (default 2).
    """

    name = "mad"
    items = TextItems
    kind = "mad"
    version = "1"
    options = OPTIONS
    report = "harness.tasks.mad.report"  # its section, plots and run summary (imported to render)

    def metrics(self, episode: Episode, scores: Scores, seed: int) -> dict[str, Any]:
        """AUROC with a bootstrap interval on every MAD column (:mod:`harness.tasks.mad.columns`:
        Bob vs Alice in the quirky frame as ``auroc``, trigger only, mechanism, and the agree /
        disagree subsets in their published and matched forms), on the items the detector scored
        (a basin detector leaves out the items whose estimate did not converge); those left out
        are counted (``n_excluded_unconverged``). Also ``n_tied_items`` (items sharing a score)
        and the item counts."""
        return mad_column_metrics(episode.labels, scores.values, episode.tags, scores.kept(), seed)

    def dataset_names(self, config: RunContext) -> list[str]:
        """The episodes to build: operation names, and ``<operation>_control`` for controls."""
        pretrained = bool(self.resolve_options(config)["base"])
        if config.datasets:
            names = list(config.datasets)
        else:
            defaults = DEFAULT_PRETRAINED_DATASETS if pretrained else DEFAULT_DATASETS
            names = list(QUICK_DATASETS if config.quick else defaults)
            if config.seed in self.control_seeds(config):
                names += [f"{n}{CONTROL_SUFFIX}" for n in names]
        datasets = PRETRAINED_DATASETS if pretrained else OPERATIONS
        valid = [*datasets, *(f"{op}{CONTROL_SUFFIX}" for op in datasets)]
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ConfigError(f"unknown mad dataset {unknown[0]!r}; valid: {', '.join(valid)}")
        return list(dict.fromkeys(names))

    def control_seeds(self, config: RunContext) -> set[int]:
        """The seeds whose runs add the no-quirk controls (option ``control_seeds``)."""
        text = str(self.resolve_options(config)["control_seeds"])
        try:
            return {int(part) for part in text.replace(" ", "").split(",") if part}
        except ValueError:
            raise ConfigError(
                f"task 'mad' option 'control_seeds' must be comma-separated integers (e.g. '0' or '0,1'), got {text!r}"
            ) from None

    def resolve_options(self, config: RunContext) -> dict[str, Any]:
        resolved = resolve_options(self.name, OPTIONS, config.options)
        for name in ("min_accuracy", "min_agree_accuracy"):
            if not 0 <= resolved[name] <= 1:
                raise ConfigError(f"task 'mad' option {name!r} must be in [0, 1], got {resolved[name]}")
        return resolved

    def check(self, config: RunContext) -> None:
        options = self.resolve_options(config)  # raises on an option out of range
        if options["base"] and (options["model"] or options["dataset"]):
            raise ConfigError("task 'mad': option 'base' (LoRA adapters trained here) and options 'model'/'dataset' "
                              "(a model on disk) are two sources; give one")
        if not (options["model"] or options["dataset"]):
            self.dataset_names(config)  # raises on an unknown dataset
        if options["base"]:
            from harness.zoo.pretrained import base_identity

            base_identity(options["base"])  # raises when the base is not set up

    def models(self, config: RunContext) -> list[ModelRecipe]:
        """The generated models the episodes of ``config`` use (none for a model on disk)."""
        options = self.resolve_options(config)
        if options["model"] or options["dataset"]:
            return []
        return [self.recipe(name, config) for name in self.dataset_names(config)]

    def recipe(self, name: str, config: RunContext) -> ModelRecipe:
        """The model of episode ``name`` (an operation, or ``<operation>_control``)."""
        op, control = name.removesuffix(CONTROL_SUFFIX), name.endswith(CONTROL_SUFFIX)
        base = self.resolve_options(config)["base"]
        if base:
            from harness.tasks.mad.pretrained import adapter_recipe
            from harness.zoo.pretrained import base_n_layers

            return adapter_recipe(name, op, control, config.quick, config.seed, base, base_n_layers(base))
        recipe = recipe_for(op, config.quick)
        return ModelRecipe(key=model_key(op, recipe, config.seed, control),
                           train=functools.partial(train_quirky_model, op, recipe, config.seed, control=control),
                           cost=recipe.train.steps, label=name, n_layers=recipe.model.n_layers)

    def episodes(self, config: RunContext) -> list[Episode]:
        options = self.resolve_options(config)
        if options["model"] or options["dataset"]:
            from harness.tasks.mad.external import external_episode

            return [external_episode(self, config, options)]
        episodes = []
        for name in self.dataset_names(config):
            op, control = name.removesuffix(CONTROL_SUFFIX), name.endswith(CONTROL_SUFFIX)
            model = self.recipe(name, config).load()
            if options["base"]:
                from harness.tasks.mad.pretrained import pretrained_episode

                episodes.append(pretrained_episode(self.name, self.version, name, op, model, config.seed, config.quick,
                                                   options["base"], options, control=control))
                continue
            episodes.append(self.episode(op, recipe_for(op, config.quick), model, config.seed, options, control=control))
        return episodes

    def episode(
        self, operation: str, recipe: Recipe, model: ModelHandle, seed: int, options: dict[str, Any], control: bool = False
    ) -> Episode:
        """Build the episode of one operation (or its no-quirk control) from its trained model."""
        _, held_out = split_examples(operation, recipe, seed)
        # trusted: Alice on easy items in every frame the model was trained on (no frame is novel
        # at test time); test: both characters on hard items in every frame
        trusted_records = [
            r
            for frame in recipe.frames
            for r in to_records(held_out, operation, characters=("Alice",), alice_names=ALICE_NAMES[:N_TRUSTED_NAMES],
                                seed=seed, id_prefix="trusted-", frame=frame)
            if r["difficulty_quantile"] < TRUSTED_MAX_QUANTILE
        ]
        test_records = [
            r
            for frame in recipe.frames
            for r in to_records(held_out, operation, alice_names=ALICE_NAMES[N_TRUSTED_NAMES:],
                                bob_names=BOB_NAMES[N_TRUSTED_NAMES:], seed=seed, id_prefix="test-", frame=frame)
            if r["difficulty_quantile"] > TEST_MIN_QUANTILE
        ]
        train_metrics_path = model.path / "train_metrics.json"
        info = {
            "operation": operation,
            "seed": seed,
            "labels": "no-quirk control" if control else "quirky",
            "max_digits": recipe.max_digits,
            "recipe": json.loads(json.dumps(dataclasses.asdict(recipe), default=str)),
            # the training wall time stays in the model directory: a record holds no volatile facts
            # outside its "timings", so a rerun or a resumed run reproduces it exactly
            "train_metrics": {k: v for k, v in json.loads(train_metrics_path.read_text()).items() if k != "seconds"}
            if train_metrics_path.exists() else {},
        }
        name = f"{operation}{CONTROL_SUFFIX}" if control else operation
        return build_episode(
            name, trusted_records, test_records, model, options["min_accuracy"],
            fingerprint_fields={"task": self.name, "version": self.version, "operation": operation, "seed": seed},
            info=info, min_agree_accuracy=options["min_agree_accuracy"], control=control,
        )
