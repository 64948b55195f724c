"""Regenerate the leaderboard's pretrained page (leaderboard/pretrained/) and time each stage.

The page's jobs, from the shipped adapters (leaderboard/pretrained/zoo/) or, with
``--no-shipped-zoo``, from adapters trained here (about an hour each on one core):

* MAD, hemisphere and its no-quirk control, seeds 0 and 1: the ten detectors of Table 1 that are
  not basin detectors, and the two baselines (one process per seed, side by side);
* MAD, population and its control, seed 0: four detectors (its adapter fails the gate: shown,
  not scored);
* with ``--basin``: the two basin detectors on hemisphere, last block, 16 directions (about 42
  minutes per seed on one core);
* with ``--poser``: POSER on the pretrained base, every pair detector.

    python benchmarks/pretrained_page.py --results-dir /tmp/page            # compare with the page
    python benchmarks/pretrained_page.py --results-dir leaderboard/pretrained/records --basin --poser

Each stage prints its wall time and the peak resident memory of its processes; every job prints
how it compares with the page's record of the same job (``against the leaderboard: ...``).
The base must be set up first (``harness setup smollm2-135m``; timed here when it is not).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

BASE = "smollm2-135m"
TABLE_1 = ["activations_mahalanobis", "activations_lof", "probe_lof_mean", "probe_mahalanobis_mean",
           "sae_diag_mahalanobis", "sae_l0", "flow_mahalanobis", "flow_laplace", "attribution_lof_mean",
           "attribution_mahalanobis_mean"]
BASELINES = ["name_only", "input_only"]
# the basin detectors perturb the last block along 16 directions on this base (docs/pretrained.md)
BASIN = ["--detector", "basin_mahalanobis", "--detector", "basin_volume",
         "--param", "basin_mahalanobis.layer=-1", "--param", "basin_volume.layer=-1",
         "--param", "basin_mahalanobis.n_directions=16", "--param", "basin_volume.n_directions=16"]


def detectors(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--detector", name)]


def stage(label: str, commands: list[list[str]]) -> float:
    """Run ``commands`` side by side; print the stage's wall time and the peak memory of its processes."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    processes = [subprocess.Popen(command) for command in commands]
    codes = [p.wait() for p in processes]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    note = "" if peak > before else " (no process above the earlier peak)"
    print(f"\n== {label}: {seconds / 60:.1f} min, exit codes {codes}, peak resident {peak / 2**20:.2f} GiB "
          f"(largest single process so far){note}\n", flush=True)
    if any(codes):
        sys.exit(f"{label} failed")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, required=True)
    parser.add_argument("--basin", action="store_true", help="also the two basin detectors (hours)")
    parser.add_argument("--poser", action="store_true", help="also POSER on the pretrained base")
    parser.add_argument("--no-shipped-zoo", action="store_true", help="train the adapters here (cold)")
    args = parser.parse_args(argv)

    run = ["harness", "run", "--base", BASE, "--results-dir", str(args.results_dir), "--no-leaderboard",
           *(["--no-shipped-zoo"] if args.no_shipped_zoo else [])]
    total = 0.0
    from harness.zoo.pretrained import is_set_up

    if not is_set_up(BASE):
        total += stage("setup", [["harness", "setup", BASE]])
    mad = [*run, "--task", "mad", "--jobs", "1"]
    hemisphere = [*mad, "--dataset", "hemisphere", "--dataset", "hemisphere_control",
                  *detectors(TABLE_1 + BASELINES), *(BASIN if args.basin else [])]
    total += stage("MAD hemisphere, seeds 0 and 1", [[*hemisphere, "--seed", "0"], [*hemisphere, "--seed", "1"]])
    total += stage("MAD population, seed 0", [[*mad, "--dataset", "population", "--dataset", "population_control",
                                               *detectors(["activations_mahalanobis", "activations_lof", *BASELINES]),
                                               "--seed", "0"]])
    if args.poser:
        total += stage("POSER", [[*run, "--task", "poser", "--detector", "all", "--param", "basin_volume.layer=-1"]])
    print(f"all stages: {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
