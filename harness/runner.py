"""The runner: expands (task episodes x detectors x seed) into jobs, skips stored ones, runs the rest.

Every job writes one record atomically as soon as it finishes, so an interrupted run loses
at most the job in flight and a rerun resumes. A detector that raises or returns bad scores
gets an error record with the message; the other jobs go on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from harness.interfaces import ConfigError, Detector, Episode, Task, TaskConfig
from harness.plugins import Registry, UnknownNameError
from harness.results import (
    DEFAULT_RESULTS_DIR,
    QUICK_RESULTS_DIR,
    completed,
    job_key,
    package_versions,
    record_path,
    write_record,
)

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What a run does besides which task and detectors.

    detector_params: detector name -> {field: value} overriding that detector's defaults.
    task_options: task-specific options (validated by the task; a bad one is a ConfigError).
    """

    seed: int = 0
    quick: bool = False
    force: bool = False
    allow_invalid: bool = False
    results_dir: Optional[Path] = None
    datasets: Optional[Sequence[str]] = None
    task_options: dict[str, Any] = field(default_factory=dict)
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolved_results_dir(self) -> Path:
        if self.results_dir is not None:
            return Path(self.results_dir)
        return QUICK_RESULTS_DIR if self.quick else DEFAULT_RESULTS_DIR


@dataclass
class JobResult:
    """Outcome of one job: status is "ok", "cached" (stored record reused), "error" or "invalid"."""

    dataset: str
    detector: str
    status: str
    record: dict[str, Any]
    path: Path
    message: str = ""


def resolve(registry: Registry, task_name: str, detector_names: Sequence[str]) -> tuple[type[Task], list[type[Detector]]]:
    """Look up the task and detectors; unknown names raise UnknownNameError listing valid ones.

    ``"all"`` as a detector name means every registered detector that supports the task.
    """
    task_cls = registry.task(task_name)
    names: list[str] = []
    for name in detector_names:
        names.extend(registry.detectors_for(task_cls.kind) if name == "all" else [name])
    detectors = []
    for name in dict.fromkeys(names):
        if name not in registry.detectors or task_cls.kind not in registry.detectors[name].task_kinds:
            valid = registry.detectors_for(task_cls.kind)
            if name in registry.detectors:
                raise UnknownNameError(f"detector for task {task_name!r} (kind {task_cls.kind})", name, valid)
            raise UnknownNameError("detector", name, valid)
        detectors.append(registry.detectors[name])
    if not detectors:
        raise ConfigError(f"no detector given, and none registered supports task kind {task_cls.kind!r}")
    return task_cls, detectors


def make_detector(cls: type[Detector], params: dict[str, Any]) -> Detector:
    """Instantiate with overrides; an unknown field or a bad value is a ConfigError naming it."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(params) - fields
    if unknown:
        raise ConfigError(
            f"detector {cls.name!r} has no hyperparameter {sorted(unknown)[0]!r}; valid: {', '.join(sorted(fields)) or '(none)'}"
        )
    try:
        return cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"detector {cls.name!r}: {exc}") from exc


def check_scores(scores: Any, n_items: int) -> np.ndarray:
    """The detector contract: (n_items,) finite floats. Raises ValueError naming the problem."""
    array = np.asarray(scores, dtype=float)
    if array.shape != (n_items,):
        raise ValueError(f"score() returned shape {array.shape}, expected ({n_items},)")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"score() returned {int((~np.isfinite(array)).sum())} non-finite values")
    return array


def run(
    registry: Registry,
    task_name: str,
    detector_names: Sequence[str],
    options: RunOptions,
    on_result: Optional[Callable[[JobResult], None]] = None,
) -> list[JobResult]:
    """Run every (episode, detector) job of ``task_name``; return one JobResult per job."""
    task_cls, detector_classes = resolve(registry, task_name, detector_names)
    detectors = [make_detector(cls, options.detector_params.get(cls.name, {})) for cls in detector_classes]
    task = task_cls()
    config = TaskConfig(
        seed=options.seed,
        quick=options.quick,
        allow_invalid=options.allow_invalid,
        datasets=options.datasets,
        options=dict(options.task_options),
    )
    episodes = task.episodes(config)
    results_dir = options.resolved_results_dir()
    versions = package_versions()
    results: list[JobResult] = []
    for episode in episodes:
        for detector in detectors:
            result = _run_job(registry, task, episode, detector, options, config, results_dir, versions)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _run_job(
    registry: Registry,
    task: Task,
    episode: Episode,
    detector: Detector,
    options: RunOptions,
    config: TaskConfig,
    results_dir: Path,
    versions: dict[str, str],
) -> JobResult:
    params = detector.get_params()
    key = job_key(task.name, task.version, episode.fingerprint, detector.name, params, options.seed, options.quick)
    path = record_path(results_dir, task.name, episode.name, detector.name, key)
    if not options.force:
        stored = completed(path)
        if stored is not None:
            return JobResult(episode.name, detector.name, "cached", stored, path)
    base = {
        "key": key,
        "task": task.name,
        "task_kind": task.kind,
        "task_version": task.version,
        "task_plugin": registry.origin("task", task.name),
        "dataset": episode.name,
        "episode_fingerprint": episode.fingerprint,
        "detector": detector.name,
        "detector_plugin": registry.origin("detector", detector.name),
        "params": params,
        "seed": options.seed,
        "quick": options.quick,
        "valid": episode.valid,
        "validity": episode.validity,
        "config": {
            "task": dataclasses.asdict(config),
            "detector": {"name": detector.name, "params": params},
            "episode": episode.info,
        },
        "versions": versions,
    }
    if not episode.valid and not options.allow_invalid:
        message = episode.validity.get("reason", "episode failed its validity check")
        record = {**base, "status": "invalid", "message": message}
        write_record(path, record)
        return JobResult(episode.name, detector.name, "invalid", record, path, message)
    fresh = dataclasses.replace(detector)  # type: ignore[type-var]  # no state leaks between episodes
    timings: dict[str, float] = {}
    try:
        start = time.perf_counter()
        fresh.fit(episode.trusted)
        timings["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = check_scores(fresh.score(episode.test), len(episode.labels))
        timings["score_s"] = time.perf_counter() - start
    except Exception as exc:  # a failing plugin is reported; the run goes on
        message = f"{type(exc).__name__}: {exc}"
        logger.error("%s on %s failed: %s", detector.name, episode.name, message)
        record = {**base, "status": "error", "message": message, "traceback": traceback.format_exc(limit=8)}
        write_record(path, record)
        return JobResult(episode.name, detector.name, "error", record, path, message)
    labels = np.asarray(episode.labels, dtype=int)
    metrics = task.metrics(episode, scores, options.seed)
    record = {
        **base,
        "status": "ok",
        "metrics": metrics,
        "timings": timings,
        "scores": scores.tolist(),
        "labels": labels.tolist(),
        "tags": {name: np.asarray(tag).tolist() for name, tag in episode.tags.items()},
        "diagnostics": fresh.diagnostics() if hasattr(fresh, "diagnostics") else {},
    }
    write_record(path, record)
    return JobResult(episode.name, detector.name, "ok", record, path)
