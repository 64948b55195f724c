"""What every task's report is made of: records as a table, detector labels, and the default
leaderboard section and run-summary row that a task without its own inherits.

A task renders its leaderboard section from a :class:`Section` (the newest
records of one task, one source and one set of models, made with one setting); the helpers
here turn those records into a pandas frame with one row per record and a column per scalar
metric and validity fact, so a task's report code reads columns instead of walking JSON.

What identifies a record, for the leaderboard (:mod:`harness.leaderboard`):

* its models: :func:`record_models` (role -> model fingerprint; records of a task without
  model fingerprints are identified by their episode fingerprint instead);
* its row: the detector, the distribution and version of the plugin that registered it
  (:func:`record_plugin`) and its hyperparameters. :func:`detector_labels` names a row by the
  detector, plus the version where one detector has records of several versions and the
  hyperparameters that differ where it was run with several settings;
* its setting (:func:`record_setting`): what else changes its number without changing the
  models: the task's version and plugin, a non-default dtype, and the validity gate the task
  applied (the ``gate``, ``threshold``, ``thresholds`` and ``*_threshold`` entries of the
  record's ``validity``, where the built-in tasks state their gate). Records of different
  settings are never averaged.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

# record fields every frame has, in this order
BASE_COLUMNS = ("task", "task_kind", "task_version", "source", "quick", "dataset", "detector", "detector_distribution",
                "detector_version", "params", "seed", "status", "message", "valid", "episode_fingerprint",
                "model_fingerprint")
# the entries of a record's ``validity`` that state its gate (settings, not measurements)
GATE_KEYS = ("gate", "threshold", "thresholds")


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: the base fields, then every scalar of ``metrics`` and ``validity`` as
    a column of its own name (an interval ``X_ci = [low, high]`` becomes ``X_ci_low`` and
    ``X_ci_high``; a null, what a record stores for NaN, becomes NaN), ``fit_s``/``score_s``
    from the timings, and ``_labels``/``_scores``/``_record`` for code that needs the raw arrays."""
    rows = []
    for record in records:
        distribution, version = record_plugin(record, "detector")
        row: dict[str, Any] = {
            "task": record["task"],
            "task_kind": record.get("task_kind", ""),
            "task_version": str(record.get("task_version", "")),
            "source": record_source(record),
            "quick": bool(record.get("quick", False)),
            "dataset": record["dataset"],
            "detector": record["detector"],
            "detector_distribution": distribution,
            "detector_version": version,
            "params": json.dumps(record.get("params") or {}, sort_keys=True),
            "seed": record.get("seed", 0),
            "status": record.get("status", ""),
            "message": record.get("message", ""),
            "valid": bool(record.get("valid", False)),
            "episode_fingerprint": record.get("episode_fingerprint", ""),
            "model_fingerprint": record_model_fingerprint(record),
        }
        for facts in (record.get("validity") or {}, record.get("metrics") or {}):
            for name, value in facts.items():
                if name in row:
                    continue
                if isinstance(value, (bool, int, float)) or value is None:
                    row[name] = np.nan if value is None else value
                elif isinstance(value, list) and len(value) == 2 and name.endswith("_ci"):
                    row[f"{name}_low"], row[f"{name}_high"] = (np.nan if v is None else v for v in value)
        timings = record.get("timings") or {}
        row["fit_s"] = _number(timings.get("fit_s"))
        row["score_s"] = _number(timings.get("score_s"))
        row["_labels"] = record.get("labels")
        row["_scores"] = record.get("scores")
        row["_record"] = record
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(BASE_COLUMNS))
    return frame


def _number(value: Any) -> float:
    """``value`` as a float; NaN for None (a stored NaN) or a missing value."""
    return np.nan if value is None else value


def record_source(record: dict[str, Any]) -> str:
    """The record's source (``"generated"``: a task's own zoo)."""
    return record.get("source") or "generated"


def record_model_fingerprint(record: dict[str, Any]) -> str:
    """The record's combined model fingerprint (``""`` when its task states no model)."""
    return record.get("model_fingerprint") or ""


