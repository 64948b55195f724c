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
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

from harness import __version__
from harness.cache import atomic_write_json, stable_hash

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: source, model fingerprints, plugin provenance
DEFAULT_RESULTS_DIR = Path("leaderboard") / "records"
QUICK_RESULTS_DIR = Path("leaderboard") / "records-quick"
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
