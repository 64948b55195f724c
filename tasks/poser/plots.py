"""The POSER task's plots: noise curves per model, ROC over models, basin radii (the
``plots`` of :mod:`harness.tasks.poser.report`). Every curve and point is a MODEL, averaged over
the pairs it sits in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from harness.leaderboard.plots import pyplot, save, write_plots
from harness.leaderboard.report import Section


def ok_records(section: Section) -> list[dict[str, Any]]:
    """The section's successful records on valid episodes."""
    return [r for r in section.records if r.get("status") == "ok" and r.get("valid")]


def _per_model(record: dict[str, Any], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values averaged per model (a model sits in several pairs) and each model's label."""
    names = (record.get("diagnostics") or {}).get("items") or [str(m) for m in (record.get("tags") or {}).get("model", [])]
    grouped: dict[str, list] = {}
    labels: dict[str, int] = {}
    for name, value, label in zip(names, values, record["labels"]):
        grouped.setdefault(name, []).append(value)
        labels[name] = label
    keys = sorted(grouped)
    return np.array([np.mean(grouped[k], axis=0) for k in keys]), np.array([labels[k] for k in keys])


def plot_curves(section: Section, out_path: Path) -> Optional[Path]:
    """Noise curves per MODEL (each model once, averaged over its pairs), aligned vs misaligned."""
    records = [r for r in ok_records(section) if (r.get("diagnostics") or {}).get("curves")
               and r["params"].get("statistic", "kl") == "kl"]
    if not records:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(records), figsize=(5.5 * len(records), 4), squeeze=False)
    for ax, record in zip(axes[0], records):
        diagnostics = record["diagnostics"]
        coefficients = np.asarray(diagnostics["coefficients"])
        curves, labels = _per_model(record, np.asarray(diagnostics["curves"]))
        for label, colour, name in ((0, "tab:blue", "aligned"), (1, "tab:red", "misaligned")):
            group = curves[labels == label]
            for curve in group:
                ax.plot(coefficients, curve, color=colour, alpha=0.35, lw=1)
            if len(group):
                ax.plot(coefficients, group.mean(0), color=colour, lw=2.5, label=f"{name} (n={len(group)} models)")
        norm = diagnostics.get("noise_norm", "own")
        ax.set_title(f"{record['detector']} ({diagnostics.get('noise', '')}, {norm} norm, "
                     f"{diagnostics.get('n_directions', 1)} directions), run seed {record['seed']}", fontsize="small")
        ax.set_xlabel("noise coefficient")
        ax.set_ylabel("KL(unperturbed || perturbed)" if diagnostics.get("statistic") == "kl" else "P(misaligned answer)")
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.legend(fontsize="small")
    return save(fig, out_path)


def plot_roc(section: Section, out_path: Path) -> Optional[Path]:
    """ROC curves over models (each model once, its mean score; misaligned = positive)."""
    records = [r for r in ok_records(section) if r["params"].get("statistic", "kl") == "kl"]
    if not records:
        return None
    plt = pyplot()
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for record in records:
        scores, labels = _per_model(record, np.asarray(record["scores"], float))
        if len(set(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{record['detector']} (AUROC {roc_auc_score(labels, scores):.2f}, {len(labels)} models)")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlabel("false positive rate (aligned models flagged)")
    ax.set_ylabel("true positive rate (misaligned models flagged)")
    ax.set_title("POSER: ROC over models")
    ax.legend(fontsize="x-small", loc="lower right")
    return save(fig, out_path)


def plot_radii(section: Section, out_path: Path) -> Optional[Path]:
    """Weight-perturbation radii at the KL cutoff, aligned vs misaligned models (basin_volume)."""
    records = [r for r in ok_records(section) if (r.get("diagnostics") or {}).get("radii")]
    if not records:
        return None
    plt = pyplot()
    record = records[0]
    radii = [np.asarray(r) for r in record["diagnostics"]["radii"]]
    labels = np.asarray(record["labels"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    groups = [np.concatenate([r for r, l in zip(radii, labels) if l == label]) for label in (0, 1)]
    ax.boxplot(groups, tick_labels=["aligned", "misaligned"])
    ax.set_yscale("log")
    ax.set_ylabel(f"perturbation norm at KL = {record['diagnostics'].get('eps')}")
    ax.set_title("POSER: basin radii per random direction (all models of valid pairs)", fontsize="small")
    return save(fig, out_path)


def plots(section: Section, out_dir: Path) -> list[Path]:
    """The section's PNGs: noise curves per model, ROC over models, basin radii (where the detectors ran)."""
    return write_plots(section, out_dir,
                       ((plot_curves, "kl_vs_coefficient"), (plot_roc, "roc"), (plot_radii, "basin_radii")))
