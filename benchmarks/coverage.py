"""Coverage of the MAD leaderboard's intervals, by simulating leaderboards with known truth.

Estimand: a detector's mean AUROC over the population of datasets, training seeds, character
names and test items, i.e. E_{dataset, seed}[P(score of a random Bob item > score of a random
Alice item)], the names and items drawn afresh. The leaderboard estimates it by the mean over
its datasets of the mean over their seeds of each cell's AUROC, and puts on it the interval of
:func:`harness.scoring.hierarchical_bootstrap` (datasets, seeds per drawn copy, names shared by
every cell, examples per slot).

Generative model (per detector, on a binormal scale where a cell's population AUROC is
Phi(theta / sqrt(2))): score = Bob x theta[dataset, seed] + name effect (shared by every cell)
+ name x cell effect + example effect (shared by the example's Alice and Bob item) + item
noise, the four within-cell parts summing to variance 1; theta = delta + dataset effect + seed
effect. Then the estimand is exactly Phi(delta / sqrt(2 + var(dataset) + var(seed))). A second
detector with the same delta (two *equal* detectors) shares the dataset and seed effects up to
an interaction, and its within-cell parts correlate with the first's (``rho``).

Variance components are estimated from the committed records (``--records``): per cell,
scores become normal scores; names (the records' ``name`` tag, or for records made before the
tag the names the generator drew, checked against the records' labels) and examples (Alice
and Bob items of one statement) give one-way ANOVA and covariance estimates; the covariance
of name means across cells gives the shared name effect; theta's spread over datasets and
seeds (less its item sampling variance) gives those two components; adjacent detectors (by
mean AUROC) give the interaction and ``rho``. The simulation uses the median over detectors
(``--profile median``) or one detector's components (``--profile input_only``); without
records it uses the defaults below.

Intervals compared, all from the same replicates:

- ``t`` (the leaderboard's, :func:`harness.scoring.t_interval`): the bootstrap's standard error
  times sqrt(n / (n - 1)) with a Student t quantile on n_datasets - 1 degrees of freedom, a
  small-sample correction because a percentile interval over 4 datasets covers too little;
- ``t, variance components`` (:func:`harness.scoring.t_standard_error`): the spread of the
  observed dataset means plus a names-only bootstrap, Welch-Satterthwaite degrees of freedom;
- ``percentile``: the replicates' 2.5% and 97.5% points;
- ``t, plug-in se``: the t rule without the sqrt(n / (n - 1)) factor (what it buys);
- with ``--without-groups``, the percentile interval of a bootstrap that resamples items but
  not names or examples (as before names were a level).

"Resolved" is Holm p < 0.05 for the equal pair (one pair, so Holm changes nothing) by each
rule's p-value (:func:`harness.scoring.paired_differences`).

    python benchmarks/coverage.py [--leaderboards 400] [--n-bootstrap 1000] [--profile median]
                                  [--records leaderboard/records/mad] [--json out.json]

Prints the estimated components per detector, then one row per interval rule: coverage of the
95% interval (with its Wilson 95% interval over the simulated leaderboards), the false
"resolved" rate of the equal pair, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from scipy.stats import norm, rankdata

ROOT = Path(__file__).resolve().parents[1]
N_NAMES = 12  # test names per character


@dataclass(frozen=True)
class Components:
    """Standard deviations of the generative model (theta scale; within-cell parts as shares
    of a within-cell variance of 1) and the design's sizes."""

    dataset_sd: float = 0.5
    seed_sd: float = 0.2
    dataset_interaction_sd: float = 0.2  # sd of (detector 1 - detector 2)'s dataset effects
    seed_interaction_sd: float = 0.15
    name_sd: float = 0.2  # shared by every cell
    name_cell_sd: float = 0.1
    example_sd: float = 0.3
    rho: float = 0.5  # correlation of two detectors' within-cell parts
    n_datasets: int = 4
    n_seeds: int = 3
    n_examples: int = 385

    @property
    def noise_sd(self) -> float:
        rest = 1.0 - self.name_sd ** 2 - self.name_cell_sd ** 2 - self.example_sd ** 2
        if rest <= 0:
            raise ValueError(f"name, name x cell and example variances sum to {1 - rest:.3f} >= 1")
        return float(np.sqrt(rest))


