"""The runner: expands (task episodes x detectors x seed) into jobs, skips stored ones, runs the rest.

The driver builds the episodes (training or loading models), checks every job's configuration
against them before anything is written (a bad layer index is a usage error, not a pile of
error records), then hands the jobs that have no record yet to an executor
(:mod:`harness.run.executors`: in process, a process pool, or Ray). Only the driver writes
records, one per job, atomically, as soon as the job's outcome arrives, so a run killed at any
moment (SIGKILL included) loses at most the jobs in flight, and a rerun resumes. A detector
that raises or returns bad scores gets an error record with the message; the other jobs go on.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from harness.cache import stable_hash
from harness.interfaces import ConfigError, Detector, Episode, RunContext, Task
from harness.features.items import ModelItem, TextItems
from harness.run.jobs import JobSpec, execute
from harness.plan.memory import check_fits
from harness.plan.options import validate_options
from harness.plan.params import make_detector
from harness.plugins import Registry, UnknownNameError, accepts
from harness.runtime import Runtime
from harness.runtime import use as use_runtime
from harness.zoo.sources import build_models, default_jobs
from harness.zoo.store import configure_process
from harness.records import (
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

    seed: the seed of data, models and detectors; ``seeds`` (if given) runs the task once per
        seed instead (each seed's episodes are built by their own ``Task.episodes`` call).
    detector_params: detector name -> {field: value} overriding that detector's defaults.
    task_options: ``--option`` values, checked against the task's ``options`` table (an
        unknown name or a value of the wrong type is a ConfigError) and coerced to its types.
    executor, jobs, ray_address: where jobs run (see :mod:`harness.run.executors`); ``jobs`` (None:
        the default) also sizes the pool that trains the task's models
        (:func:`harness.zoo.sources.build_models`).
    runtime: device, dtype, batch size and device map of every model the run touches (see
        :mod:`harness.runtime`); the dtype is part of the result key.
    shipped_zoo: import missing models from the repository's shipped archive of the
        leaderboard's models instead of training them (:mod:`harness.zoo.shipped`).
    results_dir: where records go; default ``results/records`` (``results/records-quick``
        with ``quick``), outside the committed ``leaderboard/``.
    """

    seed: int = 0
    seeds: Optional[Sequence[int]] = None
    quick: bool = False
    force: bool = False
    allow_invalid: bool = False
    results_dir: Optional[Path] = None
    datasets: Optional[Sequence[str]] = None
    task_options: dict[str, Any] = field(default_factory=dict)
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: str = "local"
    jobs: Optional[int] = None
    ray_address: Optional[str] = None
    runtime: Runtime = field(default_factory=Runtime)
    shipped_zoo: bool = True

    def resolved_results_dir(self) -> Path:
        if self.results_dir is not None:
            return Path(self.results_dir)
        return QUICK_RESULTS_DIR if self.quick else DEFAULT_RESULTS_DIR

    def seed_list(self) -> list[int]:
        return list(dict.fromkeys(self.seeds)) if self.seeds else [self.seed]


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
    valid = registry.detectors_for(task_cls)
    names: list[str] = []
    for name in detector_names:
        names.extend(valid if name == "all" else [name])
    detectors = []
    for name in dict.fromkeys(names):
        if name not in registry.detectors:
            raise UnknownNameError("detector", name, valid)
        cls = registry.detector(name)  # a name two plugins registered raises here
        if not accepts(cls, task_cls):
            types = ", ".join(t.__name__ for t in cls.accepts)
            raise ConfigError(f"detector {name!r} scores {types}, not the {task_cls.items.__name__} of task "
                              f"{task_name!r}; detectors for it: {', '.join(valid) or '(none)'}")
        detectors.append(cls)
    if not detectors:
        raise ConfigError(f"no detector given, and none registered accepts the {task_cls.items.__name__} of task "
                          f"{task_name!r}")
    return task_cls, detectors