def record_models(record: dict[str, Any]) -> dict[str, str]:
    """Role -> model fingerprint of every model behind the record (``{}`` when the task states none)."""
    models = record.get("model_fingerprints")
    if models:
        return dict(models)
    fingerprint = record_model_fingerprint(record)
    return {"model": fingerprint} if fingerprint else {}


def models_identity(models: dict[str, str], episode_fingerprint: str) -> str:
    """A string naming a set of models: its fingerprints, or, for a record or ``models.json``
    entry that names no model, its episode fingerprint (the best that can be said of it)."""
    if models:
        return json.dumps(sorted(models.items()))
    return json.dumps(["episode", episode_fingerprint or ""])


def record_models_identity(record: dict[str, Any]) -> str:
    """:func:`models_identity` of a record."""
    return models_identity(record_models(record), record.get("episode_fingerprint", ""))


def record_plugin(record: dict[str, Any], role: str) -> tuple[str, str]:
    """(distribution, version) of the plugin that registered the record's ``role`` ("task" or
    "detector"); empty strings in records written before plugin provenance was stored."""
    info = record.get(f"{role}_plugin") or {}
    return str(info.get("distribution") or ""), str(info.get("version") or "")


def record_gate(record: dict[str, Any]) -> dict[str, Any]:
    """The gate settings the task stated in the record's ``validity`` (see the module docstring)."""
    return {key: value for key, value in sorted((record.get("validity") or {}).items())
            if key in GATE_KEYS or key.endswith(("_threshold", "_thresholds"))}


def record_setting(record: dict[str, Any]) -> dict[str, Any]:
    """What changes the record's number besides its models, dataset, seed and detector row: the
    task version, the task plugin's distribution and version, a non-default dtype (as in the
    result key) and the validity gate (:func:`record_gate`). JSON-serialisable."""
    dtype = (record.get("runtime") or {}).get("dtype")
    return {
        "task_version": str(record.get("task_version", "")),
        "task_plugin": list(record_plugin(record, "task")),
        "dtype": dtype if dtype not in (None, "float32") else "",
        "gate": record_gate(record),
    }


def describe_setting(setting: dict[str, Any], against: Optional[dict[str, Any]] = None) -> str:
    """A short text of ``setting`` (only what differs from ``against``, when given)."""
    parts = []
    for name, value in setting.items():
        if against is not None and against.get(name) == value:
            continue
        if name == "gate":
            other = (against or {}).get("gate", {})
            shown = {k: v for k, v in value.items() if against is None or other.get(k) != v}
            gone = [k for k in other if k not in value]
            text = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in shown.items())
            text += (", " if text and gone else "") + ", ".join(f"no {k}" for k in gone)
            parts.append(f"gate {text or 'none'}")
        elif name == "task_plugin":
            parts.append(f"task plugin {' '.join(v for v in value if v) or 'unknown'}")
        elif name == "dtype":
            parts.append(f"dtype {value or 'float32'}")
        else:
            parts.append(f"task version {value or 'unknown'}")
    return "; ".join(parts)