# -- estimating the components from records ------------------------------------------------------
def load_records(path: Path) -> list[dict[str, Any]]:
    """The valid quirky (not control) MAD records that were scored, under ``path``."""
    out = []
    for file in sorted(path.rglob("*.json")):
        record = json.loads(file.read_text())
        if record.get("status") == "ok" and record.get("valid") and not record["dataset"].endswith("_control"):
            out.append(record)
    return out


def _generated_groups(record: dict[str, Any]) -> Optional[dict[str, np.ndarray]]:
    """Names and examples of a generated record's test items as its generator drew them, or
    None when they cannot be rebuilt or do not match the record's labels."""
    from harness.tasks.mad.arithmetic import ALICE_NAMES, BOB_NAMES, N_TRUSTED_NAMES, to_records
    from harness.tasks.mad.episode import TEST_MIN_QUANTILE
    from harness.tasks.mad.training import generate_examples

    episode = (record.get("config") or {}).get("episode") or {}
    recipe, operation = episode.get("recipe"), episode.get("operation")
    if record.get("source") != "generated" or not recipe or not operation:
        return None
    examples = generate_examples(operation, recipe["n_examples"] + recipe["n_eval"], record["seed"],
                                 recipe["max_digits"])[recipe["n_examples"]:]
    test = [r for r in to_records(examples, operation, alice_names=ALICE_NAMES[N_TRUSTED_NAMES:],
                                  bob_names=BOB_NAMES[N_TRUSTED_NAMES:], seed=record["seed"], id_prefix="test-")
            if r["difficulty_quantile"] > TEST_MIN_QUANTILE]
    labels = np.array([r["character"] == "Bob" for r in test], dtype=int)
    if len(labels) != len(record["labels"]) or not np.array_equal(labels, record["labels"]):
        return None
    return {"name": np.array([r["template_args"]["character"] for r in test]),
            "example": np.array([r["example"] for r in test])}


def quirky_frame_cell(record: dict[str, Any], groups_cache: dict) -> Optional[tuple]:
    """(labels, scores, groups) of the record's quirky-frame column, or None without groups."""
    from harness.scoring import scored_items
    from harness.tasks.mad.columns import column_cell

    tags = dict(record.get("tags") or {})
    if "name" not in tags or "example" not in tags:
        key = (record["dataset"], record["seed"])
        if key not in groups_cache:
            groups_cache[key] = _generated_groups(record)
        if groups_cache[key] is None:
            return None
        tags.update(groups_cache[key])
    labels, scores, groups = column_cell(np.asarray(record["labels"]), np.asarray(record["scores"], float), tags,
                                         "quirky_frame", scored_items(record))
    return labels, scores, groups