def run(
    registry: Registry,
    task_name: str,
    detector_names: Sequence[str],
    options: RunOptions,
    on_result: Optional[Callable[[JobResult], None]] = None,
    on_notice: Optional[Callable[[str], None]] = None,
) -> list[JobResult]:
    """Run every (seed, episode, detector) job of ``task_name``; return one JobResult per job.

    Raises ConfigError / UnknownNameError, before any record is written, for unknown names,
    bad hyperparameters or task options, or hyperparameters that do not fit an episode (e.g. a
    layer index the model does not have). ``on_notice`` receives one line per thing the user
    should know before reading the numbers (e.g. a model that differs from the leaderboard's).
    """
    from harness.run.executors import make_executor

    task_cls, detector_classes = resolve(registry, task_name, detector_names)
    task_options = validate_options(task_cls.name, task_cls.options, options.task_options)
    detectors = [make_detector(cls, options.detector_params.get(cls.name, {})) for cls in detector_classes]
    executor = make_executor(options.executor, options.jobs or (2 if options.executor == "process" else 1),
                             options.ray_address)
    previous_runtime = use_runtime(options.runtime)  # every model the run loads sees it
    try:
        return _run_jobs(registry, task_cls(), task_options, detectors, executor, options, on_result,
                         on_notice or logger.warning)
    finally:
        use_runtime(previous_runtime)


