"""Scoring: AUROC on the raw score (never flipped), bootstrap intervals, MAD subsets, pair accuracy,
and the statistics that compare detectors across datasets and training seeds.

Polarity: a detector's score is "higher = more suspicious". An anti-predictive detector
gets AUROC < 0.5 and keeps it: flipping scores after seeing labels would be cheating.

Uncertainty has three levels in a benchmark of trained models: which datasets were chosen,
which training seed produced each model, and which test items were drawn. An interval over
items alone is too narrow for a claim about detectors; :func:`hierarchical_bootstrap`
resamples datasets, then seeds within each drawn dataset, then items within each drawn
(dataset, seed) cell, with the same draws for every detector, so that differences and ranks
are compared on paired replicates (:func:`paired_differences`, :func:`holm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

N_BOOTSTRAP = 1000
CONFIDENCE = 0.95


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (1 = positive); NaN if one class.

    Mann-Whitney form with average ranks for ties, equal to ``sklearn.metrics.roc_auc_score``.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_aurocs(
    labels: np.ndarray, scores: np.ndarray, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """(n_bootstrap,) AUROCs on stratified resamples (positives and negatives resampled
    separately, so every replicate has both classes)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(pos) == 0 or len(neg) == 0:
        return np.full(n_bootstrap, np.nan)
    rng = np.random.default_rng(seed)
    pos_idx = rng.choice(pos, size=(n_bootstrap, len(pos)))
    neg_idx = rng.choice(neg, size=(n_bootstrap, len(neg)))
    both = np.concatenate([scores[pos_idx], scores[neg_idx]], axis=1)
    from scipy.stats import rankdata

    ranks = rankdata(both, axis=1)
    n_pos, n_neg = len(pos), len(neg)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> list[float]:
    """Percentile interval ``[low, high]`` of bootstrap samples (NaNs ignored)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return [float("nan"), float("nan")]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)]


def subset_masks(labels: np.ndarray, agrees_with_gt: np.ndarray) -> dict[str, np.ndarray]:
    """The MAD evaluation subsets: all items; normal + anomalous that agree with the ground
    truth; normal + anomalous that disagree."""
    labels = np.asarray(labels).astype(bool)
    agrees = np.asarray(agrees_with_gt).astype(bool)
    return {
        "all": np.ones_like(labels),
        "agree": ~labels | (labels & agrees),
        "disagree": ~labels | (labels & ~agrees),
    }


def mad_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    agrees_with_gt: np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, object]:
    """AUROC with a bootstrap 95% interval on each MAD subset.

    Returns keys ``auroc``, ``auroc_ci`` (all items), ``auroc_agree``, ``auroc_agree_ci``,
    ``auroc_disagree``, ``auroc_disagree_ci``, ``n_tied_items`` (items whose score equals
    another item's, see :func:`tied_items`) and the item counts ``n_normal``,
    ``n_anomalous``, ``n_anomalous_agree``, ``n_anomalous_disagree``.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    agrees = np.asarray(agrees_with_gt).astype(bool)
    out: dict[str, object] = {}
    for subset, mask in subset_masks(labels, agrees).items():
        suffix = "" if subset == "all" else f"_{subset}"
        out[f"auroc{suffix}"] = auroc(labels[mask], scores[mask])
        out[f"auroc{suffix}_ci"] = interval(bootstrap_aurocs(labels[mask], scores[mask], n_bootstrap, seed))
    out["n_tied_items"] = tied_items(scores)
    out["n_normal"] = int((labels == 0).sum())
    out["n_anomalous"] = int((labels == 1).sum())
    out["n_anomalous_agree"] = int(((labels == 1) & agrees).sum())
    out["n_anomalous_disagree"] = int(((labels == 1) & ~agrees).sum())
    return out


def default_metrics(labels: np.ndarray, scores: np.ndarray, scored: np.ndarray,
                    tags: Mapping[str, np.ndarray], seed: int) -> dict[str, object]:
    """The metric of a task that defines none: :func:`mad_metrics` on the scored items (``scored``:
    (n,) bool), the ``agrees_with_gt`` tag if the task gives one (else every anomaly agrees), and
    ``n_unscored`` when the detector left items out."""
    labels = np.asarray(labels, dtype=int)
    keep = np.asarray(scored, dtype=bool)
    agrees = np.asarray(tags.get("agrees_with_gt", np.ones_like(labels, dtype=bool)), dtype=bool)
    out = mad_metrics(labels[keep], np.asarray(scores, dtype=float)[keep], agrees[keep], seed=seed)
    if not keep.all():
        out["n_unscored"] = int((~keep).sum())
    return out


def pair_accuracy(misaligned_scores: np.ndarray, aligned_scores: np.ndarray) -> float:
    """Fraction of pairs whose misaligned model scores higher than its aligned partner; ties count half."""
    misaligned_scores = np.asarray(misaligned_scores, dtype=float)
    aligned_scores = np.asarray(aligned_scores, dtype=float)
    if misaligned_scores.shape != aligned_scores.shape or misaligned_scores.size == 0:
        raise ValueError("pair_accuracy needs two equal-length, non-empty score arrays")
    wins = (misaligned_scores > aligned_scores).astype(float)
    wins[misaligned_scores == aligned_scores] = 0.5
    return float(wins.mean())


def scored_items(record: Mapping[str, object]) -> np.ndarray:
    """(n,) bool: the items of a record whose score counts: its ``scored`` mask (written when
    the detector left items out, e.g. unconverged basin estimates), else every item."""
    n = len(record["scores"])  # type: ignore[arg-type]
    scored = record.get("scored")
    return np.ones(n, dtype=bool) if scored is None else np.asarray(scored, dtype=bool)


def tied_items(scores: np.ndarray) -> int:
    """Number of items whose score is exactly equal to at least one other item's score.

    Ties count half in an AUROC, so a detector whose scores collapse onto a few values
    (e.g. a search that stopped at a bound) is scored on coin flips for those items.
    """
    scores = np.asarray(scores, dtype=float)
    _, counts = np.unique(scores, return_counts=True)
    return int(counts[counts > 1].sum())


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (NaNs for ``n = 0``).

    Unlike the normal approximation it stays inside [0, 1] and keeps its coverage near 0 and 1,
    which is where a validity gate's accuracies sit.
    """
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# -- detectors across datasets and seeds ---------------------------------------------------------

Cell = tuple[np.ndarray, np.ndarray]  # (labels, scores) of one detector on one (dataset, seed)


@dataclass
class HierarchicalBootstrap:
    """Paired bootstrap replicates of every detector over datasets, seeds and items.

    detectors, datasets: the names, in the order of the arrays' axes.
    point: (n_detectors,) mean over datasets of the mean AUROC over each dataset's seeds.
    per_dataset: (n_detectors, n_datasets) observed mean AUROC over seeds (NaN where missing).
    average: (n_detectors, n_bootstrap) replicates of the average (datasets, seeds, items
        resampled). per_dataset_replicates: (n_detectors, n_datasets, n_bootstrap) replicates
        of each dataset's mean over seeds (seeds and items resampled, the dataset fixed).
    floor: (n_detectors, n_datasets) observed AUROC on each dataset's control (given ``floors``);
        adjusted / adjusted_point: replicates and observed value of the average over datasets
        of (dataset mean - floor), the floor's items resampled too (NaN where a floor is missing).
    ranks: (n_detectors, n_bootstrap) replicates of the mean rank over drawn datasets
        (rank 1 = highest AUROC; ties share their mean rank). point_ranks: observed mean rank.
    """

    detectors: list[str]
    datasets: list[str]
    point: np.ndarray
    per_dataset: np.ndarray
    average: np.ndarray
    per_dataset_replicates: np.ndarray
    ranks: np.ndarray
    point_ranks: np.ndarray
    confidence: float = CONFIDENCE
    floor: Optional[np.ndarray] = None
    adjusted: Optional[np.ndarray] = None
    adjusted_point: Optional[np.ndarray] = None

    def adjusted_interval(self, detector: str) -> list[float]:
        """Interval of ``detector``'s average AUROC minus its floor (needs ``floors``)."""
        if self.adjusted is None:
            return [float("nan"), float("nan")]
        return interval(self.adjusted[self.detectors.index(detector)], self.confidence)

    def interval(self, detector: str) -> list[float]:
        """Interval of the average AUROC of ``detector``."""
        return interval(self.average[self.detectors.index(detector)], self.confidence)

    def dataset_interval(self, detector: str, dataset: str) -> list[float]:
        """Interval of ``detector``'s mean AUROC over the seeds of ``dataset`` (seeds and items resampled)."""
        k, d = self.detectors.index(detector), self.datasets.index(dataset)
        return interval(self.per_dataset_replicates[k, d], self.confidence)

    def rank_interval(self, detector: str) -> list[float]:
        """Interval of ``detector``'s mean rank."""
        return interval(self.ranks[self.detectors.index(detector)], self.confidence)


def _cell_replicates(cell: Optional[Cell], n_bootstrap: int, seed: int) -> tuple[float, np.ndarray]:
    if cell is None:
        return float("nan"), np.full(n_bootstrap, np.nan)
    labels, scores = cell
    return auroc(labels, scores), bootstrap_aurocs(labels, scores, n_bootstrap, seed)


def hierarchical_bootstrap(
    cells: Mapping[str, Mapping[str, Mapping[int, Cell]]],
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    floors: Optional[Mapping[str, Mapping[str, Cell]]] = None,
) -> HierarchicalBootstrap:
    """Resample datasets, then seeds within each drawn dataset, then items within each drawn cell.

    ``cells[detector][dataset][seed] = (labels, scores)``. Every detector gets the same draws
    of datasets and seeds, and the same item draw in a cell (items are resampled by index with
    a seed per cell, so detectors scored on the same items are paired item by item). The
    seeds of a dataset are the union over detectors; a detector without a cell (an error)
    contributes NaN there and is averaged over the cells it has. One replicate of the
    average = mean over the drawn datasets of the mean over the drawn seeds of the cell's
    item-resampled AUROC. Ranks are computed per drawn dataset on those dataset means.
    ``floors[detector][dataset] = (labels, scores)``: the detector on the dataset's control
    (e.g. a model without the mechanism), for floor-adjusted averages.
    """
    detectors = list(cells)
    datasets = sorted({d for per in cells.values() for d in per})
    seeds = {d: sorted({s for per in cells.values() for s in per.get(d, {})}) for d in datasets}
    n_k, n_d = len(detectors), len(datasets)
    max_seeds = max((len(v) for v in seeds.values()), default=0)
    if n_k == 0 or n_d == 0 or max_seeds == 0:
        raise ValueError("hierarchical_bootstrap needs at least one detector, dataset and seed")
    # item replicates of every cell: (detectors, datasets, seeds, n_bootstrap)
    points = np.full((n_k, n_d, max_seeds), np.nan)
    items = np.full((n_k, n_d, max_seeds, n_bootstrap), np.nan)
    for d, dataset in enumerate(datasets):
        for s, seed_value in enumerate(seeds[dataset]):
            cell_seed = seed + 1000 * d + s  # one item draw per cell, shared by all detectors
            for k, detector in enumerate(detectors):
                cell = cells[detector].get(dataset, {}).get(seed_value)
                points[k, d, s], items[k, d, s] = _cell_replicates(cell, n_bootstrap, cell_seed)
    n_seeds = np.array([len(seeds[d]) for d in datasets])
    rng = np.random.default_rng(seed)
    b = np.arange(n_bootstrap)
    # per dataset: seeds drawn within the dataset, an item replicate per drawn seed
    seed_draws = np.floor(rng.random((n_bootstrap, n_d, max_seeds)) * n_seeds[None, :, None]).astype(int)
    item_draws = rng.integers(0, n_bootstrap, (n_bootstrap, n_d, max_seeds))
    seed_used = np.arange(max_seeds)[None, None, :] < n_seeds[None, :, None]  # draws beyond a dataset's seed count unused
    d_index = np.arange(n_d)[None, :, None]
    drawn = items[:, d_index, seed_draws, item_draws]  # (k, B, D, S)
    drawn = np.where(seed_used[None], drawn, np.nan)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        dataset_reps = np.nanmean(drawn, axis=3)  # (k, B, D)
        per_dataset_reps = np.moveaxis(dataset_reps, 1, 2)  # (k, D, B)
        dataset_draws = rng.integers(0, n_d, (n_bootstrap, n_d))
        chosen = dataset_reps[:, b[:, None], dataset_draws]  # (k, B, D)
        average = np.nanmean(chosen, axis=2)
        per_dataset = np.nanmean(points, axis=2)
        point = np.nanmean(per_dataset, axis=1)
    ranks = _mean_ranks(chosen)
    point_ranks = _mean_ranks(per_dataset[:, None, :])[:, 0]
    boot = HierarchicalBootstrap(detectors, datasets, point, per_dataset, average, per_dataset_reps, ranks,
                                 point_ranks, confidence)
    if floors is not None:
        floor = np.full((n_k, n_d), np.nan)
        floor_items = np.full((n_k, n_d, n_bootstrap), np.nan)
        for d, dataset in enumerate(datasets):
            for k, detector in enumerate(detectors):
                cell = floors.get(detector, {}).get(dataset)
                floor[k, d], floor_items[k, d] = _cell_replicates(cell, n_bootstrap, seed + 1000 * d + 999)
        floor_draws = rng.integers(0, n_bootstrap, (n_bootstrap, n_d))
        drawn_floor = floor_items[:, dataset_draws, floor_draws]  # (k, B, D), floor of the drawn dataset
        with np.errstate(invalid="ignore"), _quiet_nanmean():
            boot.adjusted = np.nanmean(chosen - drawn_floor, axis=2)
            boot.adjusted_point = np.nanmean(per_dataset - floor, axis=1)
        boot.floor = floor
    return boot


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    """(k, B, D) AUROCs -> (k, B) mean over D of each detector's rank (1 = highest; NaN = last)."""
    filled = np.where(np.isnan(values), -np.inf, values)
    from scipy.stats import rankdata

    ranks = rankdata(-filled, axis=0)  # ties share their mean rank
    return ranks.mean(axis=2)


class _quiet_nanmean:
    """Silence numpy's "mean of empty slice" warning (an all-NaN mean is NaN, as intended)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


@dataclass
class PairedComparison:
    """Difference of two detectors' average AUROC on paired bootstrap replicates."""

    better: str
    worse: str
    difference: float
    interval: list[float]
    p_value: float
    p_adjusted: float = float("nan")
    resolved: bool = False


def paired_differences(
    boot: HierarchicalBootstrap, order: Sequence[str], alpha: float = 1 - CONFIDENCE
) -> list[PairedComparison]:
    """Compare each detector in ``order`` with the next one on the paired replicates.

    difference = average AUROC of ``order[i]`` minus ``order[i + 1]``; interval: percentile
    interval of the replicate differences; p_value: two-sided bootstrap p-value (twice the
    smaller tail count of replicate differences at or beyond 0, plus one, over the replicates
    plus one; at most 1); p_adjusted:
    Holm's step-down correction over all the adjacent pairs; resolved: p_adjusted < alpha.
    """
    out = []
    for better, worse in zip(order, order[1:]):
        diff = boot.average[boot.detectors.index(better)] - boot.average[boot.detectors.index(worse)]
        diff = diff[~np.isnan(diff)]
        point = float(boot.point[boot.detectors.index(better)] - boot.point[boot.detectors.index(worse)])
        if diff.size == 0:
            out.append(PairedComparison(better, worse, point, [float("nan")] * 2, float("nan")))
            continue
        # the +1 keeps a p-value from being 0 with finitely many replicates
        tail = min(np.sum(diff <= 0), np.sum(diff >= 0))
        p = min(1.0, 2 * (tail + 1) / (diff.size + 1))
        out.append(PairedComparison(better, worse, point, interval(diff, boot.confidence), float(p)))
    for comparison, adjusted in zip(out, holm([c.p_value for c in out])):
        comparison.p_adjusted = adjusted
        comparison.resolved = bool(adjusted < alpha)
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
