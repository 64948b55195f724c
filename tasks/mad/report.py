"""The MAD task's report: its leaderboard section (summary, per-dataset table, published
figures), its plot, and its run-summary columns. Called through the ``MadTask`` methods
:meth:`~harness.interfaces.Task.leaderboard_section`, ``leaderboard_plots`` and ``summary_row``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from harness.leaderboard import Section
from harness.plots import pyplot, save
from harness.report import column, detector_labels, fmt_ci
from harness.scoring import mean_auroc_interval, summary_std

# The published MAD table (docs/mad.md): our detector name -> published name and AUROC avg
# from the seed's 10-dataset table (7B-class models). Reference only: never mixed with ours.
PUBLISHED_MAD = {
    "activations_lof": ("activations lof", 0.762),
    "activations_mahalanobis": ("activations mahalanobis", 0.741),
    "flow_mahalanobis": ("flow mahalanobis", 0.737),
    "probe_lof_mean": ("probe lof mean", 0.737),
    "sae_l0": ("sae l0", 0.737),
    "attribution_lof_mean": ("attribution lof mean", 0.730),
    "sae_diag_mahalanobis": ("sae diag mahalanobis", 0.729),
    "probe_mahalanobis_mean": ("probe mahalanobis mean", 0.652),
    "attribution_mahalanobis_mean": ("attribution mahalanobis mean", 0.639),
    "flow_laplace": ("flow laplace", 0.581),
    "basin_mahalanobis": ("basin volume mahalanobis", 0.572),
    "basin_volume": ("basin volume", 0.380),
}

MAD_COLUMNS = (
    "AUROC avg",
    "AUROC avg (anomalous agrees with GT)",
    "AUROC avg (anomalous disagrees with GT)",
    "num_datasets",
)


def mad_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The published MAD table's columns per detector, over valid datasets, plus the 95%
    bootstrap interval of the average and the std over seeds."""
    ok = frame[(frame["status"] == "ok") & frame["valid"]].copy()
    if ok.empty:
        return pd.DataFrame(columns=["detector", "published name", *MAD_COLUMNS, "95% interval", "seeds"])
    ok["label"] = detector_labels(ok)
    rows = []
    for label, group in ok.groupby("label", sort=False):
        per_dataset = group.groupby("dataset")[["auroc", "auroc_agree", "auroc_disagree"]].mean()
        first_seed = group[group["seed"] == group["seed"].min()]
        episodes = [(np.asarray(r["_labels"]), np.asarray(r["_scores"])) for _, r in first_seed.iterrows()]
        low, high = mean_auroc_interval(episodes)
        per_seed = group.groupby("seed")["auroc"].mean()
        std = summary_std(per_seed.tolist())
        rows.append(
            {
                "detector": label,
                "published name": PUBLISHED_MAD.get(group["detector"].iloc[0], ("",))[0],
                "AUROC avg": per_dataset["auroc"].mean(),
                "AUROC avg (anomalous agrees with GT)": per_dataset["auroc_agree"].mean(),
                "AUROC avg (anomalous disagrees with GT)": per_dataset["auroc_disagree"].mean(),
                "num_datasets": len(per_dataset),
                "95% interval": f"[{low:.3f}, {high:.3f}]",
                "seeds": f"{len(per_seed)}" + (f" (std {std:.3f})" if std is not None else ""),
            }
        )
    return pd.DataFrame(rows).sort_values("AUROC avg", ascending=False, kind="stable")


def mad_per_dataset(frame: pd.DataFrame) -> pd.DataFrame:
    """Dataset x detector AUROC with interval, beside the model's Alice/Bob accuracy."""
    mad = frame.copy()
    if mad.empty:
        return pd.DataFrame()
    for name in ("alice_accuracy", "bob_accuracy"):  # a task reusing this report may not measure them
        mad[name] = column(mad, name)
    mad["label"] = detector_labels(mad)
    validity = mad.groupby("dataset").agg(
        alice_accuracy=("alice_accuracy", "mean"), bob_accuracy=("bob_accuracy", "mean"), valid=("valid", "all")
    )
    table = validity.rename(
        columns={"alice_accuracy": "Alice acc (hard, disagree)", "bob_accuracy": "Bob acc (hard, disagree)"}
    )
    table["valid"] = table["valid"].map({True: "yes", False: "NO (not scored)"})
    ok = mad[mad["status"] == "ok"]
    for label, group in ok.groupby("label", sort=True):
        cells = group.groupby("dataset").apply(
            lambda g: f"{g['auroc'].mean():.3f} [{g['auroc_ci_low'].mean():.2f}, {g['auroc_ci_high'].mean():.2f}]",
            include_groups=False,
        )
        table[label] = cells
    errors = mad[mad["status"] == "error"]
    for _, row in errors.iterrows():
        table.loc[row["dataset"], row["label"]] = f"error: {row['message'][:60]}"
    return table.astype(object).fillna("").reset_index()


