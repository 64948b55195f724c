"""What every task's report is made of: records as a table, detector labels, and the default
leaderboard section and run-summary row that a task without its own inherits.

A task renders its leaderboard section from a :class:`harness.leaderboard.Section` (the newest
records of one task, one source and one set of models); the helpers here turn those records
into a pandas frame with one row per record and a column per scalar metric and validity fact,
so a task's report code reads columns instead of walking JSON.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from harness.leaderboard import Section

# record fields every frame has, in this order
BASE_COLUMNS = ("task", "task_kind", "source", "dataset", "detector", "params", "seed", "status", "message",
                "valid", "episode_fingerprint", "model_fingerprint")


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: the base fields, then every scalar of ``metrics`` and ``validity`` as
    a column of its own name (an interval ``X_ci = [low, high]`` becomes ``X_ci_low`` and
    ``X_ci_high``), ``fit_s``/``score_s`` from the timings, and ``_labels``/``_scores``/
    ``_record`` for code that needs the raw arrays."""
    rows = []
    for record in records:
        row: dict[str, Any] = {
            "task": record["task"],
            "task_kind": record.get("task_kind", ""),
            "source": record_source(record),
            "dataset": record["dataset"],
            "detector": record["detector"],
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
                    row[f"{name}_low"], row[f"{name}_high"] = value
        timings = record.get("timings") or {}
        row["fit_s"] = timings.get("fit_s", np.nan)
        row["score_s"] = timings.get("score_s", np.nan)
        row["_labels"] = record.get("labels")
        row["_scores"] = record.get("scores")
        row["_record"] = record
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(BASE_COLUMNS))
    return frame


def record_source(record: dict[str, Any]) -> str:
    """The record's source (records written before sources existed came from generated zoos)."""
    return record.get("source") or "generated"


def record_model_fingerprint(record: dict[str, Any]) -> str:
    """The record's combined model fingerprint (older records state it in the episode info)."""
    return record.get("model_fingerprint") or ((record.get("config") or {}).get("episode") or {}).get(
        "model_fingerprint", "")


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or NaNs where no record has that metric."""
    return frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)


def detector_labels(frame: pd.DataFrame) -> pd.Series:
    """Row label per record: the detector name, plus the hyperparameters that differ between
    its settings when one detector was run with several."""
    if not len(frame):
        return pd.Series(dtype=str)
    varying: dict[str, list[str]] = {}
    for detector, group in frame.groupby("detector"):
        settings = [json.loads(p) for p in group["params"].unique()]
        keys = sorted({k for p in settings for k in p})
        varying[detector] = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in settings}) > 1]

    def label(row: pd.Series) -> str:
        keys = varying[row["detector"]]
        if not keys:
            return row["detector"]
        params = json.loads(row["params"])
        return f"{row['detector']} ({', '.join(f'{k}={params.get(k)}' for k in keys)})"

    return frame.apply(label, axis=1)


def fmt_ci(ci: Optional[list[float]]) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def default_summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """Run-summary columns for a task that defines none: AUROC and its interval."""
    metrics = record.get("metrics") or {}
    return {"AUROC": metrics.get("auroc", np.nan), "95% interval": fmt_ci(metrics.get("auroc_ci"))}


def default_section(section: "Section") -> list[str]:
    """A detector x dataset table of AUROC (mean over seeds) with the item interval, and a
    row of errors and invalid episodes: what a task plugin without its own report gets."""
    lines = [f"## {section.title}", "", *section.preamble(), ""]
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
