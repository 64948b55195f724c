"""How far a detector's numbers move when the CPU kernels change, on the leaderboard's own models.

Trained weights differ across machines, which the shipped zoo solves; but scoring runs on the
user's machine too, and its kernels (AVX-512, AVX2, or neither; MKL's and OpenBLAS's code paths)
decide the last bits of every matrix product. One machine can run the kernels of others: torch's
``ATEN_CPU_CAPABILITY`` (``avx512``, ``avx2``, ``default``), ``MKL_CBWR`` (MKL's conditional
numerical reproducibility: ``COMPATIBLE`` is the SSE2 path every x86 CPU has) and
``OPENBLAS_CORETYPE`` (numpy's BLAS kernels). This script re-runs a sample of the leaderboard's
jobs (default: every MAD detector on addition seed 0, and POSER's cheaper detectors) under each
setting, on the shipped models, with fresh results directories, and prints per detector the
largest difference of any metric from the leaderboard's record of the same job.

    python benchmarks/kernel_agreement.py [--settings native avx2 portable] [--out DIR]

Its table is what the tolerance of the CI regeneration check (``.ci/run``) rests on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Haswell"},
}
MAD_DETECTORS = ("activations_mahalanobis", "activations_lof", "probe_mahalanobis_mean", "probe_lof_mean",
                 "attribution_mahalanobis_mean", "attribution_lof_mean", "flow_mahalanobis", "flow_laplace",
                 "sae_diag_mahalanobis", "sae_l0", "basin_mahalanobis", "basin_volume", "name_only", "input_only")
POSER_DETECTORS = ("activation_noise", "steering_norm", "confidence", "weight_norm")


def run_sample(setting: str, out: Path, cache: Path, poser: bool) -> float:
    """One setting's runs (MAD addition seed 0; POSER) into ``out``; returns the wall time."""
    env = {**os.environ, **SETTINGS[setting], "HARNESS_CACHE": str(cache)}
    commands = [["harness", "run", "--task", "mad", "--dataset", "addition", "--jobs", "2", "--no-leaderboard",
                 "--results-dir", str(out), *[a for d in MAD_DETECTORS for a in ("--detector", d)]]]
    if poser:
        commands.append(["harness", "run", "--task", "poser", "--jobs", "2", "--no-leaderboard", "--results-dir",
                         str(out), *[a for d in POSER_DETECTORS for a in ("--detector", d)]])
    start = time.perf_counter()
    for command in commands:
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def differences(out: Path) -> dict[str, tuple[float, bool]]:
    """Detector -> (largest metric difference from the leaderboard's record, identical?)."""
    from harness.records import compare_with_leaderboard, read_record

    found: dict[str, tuple[float, bool]] = {}
    for path in sorted(out.rglob("*.json")):
        record = read_record(path)
        agreement = compare_with_leaderboard(path, out, ROOT / "leaderboard" / "records")
        if record is None or agreement is None:
            continue
        name = f"{record['task']} {record['detector']}"
        worst, identical = found.get(name, (0.0, True))
        found[name] = (max(worst, agreement.max_diff), identical and agreement.identical)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=None, help="keep the records here (default: a temporary directory)")
    parser.add_argument("--no-poser", action="store_true", help="MAD only")
    args = parser.parse_args()
    base = args.out or Path(tempfile.mkdtemp(prefix="kernel-agreement-"))
    table: dict[str, dict[str, tuple[float, bool]]] = {}
    for setting in args.settings:
        out = base / setting
        wall = run_sample(setting, out / "records", out / "cache", poser=not args.no_poser)
        table[setting] = differences(out / "records")
        print(f"{setting}: {wall:.0f} s ({' '.join(f'{k}={v}' for k, v in SETTINGS[setting].items()) or 'no override'})",
              flush=True)
    detectors = sorted({d for found in table.values() for d in found})
    print("\n| detector | " + " | ".join(args.settings) + " |")
    print("|---|" + "---|" * len(args.settings))
    for detector in detectors:
        cells = []
        for setting in args.settings:
            worst, identical = table[setting].get(detector, (float("nan"), False))
            cells.append("identical" if identical else f"{worst:.2g}")
        print(f"| {detector} | " + " | ".join(cells) + " |")
    print(f"\nrecords: {base}")


if __name__ == "__main__":
    main()
