"""One job: fit a detector on an episode's trusted items, score its test items, compute metrics.

A job is described by a :class:`JobSpec`, plain JSON-serialisable data, so it can travel to
another process or a Ray worker. A worker rebuilds the episode from the task (its models load
from the cache by key) and checks that the rebuilt episode has the fingerprint the driver saw;
it returns the outcome, and only the driver writes records. Jobs are independent and
idempotent: running one twice gives the same outcome.
"""

from __future__ import annotations

import dataclasses
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Optional

import numpy as np

from harness.cache import stable_hash
from harness.interfaces import ConfigError, Detector, Episode, Scores, Task, RunContext
from harness.scoring import default_metrics


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job, as plain data.

    ``resources`` is what the detector declares (``{"cpus": 1, "gpus": 0}`` by default); the
    Ray executor requests it for the job.
    """

    key: str
    task: str
    config: dict[str, Any]
    dataset: str
    fingerprint: str
    detector: str
    params: dict[str, Any]
    seed: int
    resources: dict[str, float] = field(default_factory=lambda: {"cpus": 1.0, "gpus": 0.0})
    runtime: dict[str, Any] = field(default_factory=dict)

    def task_config(self) -> RunContext:
        return RunContext(**self.config)


def job_seed(seed: int, dataset: str, detector: str) -> int:
    """The seed of the global RNGs during one job: a function of the job alone, so a job gives
    the same numbers whichever executor runs it and whatever ran before it in that process."""
    return int(stable_hash({"seed": seed, "dataset": dataset, "detector": detector}, length=8), 16)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (for plugins that use them unseeded)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def execute(task: Task, episode: Episode, detector: Detector, seed: int) -> dict[str, Any]:
    """Fit a fresh copy of ``detector`` on the episode and score it.

    Returns the outcome part of a record: ``status`` "ok" with metrics, timings, scores (null
    where not finite), ``scored`` (the detector's :class:`~harness.interfaces.Scores` mask, only
    when it leaves items out), labels, tags and diagnostics, or ``status`` "error" with the message and traceback (a failing
    plugin is reported, never raised). Diagnostics JSON cannot hold are left out with a warning:
    they never cost the scores.
    """
    fresh = dataclasses.replace(detector)  # type: ignore[type-var]  # no state leaks between jobs
    seed_everything(job_seed(seed, episode.name, detector.name))
    timings: dict[str, float] = {}
    warnings: list[str] = []
    try:
        start = time.perf_counter()
        fresh.fit(episode.trusted)
        timings["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = Scores.of(fresh.score(episode.test), len(episode.labels))
        timings["score_s"] = time.perf_counter() - start
        diagnostics = fresh.diagnostics()
        problem = json_problem(diagnostics)
        if problem:
            warnings.append(f"diagnostics() returned {problem}; records hold JSON only, so no diagnostics were stored")
            diagnostics = {}
        metrics = task.metrics(episode, scores, seed)
        if metrics is None:
            metrics = default_metrics(episode.labels, scores.values, scores.kept(), episode.tags, seed)
        problem = json_problem(metrics)
        if problem:
            raise TypeError(f"the task's metrics() returned {problem}; records hold JSON only")
    except Exception as exc:
        return error_outcome(exc)
    return {
        "status": "ok",
        "metrics": metrics,
        "timings": timings,
        "scores": [float(v) if np.isfinite(v) else None for v in scores.values],
        # which items count, when the detector left some out (absent: every item)
        **({} if scores.kept().all() else {"scored": scores.kept().tolist()}),
        "labels": np.asarray(episode.labels, dtype=int).tolist(),
        "tags": {name: np.asarray(tag).tolist() for name, tag in episode.tags.items()},
        "diagnostics": diagnostics,
        **({"warnings": warnings} if warnings else {}),
    }


def json_problem(value: Any, where: str = "") -> str:
    """Where ``value`` holds something a record cannot store (``""`` if nothing): records take
    JSON types plus numpy scalars and arrays and paths (converted when written), nothing else
    (a set, a tensor, an arbitrary object, a non-string key)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"a non-string key {key!r} at {where or 'the top level'}"
            problem = json_problem(item, f"{where}.{key}" if where else repr(key))
            if problem:
                return problem
        return ""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{where}[{index}]")
            if problem:
                return problem
        return ""
    if value is None or isinstance(value, (str, bool, int, float, np.generic, np.ndarray, PurePath)):
        return ""
    return f"a {type(value).__module__}.{type(value).__qualname__} at {where or 'the top level'}"


def error_outcome(exc: BaseException) -> dict[str, Any]:
    return {"status": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}


# --- the worker side ------------------------------------------------------------------------
# Episodes rebuilt by this worker process: several jobs on one episode load its models once.
_EPISODES: dict[str, Episode] = {}
_REGISTRY: Optional[Any] = None


def run_in_worker(spec: JobSpec) -> dict[str, Any]:
    """Run ``spec`` in a worker process (process pool or Ray): rebuild the episode, check its
    fingerprint against the driver's, run the job. Never raises: failures are error outcomes."""
    global _REGISTRY
    try:
        from harness.plugins import get_registry
        from harness import runtime
        from harness.plan.params import make_detector
        from harness.zoo.store import configure_process

        settings = runtime.from_dict(spec.runtime)
        runtime.use(settings)  # the driver's device, dtype and batch size
        if _REGISTRY is None:
            configure_process(settings.resolved_device())
            _REGISTRY = get_registry()
        task = _REGISTRY.task(spec.task)()
        episode = _episode_for(task, spec)
        detector = make_detector(_REGISTRY.detector(spec.detector), spec.params)
        return execute(task, episode, detector, spec.seed)
    except Exception as exc:
        return error_outcome(exc)


def _episode_for(task: Task, spec: JobSpec) -> Episode:
    memo_key = stable_hash([spec.task, spec.config, spec.dataset, spec.fingerprint])
    if memo_key not in _EPISODES:
        config = spec.task_config()
        # build only this episode when the task filters by dataset name; else build all and pick
        try:
            episodes = task.episodes(dataclasses.replace(config, datasets=[spec.dataset]))
        except ConfigError:
            episodes = []
        if not any(e.name == spec.dataset for e in episodes):
            episodes = task.episodes(config)
        matches = [e for e in episodes if e.name == spec.dataset]
        if not matches:
            raise RuntimeError(f"the worker's task {spec.task!r} builds no episode named {spec.dataset!r}")
        _EPISODES[memo_key] = matches[0]
    episode = _EPISODES[memo_key]
    if episode.fingerprint != spec.fingerprint:
        raise RuntimeError(
            f"episode {spec.dataset!r} rebuilt in the worker has fingerprint {episode.fingerprint}, the driver's is "
            f"{spec.fingerprint}: the worker must run the same code and see the same cache (HARNESS_CACHE)"
        )
    return episode