@dataclass
class Section:
    """The records of one task, one source, quick or full-size models, and one set of models.

    Records of other models are in other sections; records of these models made with another
    setting (task version or plugin, dtype, validity gate) or on another episode are left out
    of the tables (``left_out``), listed, never averaged (see the module docstring).

    Attributes:
        task, task_kind, source: what the records are of.
        index: 0 for the reference models of this (task, source, quick) (``models.json``'s,
            or else the first recorded); 1, 2, ... for other model sets (each listed with its
            fingerprints, never averaged with the reference).
        records: the newest record of each job setting of these models, one setting, one
            episode per (dataset, seed): what the tables show.
        frame: :func:`harness.leaderboard.report.records_frame` of ``records``.
        models: one entry per (dataset, seed) of ``records``: its episode and model fingerprints.
        slug: a file-name prefix for this section's plots (``mad`` for the first generated
            MAD section, so plot names stay stable).
        quick: whether these are quick-mode records (tiny models; never in a full-size section).
        left_out: records of these models with another setting or episode (not in ``frame``).
        setting: the setting of every record in ``records``
            (:func:`harness.leaderboard.report.record_setting`), e.g. ``setting["gate"]``, the validity
            gate the task applied: a report says so when it is not the task's default.
    """

    task: str
    task_kind: str
    source: str
    index: int
    records: list[dict[str, Any]]
    frame: pd.DataFrame
    models: list[dict[str, Any]]
    slug: str
    quick: bool = False
    left_out: list[dict[str, Any]] = field(default_factory=list)
    setting: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        title = f"task `{self.task}`" + ("" if self.source == "generated" else f", {self.source}")
        title += ", quick models" if self.quick else ""
        return title if self.index == 0 else f"{title}, other models ({self.index})"

    def models_line(self) -> str:
        """The models behind every number of the section, with short fingerprints."""
        cells = []
        for entry in self.models:
            fingerprints = entry["model_fingerprints"]
            if not fingerprints:  # a record written before model fingerprints were stored
                models = f"episode `{entry['episode_fingerprint'][:8]}`"
            elif len(fingerprints) == 1:
                models = f"`{entry['model_fingerprint'][:8]}`"
            else:
                models = f"{len(fingerprints)} models, combined `{entry['model_fingerprint'][:8]}`"
            cells.append(f"{entry['dataset']} (seed {entry['seed']}) {models}")
        return "Models: " + ("; ".join(cells) if cells else "none shown") + "."

    def preamble(self) -> list[str]:
        """The lines every section starts with: its models, and a warning on non-reference sets."""
        lines = [self.models_line()]
        if self.index:
            lines += ["", f"These records come from models that differ from the first `{self.task}` section's "
                          "(a retrained zoo or an older model): they are shown apart and never averaged with it."]
        return lines

    def problem_lines(self) -> list[str]:
        """One line per error record and per invalid episode (not scored), and one per group of
        left-out records (same models, another setting or episode)."""
        lines = []
        for _, row in self.frame[self.frame["status"] == "error"].iterrows():
            lines.append(f"- error: `{row['detector']}` on {row['dataset']} (seed {row['seed']}): {row['message'][:120]}")
        invalid = self.frame[self.frame["status"] == "invalid"].drop_duplicates(["dataset", "seed"])
        for _, row in invalid.iterrows():
            lines.append(f"- not scored: {row['dataset']} (seed {row['seed']}): {row['message'][:160]}")
        lines += self._left_out_lines()
        return lines + ([""] if lines else [])

    def _left_out_lines(self) -> list[str]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for record in self.left_out:
            setting = record_setting(record)
            if setting != self.setting:
                why = f"another setting ({describe_setting(setting, self.setting)})"
            else:
                why = (f"another episode (`{record.get('episode_fingerprint', '')[:8]}`: other data or task "
                       "options)")
            groups.setdefault(why, []).append(record)
        lines = []
        for why, records in groups.items():
            cells = [f"`{r['detector']}` on {r['dataset']} (seed {r.get('seed', 0)})" for r in records]
            shown = ", ".join(cells[:4]) + (f" and {len(cells) - 4} more" if len(cells) > 4 else "")
            lines.append(f"- left out: {len(records)} record{'s' if len(records) != 1 else ''} of these models with "
                         f"{why}: {shown}; never averaged with the numbers above.")
        return lines


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or NaNs where no record has that metric."""
    return frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)


def detector_labels(frame: pd.DataFrame) -> pd.Series:
    """Row label per record: the detector name, plus its plugin's version where the frame holds
    records of several versions of it (``name (v0.2.0)``; the distribution too where two
    distributions registered it), and the hyperparameters that differ between its settings
    when one detector was run with several. Two records get one label exactly when they have
    the same detector, plugin distribution and version, and hyperparameters: one row."""
    if not len(frame):
        return pd.Series(dtype=str)
    frame = frame.copy()
    for name in ("detector_distribution", "detector_version"):
        if name not in frame.columns:  # a frame built by hand, without provenance
            frame[name] = ""
    varying: dict[str, list[str]] = {}
    versions: dict[str, str] = {}  # detector -> "" (one version), "version" or "distribution"
    for detector, group in frame.groupby("detector"):
        settings = [json.loads(p) for p in group["params"].unique()]
        keys = sorted({k for p in settings for k in p})
        varying[detector] = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in settings}) > 1]
        plugins = set(zip(group["detector_distribution"], group["detector_version"]))
        versions[detector] = "" if len(plugins) == 1 else (
            "distribution" if len({d for d, _ in plugins}) > 1 else "version")

    def label(row: pd.Series) -> str:
        parts = []
        if versions[row["detector"]]:
            version = f"v{row['detector_version']}" if row["detector_version"] else "version unknown"
            if versions[row["detector"]] == "distribution":
                version = f"{row['detector_distribution'] or 'unknown distribution'} {version}"
            parts.append(version)
        keys = varying[row["detector"]]
        if keys:
            params = json.loads(row["params"])
            parts += [f"{k}={params.get(k)}" for k in keys]
        return f"{row['detector']} ({', '.join(parts)})" if parts else row["detector"]

    return frame.apply(label, axis=1)


def fmt_ci(ci: Optional[list[float]]) -> str:
    """``[low, high]`` to 3 decimals ("" for no interval; a stored null shows as nan)."""
    return "" if not ci else f"[{_number(ci[0]):.3f}, {_number(ci[1]):.3f}]"


def report_of(task: Any, part: str) -> Callable[..., Any]:
    """The function ``part`` (``section``, ``plots``, ``summary_row`` or ``summary_notes``) of
    ``task``'s report module (``Task.report``), or the default report's when the task has none.
    An error importing the module propagates: the caller reports it and keeps the other tasks."""
    module = importlib.import_module(task.report) if getattr(task, "report", "") else None
    return getattr(module, part, None) or DEFAULT_REPORT[part]


def default_summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """Run-summary columns for a task that defines none: AUROC and its interval."""
    metrics = record.get("metrics") or {}
    return {"AUROC": _number(metrics.get("auroc")), "95% interval": fmt_ci(metrics.get("auroc_ci"))}


def default_section(section: Section) -> list[str]:
    """A detector x dataset table of AUROC (mean over seeds) with the item interval, and a
    row of errors and invalid episodes: what a task plugin without its own report gets."""
    lines = [f"## {section.title}", "", *section.preamble(), ""]
    gate = (getattr(section, "setting", None) or {}).get("gate")
    if gate:  # what decided which episodes count: say it, it may be an override
        lines += [f"Validity gate of these records (from their validity facts): "
                  f"{', '.join(f'{k}={json.dumps(v, sort_keys=True)}' for k, v in gate.items())}.", ""]
    frame = section.frame
    ok = frame[(frame["status"] == "ok") & frame["valid"]].copy()
    if ok.empty or "auroc" not in ok.columns:
        lines += ["No scored results.", ""]
    else:
        ok["label"] = detector_labels(ok)
        ok["auroc_ci_low"], ok["auroc_ci_high"] = column(ok, "auroc_ci_low"), column(ok, "auroc_ci_high")
        table = ok.groupby(["label", "dataset"]).agg(
            auroc=("auroc", "mean"), low=("auroc_ci_low", "mean"), high=("auroc_ci_high", "mean"), seeds=("seed", "nunique"))
        cells = table.apply(lambda r: f"{r['auroc']:.3f} [{r['low']:.2f}, {r['high']:.2f}]", axis=1).unstack("dataset")
        cells.insert(0, "AUROC avg", ok.groupby("label")["auroc"].mean())
        cells = cells.sort_values("AUROC avg", ascending=False, kind="stable").reset_index()
        cells = cells.rename(columns={"label": "detector"})
        lines += ["AUROC (mean over seeds) [95% bootstrap interval over test items] per dataset.", "",
                  cells.to_markdown(index=False, floatfmt=".3f"), ""]
    lines += section.problem_lines()
    return lines


def default_plots(section: Section, out_dir: Path) -> list[Path]:
    """No plots: what a task without its own report draws."""
    return []


def default_summary_notes(records: list[dict[str, Any]]) -> list[str]:
    """No notes before the run summary."""
    return []


DEFAULT_REPORT: dict[str, Callable[..., Any]] = {
    "section": default_section,
    "plots": default_plots,
    "summary_row": default_summary_row,
    "summary_notes": default_summary_notes,
}
