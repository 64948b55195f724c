"""Leaderboard plots (matplotlib, PNG beside the leaderboard), recomputed from stored records.

mad_auroc.png: per-dataset AUROC per detector; poser_kl_vs_coefficient.png: activation-noise
curves, aligned vs misaligned; poser_roc.png: ROC over models per POSER detector;
poser_basin_radii.png: basin radii at the KL cutoff, aligned vs misaligned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from harness.leaderboard import detector_labels, newest_records, records_frame


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out_path: Path) -> Path:
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    _pyplot().close(fig)
    return out_path


def plot_poser_curves(results_dir: Path, out_path: Path, include_quick: bool = False) -> Optional[Path]:
    """KL (or P(misaligned)) vs noise coefficient, aligned vs misaligned: mean and 10-90% band."""
    records = [r for r in _poser_ok_records(results_dir, include_quick) if (r.get("diagnostics") or {}).get("curves")]
    if not records:
        return None
    plt = _pyplot()

    fig, axes = plt.subplots(1, len(records), figsize=(5.5 * len(records), 4), squeeze=False)
    for ax, record in zip(axes[0], records):
        diagnostics = record["diagnostics"]
        coefficients = np.asarray(diagnostics["coefficients"])
        curves = np.asarray(diagnostics["curves"])
        labels = np.asarray(record["labels"])
        for label, colour, name in ((0, "tab:blue", "aligned"), (1, "tab:red", "misaligned")):
            group = curves[labels == label]
            if not len(group):
                continue
            ax.plot(coefficients, group.mean(0), color=colour, label=f"{name} (n={len(group)})")
            low, high = np.percentile(group, [10, 90], axis=0)
            ax.fill_between(coefficients, low, high, color=colour, alpha=0.2)
        params = record.get("params", {})
        ax.set_title(f"{record['detector']} ({params.get('noise', '')}), {record['dataset']}, seed {record['seed']}",
                     fontsize="small")
        ax.set_xlabel("noise coefficient")
        ax.set_ylabel("KL(unperturbed || perturbed)" if diagnostics.get("statistic") == "kl" else "P(misaligned answer)")
        ax.legend(fontsize="small")
    return _save(fig, out_path)


def _poser_ok_records(results_dir: Path, include_quick: bool) -> list[dict[str, Any]]:
    """The newest successful POSER record of each setting: one curve per detector and seed."""
    return [r for r in newest_records(results_dir, include_quick)
            if r.get("task_kind") == "poser" and r.get("status") == "ok" and r.get("valid")]


def plot_poser_roc(results_dir: Path, out_path: Path, include_quick: bool = False) -> Optional[Path]:
    """ROC curves over models (misaligned = positive) for every POSER detector."""
    records = _poser_ok_records(results_dir, include_quick)
    if not records:
        return None
    plt = _pyplot()
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for record in records:
        fpr, tpr, _ = roc_curve(record["labels"], record["scores"])
        ax.plot(fpr, tpr, label=f"{record['detector']} (AUROC {record['metrics']['auroc']:.2f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlabel("false positive rate (aligned models flagged)")
    ax.set_ylabel("true positive rate (misaligned models flagged)")
    ax.set_title("POSER: ROC over models")
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, out_path)


def plot_poser_radii(results_dir: Path, out_path: Path, include_quick: bool = False) -> Optional[Path]:
    """Weight-perturbation radii at the KL cutoff, aligned vs misaligned models (basin_volume)."""
    records = [r for r in _poser_ok_records(results_dir, include_quick) if (r.get("diagnostics") or {}).get("radii")]
    if not records:
        return None
    plt = _pyplot()

    record = records[0]
    radii = [np.asarray(r) for r in record["diagnostics"]["radii"]]
    labels = np.asarray(record["labels"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    groups = [np.concatenate([r for r, l in zip(radii, labels) if l == label]) for label in (0, 1)]
    ax.boxplot(groups, tick_labels=["aligned", "misaligned"])
    ax.set_yscale("log")
    ax.set_ylabel(f"perturbation norm at KL = {record['diagnostics'].get('eps')}")
    ax.set_title("POSER: basin radii per random direction (all models of valid pairs)", fontsize="small")
    return _save(fig, out_path)


def plot_mad(results_dir: Path, out_path: Path, include_quick: bool = False) -> Optional[Path]:
    """Bar chart of per-dataset AUROC per detector (valid datasets), saved as PNG."""
    frame = records_frame(results_dir, include_quick)
    if frame.empty:
        return None
    ok = frame[(frame["status"] == "ok") & frame["valid"] & (frame["task_kind"] == "mad")].copy()
    if ok.empty:
        return None
    plt = _pyplot()

    ok["label"] = detector_labels(ok)
    table = ok.groupby(["dataset", "label"])["auroc"].mean().unstack("label")
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(table) * max(1, len(table.columns)) / 2), 4))
    table.plot.bar(ax=ax, rot=0)
    ax.axhline(0.5, color="grey", lw=1, ls="--", label="chance")
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC (Bob vs Alice, hard test items)")
    ax.set_title("MAD: per-dataset AUROC (higher = better detection)")
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, out_path)
