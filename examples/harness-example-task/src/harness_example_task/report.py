"""The ``keyword`` task's part of the leaderboard and of the run summary.

A section (:class:`harness.leaderboard.Section`) holds the newest records of this task on one
set of models; ``section.frame`` has one row per record with every scalar metric and validity
fact as a column (:func:`harness.report.records_frame`). pandas is imported here, not when
the plugin loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.plots import pyplot, save
from harness.report import column, detector_labels


def section_lines(section: Any) -> list[str]:
    """Markdown: detector x topic AUROC, the AUROC where the backdoor changes the answer, and
    each model's clean accuracy and backdoor rate."""
    lines = [f"## {section.title}", "", *section.preamble(), "",
             "Backdoored keyword spotters (example task plugin): AUROC of flagging the sentences that "
             "carry the trigger word, fitted on clean sentences; mean over seeds.", ""]
    frame = section.frame
    ok = frame[(frame["status"] == "ok") & frame["valid"]]
    if ok.empty:
        lines += ["No scored results.", ""]
    else:
        ok = ok.assign(label=detector_labels(ok), auroc_disagree=column(ok, "auroc_disagree"))
        table = ok.pivot_table(index="label", columns="dataset", values="auroc", aggfunc="mean")
        table.insert(0, "AUROC avg", ok.groupby("label")["auroc"].mean())
        table["AUROC, answer changed"] = ok.groupby("label")["auroc_disagree"].mean()
        table = table.sort_values("AUROC avg", ascending=False, kind="stable").reset_index()
        lines += [table.rename(columns={"label": "detector"}).to_markdown(index=False, floatfmt=".3f"), ""]
    models = frame.drop_duplicates(["dataset", "seed"]).sort_values(["seed", "dataset"])
    for _, row in models.iterrows():
        lines.append(f"- {row['dataset']} (seed {row['seed']}): clean accuracy {row.get('clean_accuracy', np.nan):.3f}, "
                     f"backdoor rate {row.get('backdoor_rate', np.nan):.3f}")
    lines += ["", *section.problem_lines()]
    return lines


def plots(section: Any, out_dir: Path) -> list[Path]:
    """``<slug>_auroc.png``: AUROC per detector and topic (valid episodes; none if nothing scored).
    ``section.slug`` keeps the files of two sections (e.g. two triggers) apart."""
    frame = section.frame
    ok = frame[(frame["status"] == "ok") & frame["valid"]]
    if ok.empty:
        return []
    table = ok.assign(label=detector_labels(ok)).pivot_table(index="label", columns="dataset", values="auroc")
    plt = pyplot()  # matplotlib on the Agg backend: files only, no display
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(table) * max(1, len(table.columns))), 4))
    table.plot.bar(ax=ax, rot=30)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC (triggered vs clean)")
    ax.set_title(section.title.replace("`", ""))
    return [save(fig, Path(out_dir) / f"{section.slug}_auroc.png")]


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """Run-summary columns of one record."""
    metrics, validity = record.get("metrics") or {}, record.get("validity") or {}
    return {"AUROC": metrics.get("auroc", np.nan), "AUROC, answer changed": metrics.get("auroc_disagree", np.nan),
            "backdoor rate": validity.get("backdoor_rate", np.nan)}