def _below(others: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, how many of ``others`` are lower (ties count half)."""
    others = np.sort(others)
    return (np.searchsorted(others, values, "left") + np.searchsorted(others, values, "right")) / 2


def _cell_facts(labels: np.ndarray, scores: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, Any]:
    """A cell on the normal-score scale: theta, its sampling variance, standardised within-class
    residuals, the name x cell variance, the example covariance and the name means."""
    from harness.scoring import auroc

    z = norm.ppf(rankdata(scores) / (len(scores) + 1))
    bob = labels == 1
    residual = z - np.where(bob, z[bob].mean(), z[~bob].mean())
    residual /= residual.std()
    area = float(np.clip(auroc(labels, scores), 0.005, 0.995))
    # item sampling variance of the AUROC (placement values), carried to theta = sqrt(2) Phi^-1(A)
    wins_pos = _below(scores[~bob], scores[bob]) / (~bob).sum()  # share of Alice items each Bob item beats
    wins_neg = 1 - _below(scores[bob], scores[~bob]) / bob.sum()  # share of Bob items that beat each Alice item
    var_area = np.var(wins_pos) / bob.sum() + np.var(wins_neg) / (~bob).sum()
    theta = np.sqrt(2) * norm.ppf(area)
    var_theta = var_area * (np.sqrt(2) / norm.pdf(norm.ppf(area))) ** 2
    names, examples = groups["name"], groups["example"]
    name_var, name_means = [], {}
    for side in (bob, ~bob):
        unique, inverse, counts = np.unique(names[side], return_inverse=True, return_counts=True)
        means = np.bincount(inverse, residual[side]) / counts
        within = np.sum((residual[side] - means[inverse]) ** 2) / (side.sum() - len(unique))
        between = np.sum(counts * (means - residual[side].mean()) ** 2) / (len(unique) - 1)
        n0 = (side.sum() - np.sum(counts ** 2) / side.sum()) / (len(unique) - 1)
        name_var.append((between - within) / n0)
        name_means.update(zip(unique.tolist(), means - means.mean()))
    alice = dict(zip(examples[~bob].tolist(), residual[~bob]))
    pairs = np.array([(alice[e], r) for e, r in zip(examples[bob].tolist(), residual[bob]) if e in alice])
    example_cov = float(np.mean((pairs[:, 0] - pairs[:, 0].mean()) * (pairs[:, 1] - pairs[:, 1].mean())))
    return {"theta": theta, "var_theta": var_theta, "auroc": area, "name_cell_var": float(np.mean(name_var)),
            "example_cov": example_cov, "name_means": name_means, "residual": residual}


def _level_variances(theta: dict[tuple[str, int], float],
                     sampling: dict[tuple[str, int], float]) -> tuple[float, float]:
    """(dataset variance, seed variance) of theta[dataset, seed], less the item sampling variance."""
    datasets = sorted({d for d, _ in theta})
    seed_vars, means, noise = [], [], []
    for d in datasets:
        values = np.array([v for (dd, _), v in theta.items() if dd == d])
        noise_d = np.mean([v for (dd, _), v in sampling.items() if dd == d])
        if len(values) > 1:
            seed_vars.append(np.var(values, ddof=1) - noise_d)
        means.append((values.mean(), len(values), noise_d))
    seed_var = max(0.0, float(np.mean(seed_vars))) if seed_vars else 0.0
    if len(means) < 2:
        return 0.0, seed_var
    between = np.var([m for m, _, _ in means], ddof=1) - np.mean([(seed_var + v) / n for _, n, v in means])
    return max(0.0, float(between)), seed_var


def estimate_components(records: list[dict[str, Any]],
                        progress: bool = True) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per detector: its AUROC and component standard deviations; and the adjacent detectors'
    interaction sds and rho (medians over adjacent pairs). Empty when no record has groups."""
    from tqdm.auto import tqdm

    facts: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    groups_cache: dict = {}
    for record in tqdm(records, desc="records", unit="record", disable=not progress):
        cell = quirky_frame_cell(record, groups_cache)
        if cell is None or len(set(cell[0].tolist())) < 2:
            continue
        label = record["detector"]
        facts.setdefault(label, {})[record["dataset"], int(record["seed"])] = _cell_facts(*cell)
    per_detector: dict[str, dict[str, float]] = {}
    for label, cells in facts.items():
        dataset_var, seed_var = _level_variances({k: c["theta"] for k, c in cells.items()},
                                                 {k: c["var_theta"] for k, c in cells.items()})
        keys = list(cells)
        shared = [np.mean([cells[a]["name_means"][n] * cells[b]["name_means"][n]
                           for n in set(cells[a]["name_means"]) & set(cells[b]["name_means"])])
                  for i, a in enumerate(keys) for b in keys[i + 1:]]
        name_var = max(0.0, float(np.mean(shared))) if shared else 0.0
        name_cell_var = max(0.0, float(np.mean([c["name_cell_var"] for c in cells.values()])) - name_var)
        per_detector[label] = {
            "auroc": float(np.mean([c["auroc"] for c in cells.values()])),
            "dataset_sd": float(np.sqrt(dataset_var)), "seed_sd": float(np.sqrt(seed_var)),
            "name_sd": float(np.sqrt(name_var)), "name_cell_sd": float(np.sqrt(name_cell_var)),
            "example_sd": float(np.sqrt(max(0.0, np.mean([c["example_cov"] for c in cells.values()])))),
        }
    order = sorted(per_detector, key=lambda k: -per_detector[k]["auroc"])
    pairs = []
    for a, b in zip(order, order[1:]):
        common = sorted(set(facts[a]) & set(facts[b]))
        if len(common) < 2:
            continue
        diff = {k: facts[a][k]["theta"] - facts[b][k]["theta"] for k in common}
        noise = {k: facts[a][k]["var_theta"] + facts[b][k]["var_theta"] for k in common}
        dataset_var, seed_var = _level_variances(diff, noise)
        same_items = [k for k in common if len(facts[a][k]["residual"]) == len(facts[b][k]["residual"])]
        rho = [np.corrcoef(facts[a][k]["residual"], facts[b][k]["residual"])[0, 1] for k in same_items]
        pairs.append({"dataset_interaction_sd": float(np.sqrt(dataset_var)),
                      "seed_interaction_sd": float(np.sqrt(seed_var)),
                      "rho": float(np.nanmean(rho)) if rho else float("nan")})
    pair_medians = {key: float(np.nanmedian([p[key] for p in pairs])) for key in pairs[0]} if pairs else {}
    return per_detector, pair_medians


MAX_WITHIN = 0.95  # the most of the within-cell variance that names and examples may take


def profile_components(per_detector: dict[str, dict[str, float]], pair_medians: dict[str, float], profile: str,
                       base: Components) -> Components:
    """The simulation's components: ``profile`` = "median" (over detectors) or a detector's name.
    Name, name x cell and example variances that sum past :data:`MAX_WITHIN` are scaled down
    to it together."""
    keys = ("dataset_sd", "seed_sd", "name_sd", "name_cell_sd", "example_sd")
    if profile == "median":
        chosen = {k: float(np.median([d[k] for d in per_detector.values()])) for k in keys}
    elif profile in per_detector:
        chosen = {k: per_detector[profile][k] for k in keys}
    else:
        raise SystemExit(f"unknown --profile {profile!r}; valid: median, {', '.join(sorted(per_detector))}")
    within = chosen["name_sd"] ** 2 + chosen["name_cell_sd"] ** 2 + chosen["example_sd"] ** 2
    if within > MAX_WITHIN:  # separate estimates can overshoot together: keep some item noise
        chosen.update({k: chosen[k] * np.sqrt(MAX_WITHIN / within) for k in ("name_sd", "name_cell_sd", "example_sd")})
    components = replace(base, **chosen, **{k: v for k, v in pair_medians.items() if np.isfinite(v)})
    # the interaction is part of each detector's own spread
    return replace(components,
                   dataset_interaction_sd=min(components.dataset_interaction_sd, components.dataset_sd * np.sqrt(2)),
                   seed_interaction_sd=min(components.seed_interaction_sd, components.seed_sd * np.sqrt(2)))


# -- simulating leaderboards ---------------------------------------------------------------------
# interval rule -> the bootstrap's method (harness.scoring.METHODS)
RULES = {"t (the leaderboard's)": "t", "t, variance components": "t_components", "percentile": "percentile"}
NO_GROUPS = "percentile, no names or examples"
PLUG_IN = "t, plug-in se (no sqrt(n/(n-1)))"


def _plug_in_t(boot: Any, detector: str, other: str) -> tuple[list[float], bool]:
    """The t rule without the plug-in correction: (interval of ``detector``, whether its
    difference from ``other`` is resolved), from the same replicates."""
    from scipy.stats import t as student

    k, j = boot.detectors.index(detector), boot.detectors.index(other)
    n = int(np.isfinite(boot.per_dataset[k]).sum())
    q = float(student.ppf(0.975, n - 1))
    half = q * np.nanstd(boot.average[k], ddof=1)  # a replicate that drew no Bob name at all is NaN
    diff = boot.average[k] - boot.average[j]
    point = boot.point[k] - boot.point[j]
    se = np.nanstd(diff, ddof=1)
    p = (1.0 if point == 0 else 0.0) if se == 0 else 2 * student.sf(abs(point) / se, n - 1)
    return [boot.point[k] - half, boot.point[k] + half], bool(p < 0.05)


def true_auroc(delta: float, c: Components) -> float:
    """The estimand under the model: Phi(delta / sqrt(2 + var(dataset) + var(seed)))."""
    return float(norm.cdf(delta / np.sqrt(2 + c.dataset_sd ** 2 + c.seed_sd ** 2)))


def delta_for(target: float, c: Components) -> float:
    """The delta whose estimand is ``target``."""
    return float(norm.ppf(target) * np.sqrt(2 + c.dataset_sd ** 2 + c.seed_sd ** 2))


def _pair(rng: np.random.Generator, sd: float, rho: float, size: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two draws of N(0, sd^2) with correlation rho."""
    first = rng.normal(0.0, sd, size)
    return first, rho * first + np.sqrt(1 - rho ** 2) * rng.normal(0.0, sd, size)


def simulate_leaderboard(c: Components, delta: float,
                         rng: np.random.Generator) -> dict[str, dict[str, dict[int, tuple]]]:
    """cells[detector][dataset][seed] = (labels, scores, groups) of two equal detectors "a", "b"."""
    half_dataset, half_seed = c.dataset_interaction_sd / np.sqrt(2), c.seed_interaction_sd / np.sqrt(2)
    shared_dataset_sd = np.sqrt(max(0.0, c.dataset_sd ** 2 - half_dataset ** 2))
    shared_seed_sd = np.sqrt(max(0.0, c.seed_sd ** 2 - half_seed ** 2))
    names = [f"alice{i}" for i in range(N_NAMES)] + [f"bob{i}" for i in range(N_NAMES)]
    name_effects = _pair(rng, c.name_sd, c.rho, len(names))
    cells: dict[str, dict[str, dict[int, tuple]]] = {"a": {}, "b": {}}
    n = c.n_examples
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    examples = np.r_[np.arange(n), np.arange(n)]
    for d in range(c.n_datasets):
        dataset_effect = rng.normal(0.0, shared_dataset_sd) + rng.normal(0.0, half_dataset, 2)
        for s in range(c.n_seeds):
            theta = delta + dataset_effect + rng.normal(0.0, shared_seed_sd) + rng.normal(0.0, half_seed, 2)
            name_idx = np.r_[rng.integers(0, N_NAMES, n), N_NAMES + rng.integers(0, N_NAMES, n)]
            name_cell = _pair(rng, c.name_cell_sd, c.rho, len(names))
            example = _pair(rng, c.example_sd, c.rho, n)
            noise = _pair(rng, c.noise_sd, c.rho, 2 * n)
            groups = {"name": np.array(names)[name_idx], "example": examples}
            for k, detector in enumerate("ab"):
                scores = (labels * theta[k] + name_effects[k][name_idx] + name_cell[k][name_idx]
                          + example[k][examples] + noise[k])
                cells[detector].setdefault(f"d{d}", {})[s] = (labels, scores, groups)
    return cells


def simulate(c: Components, target: float = 0.8, n_leaderboards: int = 400, n_bootstrap: int = 1000, seed: int = 0,
             without_groups: bool = False, progress: bool = True) -> dict[str, Any]:
    """Coverage of each interval rule and the equal pair's false "resolved" rate."""
    from tqdm.auto import tqdm

    from harness.scoring import hierarchical_bootstrap, paired_differences, wilson_interval

    delta = delta_for(target, c)
    truth = true_auroc(delta, c)
    rules = list(RULES) + [PLUG_IN] + ([NO_GROUPS] if without_groups else [])
    covered = {rule: 0 for rule in rules}
    resolved = {rule: 0 for rule in rules}
    widths = {rule: [] for rule in rules}
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in tqdm(range(n_leaderboards), desc="leaderboards", unit="board", disable=not progress):
        cells = simulate_leaderboard(c, delta, rng)
        boot = hierarchical_bootstrap(cells, n_bootstrap, seed=i)
        boots = {rule: boot for rule in RULES}
        if without_groups:
            plain = {k: {d: {s: cell[:2] for s, cell in per.items()} for d, per in v.items()} for k, v in cells.items()}
            boots[NO_GROUPS] = hierarchical_bootstrap(plain, n_bootstrap, seed=i)
        for detector in ("a", "b"):
            (low, high), claimed = _plug_in_t(boot, detector, "b" if detector == "a" else "a")
            covered[PLUG_IN] += low <= truth <= high
            widths[PLUG_IN].append(high - low)
        resolved[PLUG_IN] += claimed
        for rule in (r for r in rules if r != PLUG_IN):
            method = RULES.get(rule, "percentile")
            for detector in ("a", "b"):
                low, high = boots[rule].interval(detector, method)
                covered[rule] += low <= truth <= high
                widths[rule].append(high - low)
            [comparison] = paired_differences(boots[rule], ["a", "b"], method=method)
            resolved[rule] += comparison.resolved
    seconds = time.perf_counter() - start
    n_intervals = 2 * n_leaderboards
    rows = []
    for rule in rules:
        rows.append({
            "rule": rule,
            "coverage": covered[rule] / n_intervals,
            "coverage_wilson_95": list(wilson_interval(covered[rule], n_intervals)),
            "median_width": float(np.median(widths[rule])),
            "false_resolved": resolved[rule] / n_leaderboards,
            "false_resolved_wilson_95": list(wilson_interval(resolved[rule], n_leaderboards)),
        })
    return {"estimand": truth, "delta": delta, "components": asdict(c), "n_leaderboards": n_leaderboards,
            "n_intervals": n_intervals, "n_bootstrap": n_bootstrap, "seconds": seconds, "rules": rows}


# -- the command ---------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaderboards", type=int, default=400, help="simulated leaderboards (default 400)")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap replicates (the report's 1000)")
    parser.add_argument("--records", type=Path, default=ROOT / "leaderboard" / "records" / "mad",
                        help="records to estimate the components from ('none': the defaults)")
    parser.add_argument("--profile", default="median", help="'median' over detectors, or a detector's name")
    parser.add_argument("--auroc", type=float, default=None,
                        help="the two equal detectors' true mean AUROC (default: the profile's, or 0.8)")
    parser.add_argument("--datasets", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=None, help="examples per cell (default: the records')")
    parser.add_argument("--without-groups", action="store_true",
                        help="also the percentile interval of a bootstrap without the name and example levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    base = Components(n_datasets=args.datasets, n_seeds=args.seeds)
    estimated: dict[str, Any] = {}
    target = 0.8
    if str(args.records) != "none" and args.records.exists():
        records = load_records(args.records)
        per_detector, pairs = estimate_components(records, progress=not args.quiet)
        if per_detector:
            n_examples = int(np.median([len(r["labels"]) for r in records]) // 2)
            base = replace(base, n_examples=n_examples)
            estimated = {"per_detector": per_detector, "adjacent_pairs": pairs}
            print(f"Components estimated from {len(records)} records under {args.records} "
                  "(theta scale; within-cell parts as sds of a unit within-cell variance):")
            print(f"{'detector':30s} {'AUROC':>6s} {'dataset':>8s} {'seed':>6s} {'name':>6s} {'name x cell':>11s} "
                  f"{'example':>8s}")
            for label, v in sorted(per_detector.items(), key=lambda kv: -kv[1]["auroc"]):
                print(f"{label:30s} {v['auroc']:6.3f} {v['dataset_sd']:8.3f} {v['seed_sd']:6.3f} {v['name_sd']:6.3f} "
                      f"{v['name_cell_sd']:11.3f} {v['example_sd']:8.3f}")
            print("adjacent pairs (median): " + ", ".join(f"{k} {v:.3f}" for k, v in pairs.items()))
            base = profile_components(per_detector, pairs, args.profile, base)
            aurocs = [v["auroc"] for v in per_detector.values()]
            target = float(np.median(aurocs)) if args.profile == "median" else per_detector[args.profile]["auroc"]
    if not estimated:
        print("No records with names to estimate from: the stated defaults.")
    if args.examples:
        base = replace(base, n_examples=args.examples)
    print(f"\nSimulation ({args.profile if estimated else 'defaults'}): " +
          ", ".join(f"{k} {v:.3g}" for k, v in asdict(base).items()))
    target = args.auroc if args.auroc is not None else target
    result = simulate(base, target, args.leaderboards, args.n_bootstrap, args.seed, args.without_groups,
                      progress=not args.quiet)
    print(f"\nEstimand: mean AUROC over datasets, seeds, names and items = {result['estimand']:.3f}; "
          f"{result['n_leaderboards']} leaderboards of {base.n_datasets} datasets x {base.n_seeds} seeds x "
          f"{base.n_examples} examples, 2 equal detectors each, {result['n_bootstrap']} bootstrap replicates, "
          f"{result['seconds']:.0f} s")
    print(f"{'interval rule':34s} {'coverage of 95%':>16s} {'[Wilson 95%]':>16s} {'median width':>13s} "
          f"{'equal pair resolved':>20s}")
    for row in result["rules"]:
        low, high = row["coverage_wilson_95"]
        print(f"{row['rule']:34s} {row['coverage']:16.3f} {f'[{low:.3f}, {high:.3f}]':>16s} "
              f"{row['median_width']:13.3f} {row['false_resolved']:20.3f}")
    print("The leaderboard uses the t rule: the bootstrap's standard error x sqrt(n/(n-1)) with a Student t "
          "quantile on n_datasets - 1 degrees of freedom (harness.scoring.t_interval).")
    if args.json:
        args.json.write_text(json.dumps({"profile": args.profile, "estimated": estimated, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
