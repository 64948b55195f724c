"""``harness zoo retrain``: train the leaderboard's models from scratch here and say how they differ.

The shipped archive (:mod:`harness.zoo.shipped`) makes every run score the leaderboard's exact
models; this command keeps training a verified path. It trains a task's recipes into a cache of
its own (never touching the one that holds the shipped models: a retrained model has the same
key), runs one detector on them with the leaderboard's task options, and prints per model:

* whether its fingerprint equals the shipped model's (weights depend on the CPU's kernels);
* its validity gate against the shipped model's, and how far the gate's accuracies moved;
* the drift of the detector's metric against the leaderboard's record on the shipped model.

That is the cross-machine reproducibility report: what a number on the leaderboard is worth
for someone who trains the models anew.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from harness.cache import cache_root
from harness.records import LEADERBOARD_RECORDS, iter_records
from harness.zoo.reference import DEFAULT_REFERENCE, GENERATED_SOURCE, load_reference

DEFAULT_OUT = Path("results") / "retrain"


@dataclass
class RetrainRow:
    """One retrained episode against the leaderboard's."""

    dataset: str
    seed: int
    models_equal: int
    models_total: int
    fingerprint: str
    shipped_fingerprint: str
    valid: Optional[bool]
    shipped_valid: Optional[bool]
    accuracy_shift: Optional[float]
    metric: Optional[float]
    shipped_metric: Optional[float]

    @property
    def drift(self) -> Optional[float]:
        if self.metric is None or self.shipped_metric is None:
            return None
        return self.metric - self.shipped_metric


def default_cache() -> Path:
    """A cache beside the usual one (``<cache>-retrain``): retrained models share the shipped
    models' keys, so they must never land in the same cache."""
    root = cache_root()
    return root.with_name(root.name + "-retrain")


@contextmanager
def using_cache(path: Path) -> Iterator[None]:
    previous = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HARNESS_CACHE", None)
        else:
            os.environ["HARNESS_CACHE"] = previous


def leaderboard_options(task: str, records_dir: Path = LEADERBOARD_RECORDS) -> dict[str, Any]:
    """The task options the leaderboard's records of ``task`` were run with (their
    ``config.task.options``); ``{}`` when there are none."""
    for record in iter_records(Path(records_dir) / task):
        if record.get("source", GENERATED_SOURCE) == GENERATED_SOURCE and not record.get("quick"):
            return dict(((record.get("config") or {}).get("task") or {}).get("options") or {})
    return {}


def retrain(registry: Any, task: str, detector: str, seeds: Optional[Sequence[int]] = None,
            datasets: Optional[Sequence[str]] = None, cache: Optional[Path] = None, out_dir: Path = DEFAULT_OUT,
            jobs: Optional[int] = None, metric: str = "auroc", on_notice: Any = None) -> list[RetrainRow]:
    """Train ``task``'s models for ``seeds`` (default: the leaderboard's) into ``cache``, score
    ``detector`` on them (records in ``out_dir/records``) and compare each episode with the
    leaderboard's (``leaderboard/models.json`` and ``leaderboard/records``)."""
    from harness.run.runner import RunOptions, run

    reference = [e for e in load_reference(DEFAULT_REFERENCE)
                 if e["task"] == task and e.get("source", GENERATED_SOURCE) == GENERATED_SOURCE and not e.get("quick")]
    if seeds is None:
        seeds = sorted({e["seed"] for e in reference}) or [0]
    options = RunOptions(seeds=list(seeds), datasets=datasets, task_options=leaderboard_options(task),
                         allow_invalid=True, shipped_zoo=False, results_dir=Path(out_dir) / "records", jobs=jobs)
    cache = Path(cache) if cache is not None else default_cache()

    def notice(line: str) -> None:  # "your model differs from the leaderboard's": the table says it per model
        if on_notice is not None and "from the leaderboard's" not in line:
            on_notice(line)

    with using_cache(cache):
        results = run(registry, task, [detector], options, on_notice=notice)
    shipped = _shipped_records(task, detector)
    rows = []
    for result in results:
        record = result.record
        seed = record.get("seed", 0)
        entry = next((e for e in reference if e["dataset"] == result.dataset and e["seed"] == seed), None)
        mine = dict(record.get("model_fingerprints") or {})
        theirs = dict(entry["model_fingerprints"]) if entry else {}
        theirs_record = shipped.get((result.dataset, seed, json.dumps(theirs, sort_keys=True),
                                     json.dumps(record.get("params"), sort_keys=True)))
        rows.append(RetrainRow(
            dataset=result.dataset, seed=seed,
            models_equal=sum(mine.get(role) == fp for role, fp in theirs.items()), models_total=len(theirs),
            fingerprint=_one(mine), shipped_fingerprint=_one(theirs),
            valid=(record.get("validity") or {}).get("valid", record.get("valid")),
            shipped_valid=None if theirs_record is None else theirs_record.get("valid"),
            accuracy_shift=None if theirs_record is None else accuracy_shift(record, theirs_record),
            metric=_metric(record, metric), shipped_metric=None if theirs_record is None else _metric(theirs_record, metric),
        ))
    return rows