def _run_jobs(registry: Registry, task: Task, task_options: dict[str, Any], detectors: list[Detector],
              executor: Any, options: RunOptions, on_result: Optional[Callable[[JobResult], None]],
              notice: Callable[[str], None]) -> list[JobResult]:
    """Build the episodes of every seed, check every job, write records as jobs finish."""
    configs = [RunContext(seed=seed, quick=options.quick, allow_invalid=options.allow_invalid,
                          datasets=options.datasets, options=dict(task_options))
               for seed in options.seed_list()]
    for config in configs:  # every setting of every seed is checked before anything is trained
        task.check(config)
    recipes = [recipe for config in configs for recipe in task.models(config)]
    for depth in sorted({recipe.n_layers for recipe in recipes if recipe.n_layers is not None}):
        for detector in detectors:
            detector.check_layers(depth)
    configure_process(options.runtime.resolved_device())  # torch's thread policy, once all is checked
    # the models of every seed in one pool, longest first, before any episode is built
    build_models(recipes, options.jobs or default_jobs(), shipped=options.shipped_zoo, on_notice=notice)
    built: list[tuple[RunContext, Episode]] = []
    for config in configs:
        built += [(config, check_storable(task.name, episode)) for episode in task.episodes(config)]
    runnable = [episode for _, episode in built if episode.valid or options.allow_invalid]
    for episode in runnable:  # every check before the first record
        for detector in detectors:
            for depth in model_depths(episode):
                detector.check_layers(depth)
            detector.check_episode(episode)
    check_fits(((episode, detector) for episode in runnable for detector in detectors), options.runtime)
    if not options.quick:
        for line in _reference_differences(task.name, built):
            notice(line)
    results_dir = options.resolved_results_dir()
    versions = package_versions()
    task_plugin = registry.provenance("task", task.name)
    results: list[JobResult] = []

    def report(result: JobResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    pending: dict[str, tuple[JobSpec, Episode, Detector, dict[str, Any], Path]] = {}
    for config, episode in built:
        for detector in detectors:
            params = detector.get_params()
            detector_plugin = registry.provenance("detector", detector.name)
            key = job_key(task.name, task.version, episode.fingerprint, detector.name, params, config.seed,
                          options.quick, plugins={"task": task_plugin, "detector": detector_plugin},
                          runtime=options.runtime.key())
            path = record_path(results_dir, task.name, episode.name, detector.name, key)
            stored = None if options.force else completed(path)
            if stored is not None:
                report(JobResult(episode.name, detector.name, "cached", stored, path))
                continue
            base = _record_base(task, episode, detector, params, key, config, versions,
                                {"task": task_plugin, "detector": detector_plugin}, options.runtime)
            if not episode.valid and not options.allow_invalid:
                message = episode.validity.get("reason", "episode failed its validity check")
                record = {**base, "status": "invalid", "message": message}
                write_record(path, record)
                report(JobResult(episode.name, detector.name, "invalid", record, path, message))
                continue
            spec = JobSpec(key=key, task=task.name, config=dataclasses.asdict(config), dataset=episode.name,
                           fingerprint=episode.fingerprint, detector=detector.name, params=params,
                           seed=config.seed, resources=dict(detector.resources),
                           runtime=dataclasses.asdict(options.runtime))
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
                logger.debug("%s on %s failed: %s", detector.name, episode.name, outcome["message"])  # on_result reports it
            report(JobResult(episode.name, detector.name, outcome["status"], record, path, outcome.get("message", "")))
    finally:
        executor.close()
    # executors finish jobs in any order; report them in (seed, episode, detector) order
    position = {(c.seed, e.name, d.name): i
                for i, (c, e, d) in enumerate((c, e, d) for c, e in built for d in detectors)}
    return sorted(results, key=lambda r: position[(r.record.get("seed", 0), r.dataset, r.detector)])


def model_depths(episode: Episode) -> set[int]:
    """The blocks of every model the episode's items run (from configs: no weight is loaded)."""
    if isinstance(episode.test, TextItems):
        return {episode.test.n_layers}
    return {item.handle.n_layers for item in episode.test if isinstance(item, ModelItem)}


def check_storable(task_name: str, episode: Episode) -> Episode:
    """The episode, if what records copy from it (info, validity, tags, models) is storable;
    else a ConfigError naming the task, the episode and the field, before any job runs."""
    from harness.run.jobs import json_problem

    for field_name in ("info", "validity", "tags", "models"):
        problem = json_problem(getattr(episode, field_name))
        if problem:
            raise ConfigError(f"task {task_name!r} episode {episode.name!r}: Episode.{field_name} holds {problem}; "
                              "records hold JSON, numpy arrays and paths only")
    return episode


def answer_tokens_of(episode: Episode) -> Optional[dict[str, Any]]:
    """How the episode's model reads its answers (single tokens, or the first differing token
    after a shared prefix), for the record; None when its items have no model."""
    items = episode.trusted[0] if isinstance(episode.trusted, (list, tuple)) and episode.trusted else episode.trusted
    extractor = getattr(items, "extractor", None)
    return extractor.answer_tokens().describe() if extractor is not None else None


def models_fingerprint(models: dict[str, str]) -> str:
    """One short fingerprint for a set of models: the model's own for one, a hash for several."""
    if len(models) == 1:
        return next(iter(models.values()))
    return stable_hash(sorted(models.items())) if models else ""


def _reference_differences(task_name: str, built: list[tuple[RunContext, Episode]]) -> list[str]:
    """Lines for episodes whose models differ from those the committed leaderboard used."""
    from harness.zoo.reference import load_reference, reference_differences

    reference = load_reference()
    if not reference:
        return []
    lines: list[str] = []
    for seed in dict.fromkeys(config.seed for config, _ in built):
        episodes = [episode for config, episode in built if config.seed == seed]
        lines += reference_differences(task_name, episodes, seed, reference)
    return lines


def _record_base(task: Task, episode: Episode, detector: Detector, params: dict[str, Any], key: str,
                 config: RunContext, versions: dict[str, str], plugins: dict[str, dict[str, str]],
                 runtime: Runtime) -> dict[str, Any]:
    """The part of a record that the driver knows before the job runs."""
    from harness.zoo.reference import episode_models

    models = episode_models(episode)
    return {
        "key": key,
        "task": task.name,
        "task_kind": task.kind or task.name,
        "task_version": task.version,
        "task_plugin": plugins["task"],
        "dataset": episode.name,
        "source": episode.source,
        "episode_fingerprint": episode.fingerprint,
        "model_fingerprint": models_fingerprint(models),
        "model_fingerprints": models,
        "detector": detector.name,
        "detector_plugin": plugins["detector"],
        "params": params,
        "seed": config.seed,
        "quick": config.quick,
        "runtime": runtime.record(),
        "answer_tokens": answer_tokens_of(episode),
        "valid": episode.valid,
        "validity": episode.validity,
        "config": {
            "task": dataclasses.asdict(config),
            "detector": {"name": detector.name, "params": params},
            "episode": episode.info,
        },
        "versions": versions,
    }