def section_lines(section: Section) -> list[str]:
    """The MAD part of the leaderboard for one section."""
    frame = section.frame
    lines = [
        f"## MAD: mechanistic anomaly detection on quirky models: {section.title}",
        "",
        *section.preamble(),
        "",
        "Intervals are 95% stratified bootstrap intervals over test items (1000 resamples).",
        "Detectors are fitted on trusted data (Alice, easy) and score hard test items (Alice = normal,",
        "Bob = anomalous). Averages are over valid datasets only: a dataset whose model does not",
        "follow Alice's and Bob's labels on hard items (validity gate) is shown below and not scored.",
        "Our models are tiny transformers trained from scratch, not the published 7B-class models.",
        "",
        mad_summary(frame).to_markdown(index=False, floatfmt=".3f"),
        "",
        "### Per dataset (AUROC [95% interval]) and the model's accuracy on the quirk",
        "",
        mad_per_dataset(frame).to_markdown(index=False, floatfmt=".3f"),
        "",
        f"![MAD per-dataset AUROC]({section.slug}_auroc.png)",
        "",
        "### Published figures (reference only: 7B-class models, not our tiny ones)",
        "",
        "AUROC avg over 10 quirky datasets from the seed's table; the earlier blog update on Mistral",
        "reported activations Mahalanobis 0.871 and LOF 0.846. Shown with our detector names so the",
        "rows can be matched; a detector without our result yet says so.",
        "",
        published_reference(frame).to_markdown(index=False, floatfmt=".3f"),
        "",
        *section.problem_lines(),
    ]
    return lines


def published_reference(frame: pd.DataFrame) -> pd.DataFrame:
    """The 12 published MAD rows with the published AUROC avg and, separately, whether we have ours."""
    ours = set(frame.loc[(frame["status"] == "ok") & frame["valid"], "detector"]) if not frame.empty else set()
    return pd.DataFrame(
        [{"published name": name, "our detector": detector, "published AUROC avg": auroc,
          "our result": "above" if detector in ours else "not run yet"}
         for detector, (name, auroc) in PUBLISHED_MAD.items()]
    )


def plot_auroc(section: Section, out_path: Path) -> Optional[Path]:
    """Bar chart of per-dataset AUROC per detector (valid datasets), saved as PNG."""
    frame = section.frame
    ok = frame[(frame["status"] == "ok") & frame["valid"]].copy()
    if ok.empty:
        return None
    plt = pyplot()

    ok["label"] = detector_labels(ok)
    table = ok.groupby(["dataset", "label"])["auroc"].mean().unstack("label")
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(table) * max(1, len(table.columns)) / 2), 4))
    table.plot.bar(ax=ax, rot=0)
    ax.axhline(0.5, color="grey", lw=1, ls="--", label="chance")
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC (Bob vs Alice, hard test items)")
    ax.set_title("MAD: per-dataset AUROC (higher = better detection)")
    ax.legend(fontsize="small", loc="lower right")
    return save(fig, out_path)


def plots(section: Section, out_dir: Path) -> list[Path]:
    """The section's PNGs: ``<slug>_auroc.png``."""
    png = plot_auroc(section, Path(out_dir) / f"{section.slug}_auroc.png")
    return [png] if png is not None else []


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """Run-summary columns of one MAD record: the model's quirk accuracies and the AUROCs."""
    metrics = record.get("metrics") or {}
    validity = record.get("validity") or {}
    return {
        "Alice acc": validity.get("alice_accuracy", np.nan),
        "Bob acc": validity.get("bob_accuracy", np.nan),
        "AUROC": metrics.get("auroc", np.nan),
        "95% interval": fmt_ci(metrics.get("auroc_ci")),
        "AUROC agree": metrics.get("auroc_agree", np.nan),
        "AUROC disagree": metrics.get("auroc_disagree", np.nan),
    }