def accuracy_shift(mine: dict[str, Any], theirs: dict[str, Any]) -> Optional[float]:
    """The largest change of any accuracy the validity gate reads (``*accuracy`` fields)."""
    a, b = mine.get("validity") or {}, theirs.get("validity") or {}
    shifts = [abs(a[k] - b[k]) for k in a.keys() & b.keys()
              if k.endswith("accuracy") and isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))]
    return max(shifts) if shifts else None


def _shipped_records(task: str, detector: str) -> dict[tuple, dict[str, Any]]:
    found = {}
    for record in iter_records(LEADERBOARD_RECORDS / task):
        if record.get("detector") != detector or record.get("quick"):
            continue
        key = (record.get("dataset"), record.get("seed", 0), json.dumps(record.get("model_fingerprints") or {}, sort_keys=True),
               json.dumps(record.get("params"), sort_keys=True))
        if key not in found or record.get("created_unix", 0) > found[key].get("created_unix", 0):
            found[key] = record
    return found


def _metric(record: dict[str, Any], name: str) -> Optional[float]:
    value = (record.get("metrics") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def _one(fingerprints: dict[str, str]) -> str:
    if len(fingerprints) == 1:
        return next(iter(fingerprints.values()))[:8]
    return f"{len(fingerprints)} models" if fingerprints else "-"


def report(rows: Sequence[RetrainRow], task: str, detector: str, metric: str) -> str:
    """The per-model table in Markdown, then one line of totals."""
    def gate(valid: Optional[bool]) -> str:
        return "-" if valid is None else ("pass" if valid else "FAIL")

    def number(value: Optional[float], signed: bool = False) -> str:
        return "-" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")

    lines = [f"| {task} dataset | seed | model (retrained / shipped) | equal | gate (retrained / shipped) "
             f"| gate accuracy moved by | {detector} {metric} (retrained / shipped) | drift |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        equal = "yes" if r.models_equal == r.models_total and r.models_total else (
            f"{r.models_equal}/{r.models_total}" if r.models_total > 1 else "no")
        lines.append(f"| {r.dataset} | {r.seed} | {r.fingerprint} / {r.shipped_fingerprint} | {equal} "
                     f"| {gate(r.valid)} / {gate(r.shipped_valid)} | {number(r.accuracy_shift)} "
                     f"| {number(r.metric)} / {number(r.shipped_metric)} | {number(r.drift, signed=True)} |")
    drifts = [abs(r.drift) for r in rows if r.drift is not None]
    same = sum(r.models_equal == r.models_total and r.models_total > 0 for r in rows)
    flips = sum(r.valid is not None and r.shipped_valid is not None and r.valid != r.shipped_valid for r in rows)
    summary = f"{same} of {len(rows)} episodes retrained to the shipped models exactly; {flips} changed their gate verdict"
    if drifts:
        summary += f"; largest |drift| of {metric}: {max(drifts):.3f}"
    return "\n".join([*lines, "", summary])
