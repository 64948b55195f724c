"""Result records: one JSON file per job, keyed by everything that changes the number.

A job is (task, episode, detector with its hyperparameters, seed). Its key hashes the task
name and version, the episode fingerprint (data and model weights), the detector name and
hyperparameters, the seed, quick mode, and the distribution and version of the plugins that
registered the task and the detector. Records are written atomically (temp file +
rename), so a crash never leaves a half-written record and finished jobs are never lost, with
the permissions the umask gives a new file, as standard JSON: a NaN or infinite number (e.g. the
AUROC of a subset with one class) is stored as ``null`` and reads back as ``None``
(:func:`harness.cache.atomic_write_json`); the leaderboard shows it as NaN.

The leaderboard (:mod:`harness.leaderboard`) picks records by what identifies them, not by key:
task, source, quick mode, models, episode, dataset, seed, detector, detector plugin distribution
and version, hyperparameters and setting (:func:`harness.leaderboard.report.record_setting`).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

from harness import __version__
from harness.cache import atomic_write_json, stable_hash

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: source, model fingerprints, plugin provenance
# a run's records go outside the committed leaderboard/ unless asked (--results-dir
# leaderboard/records): a run on other models never makes `harness leaderboard --check` fail
DEFAULT_RESULTS_DIR = Path("results") / "records"
QUICK_RESULTS_DIR = Path("results") / "records-quick"
LEADERBOARD_RECORDS = Path("leaderboard") / "records"
# the committed leaderboard's pages: each is a directory with records/, README.md, models.json and
# zoo/ (the archive of the models its records were computed on). The tiny models' page, then the
# pretrained tier's (LoRA adapters on a pretrained base, docs/pretrained.md), kept apart so that
# regenerating one never needs the other's models.
PRETRAINED_BOARD = Path("leaderboard") / "pretrained"
BOARDS = {LEADERBOARD_RECORDS.parent: "tiny models trained from scratch",
          PRETRAINED_BOARD: "the pretrained tier: LoRA adapters on a pretrained base"}
VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scikit-learn", "scipy", "pluggy")


def job_key(
    task: str, task_version: str, episode_fingerprint: str, detector: str, params: dict, seed: int, quick: bool,
    plugins: Optional[dict[str, dict[str, str]]] = None, runtime: Optional[dict[str, Any]] = None,
) -> str:
    """The result key: a hash of everything that changes the number, including the distribution
    and version of the plugins that registered the task and the detector (upgrading a plugin
    re-runs its jobs), and what of the runtime changes numbers (a non-float32 dtype)."""
    return stable_hash(
        {
            **({"runtime": runtime} if runtime else {}),
            "task": task,
            "task_version": task_version,
            "episode": episode_fingerprint,
            "detector": detector,
            "params": params,
            "seed": seed,
            "quick": quick,
            "plugins": {role: {k: v for k, v in info.items() if k in ("distribution", "version")}
                        for role, info in (plugins or {}).items()},
        }
    )


def record_path(results_dir: Path, task: str, dataset: str, detector: str, key: str) -> Path:
    return Path(results_dir) / task / dataset / f"{detector}-{key}.json"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "detector-harness": __version__}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_record(path: Path, record: dict[str, Any]) -> None:
    record = {"schema_version": SCHEMA_VERSION, "created_unix": round(time.time(), 3), **record}
    atomic_write_json(path, record)


def read_record(path: Path) -> Optional[dict[str, Any]]:
    """The record at ``path``, or None if it is missing or unreadable (reported)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable record %s: %s", path, exc)
        return None


def completed(path: Path) -> Optional[dict[str, Any]]:
    """The stored record if the job finished successfully (error records are retried)."""
    record = read_record(path)
    return record if record is not None and record.get("status") == "ok" else None


# fields that differ between two runs of the same job (when and how fast), nothing else may
VOLATILE_FIELDS = ("created_unix", "timings")


def record_content(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its volatile fields: what must be identical whenever the same job is
    run again, resumed after a crash, or run by another executor."""
    return {k: v for k, v in record.items() if k not in VOLATILE_FIELDS and not k.startswith("_")}


def snapshot(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Relative record path -> :func:`record_content`, for every record under ``results_dir``."""
    return {
        str(Path(record["_path"]).relative_to(results_dir)): record_content(record)
        for record in iter_records(Path(results_dir))
    }


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    """Every readable record under ``results_dir``, in path order."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        record = read_record(path)
        if record is not None and "task" in record:
            record["_path"] = str(path)
            yield record


@dataclass
class Agreement:
    """How a record compares with the leaderboard's record of the same job (same key: same
    task, detector, parameters, seed and models). ``max_diff``: the largest absolute difference
    of any numeric metric that is not a count (AUROCs, pair accuracies, their intervals);
    ``worst``: that metric. Counts (``n_*``, e.g. tied items) are left out of it: they move by
    whole items when scores move in their last bits, and ``identical`` covers them."""

    path: str
    identical: bool
    max_diff: float
    worst: str = ""


def compare_with_leaderboard(path: Path, results_dir: Path,
                             leaderboard_records: Optional[Path] = None) -> Optional[Agreement]:
    """The :class:`Agreement` of the record at ``path`` (under ``results_dir``) with the
    leaderboard's record of the same job (in ``leaderboard_records``; by default in the records of
    every page of :data:`BOARDS`); ``None`` when the leaderboard has none (other models,
    parameters or versions) or the record did not finish."""
    if leaderboard_records is None:
        for board in BOARDS:
            agreement = compare_with_leaderboard(path, results_dir, board / "records")
            if agreement is not None:
                return agreement
        return None
    record = completed(Path(path))
    if record is None:
        return None
    try:
        relative = Path(path).resolve().relative_to(Path(results_dir).resolve())
    except ValueError:
        return None
    if Path(results_dir).resolve() == Path(leaderboard_records).resolve():
        return None
    theirs = completed(Path(leaderboard_records) / relative)
    if theirs is None:
        return None
    mine_metrics, their_metrics = _numbers(record.get("metrics", {})), _numbers(theirs.get("metrics", {}))
    diffs = {name: abs(mine_metrics[name] - their_metrics[name])
             for name in mine_metrics.keys() & their_metrics.keys() if not name.startswith("n_")}
    diffs.update({name: float("inf") for name in mine_metrics.keys() ^ their_metrics.keys()})
    worst = max(sorted(diffs), key=lambda name: diffs[name], default="")
    worst = worst if diffs.get(worst, 0.0) > 0 else ""
    identical = (record.get("scores") == theirs.get("scores") and mine_metrics == their_metrics)
    return Agreement(str(relative), identical, diffs.get(worst, 0.0), worst)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Every finite number of a metrics dict, intervals flattened (``auroc_ci[0]``)."""
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        items = ({f"{name}[{i}]": item for i, item in enumerate(value)} if isinstance(value, (list, tuple))
                 else {name: value})
        flat.update({key: float(item) for key, item in items.items()
                     if isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)})
    return flat
