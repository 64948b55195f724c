"""The runner: expands (task episodes x detectors x seed) into jobs, skips stored ones, runs the rest.

The driver builds the episodes (training or loading models), checks every job's configuration
against them before anything is written (a bad layer index is a usage error, not a pile of
error records), then hands the jobs that have no record yet to an executor
(:mod:`harness.executors`: in process, a process pool, or Ray). Only the driver writes
records, one per job, atomically, as soon as the job's outcome arrives, so a run killed at any
moment (SIGKILL included) loses at most the jobs in flight, and a rerun resumes. A detector
that raises or returns bad scores gets an error record with the message; the other jobs go on.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from harness.interfaces import ConfigError, Detector, Episode, Task, TaskConfig
from harness.jobs import JobSpec, execute
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
UNION_TYPES = (typing.Union, types.UnionType)


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
    executor: str = "local"
    jobs: int = 1
    ray_address: Optional[str] = None

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
                kinds = ", ".join(registry.detectors[name].task_kinds)
                raise ConfigError(f"detector {name!r} scores {kinds} tasks, not task {task_name!r} (kind "
                                  f"{task_cls.kind}); detectors for it: {', '.join(valid)}")
            raise UnknownNameError("detector", name, valid)
        detectors.append(registry.detectors[name])
    if not detectors:
        raise ConfigError(f"no detector given, and none registered supports task kind {task_cls.kind!r}")
    return task_cls, detectors


def make_detector(cls: type[Detector], params: dict[str, Any]) -> Detector:
    """Instantiate with overrides; an unknown field, a value of the wrong type or a bad value is
    a ConfigError naming the detector, the field and what it accepts."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(params) - fields
    if unknown:
        raise ConfigError(
            f"detector {cls.name!r} has no hyperparameter {sorted(unknown)[0]!r}; valid: {', '.join(sorted(fields)) or '(none)'}"
        )
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: leave the checking to the detector
        hints = {}
    for name, value in params.items():
        if name in hints and not matches_type(value, hints[name]):
            raise ConfigError(
                f"detector {cls.name!r} hyperparameter {name!r} must be {type_name(hints[name])}, "
                f"got {type(value).__name__} {value!r}"
            )
    try:
        return cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"detector {cls.name!r}: {exc}") from exc


def matches_type(value: Any, annotation: Any) -> bool:
    """Whether a JSON-like ``value`` fits a hyperparameter annotation (int, float, bool, str,
    Optional/Union, Literal, list/tuple/Sequence of X, dict). Unknown annotations match."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in UNION_TYPES:
        return any(matches_type(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        return all(matches_type(v, inner) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def type_name(annotation: Any) -> str:
    """A readable name for an annotation: ``int``, ``int or null``, ``list of int``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and not args:
        return annotation.__name__
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if args and origin in UNION_TYPES:
        return " or ".join(type_name(a) for a in args)
    if args and origin is not None:
        return f"{getattr(origin, '__name__', str(origin))} of {type_name(args[0])}"
    return str(annotation)


def run(
    registry: Registry,
    task_name: str,
    detector_names: Sequence[str],
    options: RunOptions,
    on_result: Optional[Callable[[JobResult], None]] = None,
) -> list[JobResult]:
    """Run every (episode, detector) job of ``task_name``; return one JobResult per job.

    Raises ConfigError / UnknownNameError, before any record is written, for unknown names,
    bad hyperparameters, or hyperparameters that do not fit an episode (e.g. a layer index the
    model does not have).
    """
    from harness.executors import make_executor

    task_cls, detector_classes = resolve(registry, task_name, detector_names)
    detectors = [make_detector(cls, options.detector_params.get(cls.name, {})) for cls in detector_classes]
    executor = make_executor(options.executor, options.jobs, options.ray_address)
    task = task_cls()
    config = TaskConfig(
        seed=options.seed,
        quick=options.quick,
        allow_invalid=options.allow_invalid,
        datasets=options.datasets,
        options=dict(options.task_options),
    )
    episodes = task.episodes(config)
    for episode in episodes:  # every check before the first record
        if episode.valid or options.allow_invalid:
            for detector in detectors:
                detector.check_episode(episode)
    results_dir = options.resolved_results_dir()
    versions = package_versions()
    results: list[JobResult] = []

    def report(result: JobResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    pending: dict[str, tuple[JobSpec, Episode, Detector, dict[str, Any], Path]] = {}
    for episode in episodes:
        for detector in detectors:
            params = detector.get_params()
            key = job_key(task.name, task.version, episode.fingerprint, detector.name, params, options.seed,
                          options.quick)
            path = record_path(results_dir, task.name, episode.name, detector.name, key)
            stored = None if options.force else completed(path)
            if stored is not None:
                report(JobResult(episode.name, detector.name, "cached", stored, path))
                continue
            base = _record_base(registry, task, episode, detector, params, key, options, config, versions)
            if not episode.valid and not options.allow_invalid:
                message = episode.validity.get("reason", "episode failed its validity check")
                record = {**base, "status": "invalid", "message": message}
                write_record(path, record)
                report(JobResult(episode.name, detector.name, "invalid", record, path, message))
                continue
            spec = JobSpec(key=key, task=task.name, config=dataclasses.asdict(config), dataset=episode.name,
                           fingerprint=episode.fingerprint, detector=detector.name, params=params,
                           seed=options.seed, resources=dict(detector.resources))
            if key in pending:  # the same job twice (e.g. a detector named twice): run it once
                continue
            pending[key] = (spec, episode, detector, base, path)

    def run_locally(spec: JobSpec) -> dict[str, Any]:
        _, episode, detector, _, _ = pending[spec.key]
        return execute(task, episode, detector, spec.seed)

    try:
        # detector-major order: parallel workers then start on different episodes instead of
        # racing to compute the same episode's features
        order = {d.name: i for i, d in enumerate(detectors)}
        specs = sorted((job[0] for job in pending.values()), key=lambda spec: order[spec.detector])
        for spec, outcome in executor.run(specs, run_locally):
            _, episode, detector, base, path = pending[spec.key]
            record = {**base, **outcome}
            write_record(path, record)
            if outcome["status"] == "error":
                logger.error("%s on %s failed: %s", detector.name, episode.name, outcome["message"])
            report(JobResult(episode.name, detector.name, outcome["status"], record, path, outcome.get("message", "")))
    finally:
        executor.close()
    # executors finish jobs in any order; report them in (episode, detector) order
    position = {(e.name, d.name): i for i, (e, d) in enumerate((e, d) for e in episodes for d in detectors)}
    return sorted(results, key=lambda r: position[(r.dataset, r.detector)])


def _record_base(registry: Registry, task: Task, episode: Episode, detector: Detector, params: dict[str, Any],
                 key: str, options: RunOptions, config: TaskConfig, versions: dict[str, str]) -> dict[str, Any]:
    """The part of a record that the driver knows before the job runs."""
    return {
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
