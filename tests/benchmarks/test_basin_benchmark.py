"""The basin benchmark script runs end to end (``--smoke`` sizes) and reports what its docs say."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "basin.py"


@pytest.mark.slow
def test_smoke_run_reports_both_references_and_the_engine_threads():
    out = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--engine-threads", "2"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "references 1 thread, engine 2 (compare wall times)" in out
    for part in ("per-model estimate", "per-example multipliers"):
        section = out[out.index(part):]
        for label in ("tyche cache :", "tyche plain :", "engine"):
            assert label in section, (part, label)
    speedups = re.findall(r"speed-up\s*: ([\d.]+)x cpu \(([\d.]+)x wall\) vs tyche cache", out)
    assert len(speedups) == 2 and all(float(w) > 0 for _, w in speedups)
    # the smoke run's radii agree with the reference (converged on both sides)
    assert re.search(r"radii vs tyche cache .*100\.0% within 1%", out)
