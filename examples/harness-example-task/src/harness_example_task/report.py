"""The ``keyword`` task's part of the leaderboard and of the run summary.

A section (:class:`harness.leaderboard.Section`) holds the newest records of this task on one
set of models; ``section.frame`` has one row per record with every scalar metric and validity
fact as a column (:func:`harness.report.records_frame`). pandas is imported here, not when
the plugin loads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """Run-summary columns of one record."""
    metrics, validity = record.get("metrics") or {}, record.get("validity") or {}
    return {"AUROC": metrics.get("auroc", np.nan), "AUROC, answer changed": metrics.get("auroc_disagree", np.nan),
            "backdoor rate": validity.get("backdoor_rate", np.nan)}
