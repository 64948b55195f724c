"""Model sources: the recipes a task declares, and the one place the harness trains them.

A task says *what* models it needs (:meth:`harness.interfaces.Task.models` returns
:class:`ModelRecipe` objects: a cache key and a training function); the harness decides *when
and where* they are built. :func:`build_models` trains every missing model of a run, all seeds
together, in one pool of worker processes, longest first, and caches each under its key, so a
model is trained once per machine and loaded by key afterwards (:meth:`ModelRecipe.load`). A
model the repository's shipped archive holds (:mod:`harness.zoo.shipped`) is imported, not trained.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from harness.cache import stable_hash
from harness.zoo.store import ModelHandle, cached_model_dir, configure_process, is_cached, model_cache_path

logger = logging.getLogger(__name__)


def default_jobs() -> int:
    """Models trained at once when ``--jobs`` is not given: one per core, at most two (one
    torch thread each; more processes than cores slows every one of them)."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class ModelRecipe:
    """One model a task needs, built by the harness.

    Attributes:
        key: JSON data of everything that decides the trained weights (task, recipe, seed,
            data, a model version to bump when the training code changes). The model is cached
            under a hash of it: change any of it and the model is trained anew.
        train: ``train(out_dir)`` trains the model and ``save_pretrained``s it (and its
            tokenizer) into ``out_dir``. It runs in a worker process, so it must be picklable:
            a module-level function, or ``functools.partial`` of one.
        cost: relative training cost (e.g. optimiser steps), used to train the longest first.
        label: what the progress bar and log lines call it.
        n_layers: the model's blocks, when the recipe knows them: detectors' layer settings are
            then checked before anything is trained.
    """

    key: dict[str, Any]
    train: Callable[[Path], Any] = field(compare=False)
    cost: float = 1.0
    label: str = ""
    n_layers: Optional[int] = None

    @property
    def digest(self) -> str:
        return stable_hash(self.key)

    def load(self) -> ModelHandle:
        """The cached model (trained here first if the cache has none, e.g. when a task's
        episodes are built without the runner)."""
        if not is_cached(self.key):
            build_models([self], jobs=1)
        return ModelHandle(model_cache_path(self.key))


def _train_in_worker(recipe: ModelRecipe) -> str:
    """Process-pool entry point: one torch thread, train into the cache, return the directory."""
    configure_process()
    return str(cached_model_dir(recipe.key, recipe.train))


def build_models(recipes: Sequence[ModelRecipe], jobs: int, shipped: bool = True,
                 on_notice: Optional[Callable[[str], None]] = None) -> dict[str, Path]:
    """Train the missing models of ``recipes`` into the cache, ``jobs`` at a time, longest
    first; returns the directory of every recipe, by :attr:`ModelRecipe.digest`.

    ``shipped``: first import the repository's shipped archive of the leaderboard's models
    (:mod:`harness.zoo.shipped`) when it holds any missing one, so those are never retrained.
    ``on_notice`` receives one line saying so.

    Longest first: with two workers the long models pair up at the start and the short ones
    fill the end, so no core waits while the other trains a long model alone.
    """
    unique = list({recipe.digest: recipe for recipe in recipes}.values())
    paths = {r.digest: model_cache_path(r.key) for r in unique if is_cached(r.key)}
    missing = sorted((r for r in unique if r.digest not in paths), key=lambda r: -r.cost)  # stable for ties
    if missing and shipped:
        from harness.zoo.shipped import import_shipped

        imported, archives = import_shipped(r.key for r in missing)
        if archives:
            found = [r for r in missing if is_cached(r.key)]
            paths.update({r.digest: model_cache_path(r.key) for r in found})
            missing = [r for r in missing if r.digest not in paths]
            if on_notice is not None:
                on_notice(f"{len(found)} model{'s' if len(found) != 1 else ''} from the shipped zoo "
                          f"{', '.join(str(a) for a in archives)} "
                          f"(the leaderboard's own; {imported} imported into the cache, checked against its "
                          f"manifest): nothing to train for them")
    if not missing:
        return paths
    logger.info("training %d missing models", len(missing))
    desc = f"training {len(missing)} model{'s' if len(missing) != 1 else ''}"
    if jobs <= 1 or len(missing) == 1:
        for recipe in tqdm(missing, desc=desc, unit="model"):
            paths[recipe.digest] = cached_model_dir(recipe.key, recipe.train)
        return paths
    with ProcessPoolExecutor(max_workers=min(jobs, len(missing)), mp_context=get_context("spawn")) as pool:
        # submitted longest first: the pool hands them out first come, first served
        futures = {pool.submit(_train_in_worker, recipe): recipe for recipe in missing}
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="model"):
            paths[futures[future].digest] = Path(future.result())
    return paths


def train_tiny_lm(pairs: Sequence[tuple[str, str]], vocabulary: Sequence[str], out_dir: Path, seed: int, *,
                  n_layers: int = 2, d_model: int = 32, n_heads: int = 2, d_ff: int = 64, max_position: int = 16,
                  steps: int = 400, batch_size: int = 64, lr: float = 3e-3, desc: str = "training") -> dict[str, Any]:
    """Train a tiny word-level transformer on (prompt, answer) pairs and ``save_pretrained`` it
    and its tokenizer into ``out_dir``: the usual ``ModelRecipe.train`` of a task whose models
    are generated. ``vocabulary`` lists every word a prompt or answer may contain; ``seed`` sets
    the initialisation and the batch order. Returns the training metrics (final loss, ...)."""
    from harness.zoo import TinyModelConfig, TrainConfig, build_model, build_word_tokenizer, train_causal_lm

    tokenizer = build_word_tokenizer(list(vocabulary))
    config = TinyModelConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff, max_position=max_position)
    model = build_model(config, tokenizer, seed)
    metrics = train_causal_lm(model, tokenizer, list(pairs), TrainConfig(steps=steps, batch_size=batch_size, lr=lr,
                                                                         seed=seed), desc=desc)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return metrics
