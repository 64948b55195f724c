"""Nothing lost: a run SIGKILLed at random moments resumes to the records of an uninterrupted run,
and two runs writing into one results directory at once leave every record present and valid.

Each run is a real ``harness run`` process on a cold cache (quick MAD models trained from
scratch), so kills land in training, feature extraction, fitting and record writing alike.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.records import snapshot

pytestmark = pytest.mark.slow  # every test runs cold `harness run` processes

DETECTORS = ["activations_mahalanobis", "activations_lof", "probe_mahalanobis_mean", "flow_mahalanobis"]
N_JOBS = 2 * len(DETECTORS)  # quick MAD has two datasets
N_KILLS = 5


def command(results: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", "--task", "mad", "--quick", "--allow-invalid",
            *[arg for d in DETECTORS for arg in ("--detector", d)], "--results-dir", str(results)]


def start(results: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_CACHE": str(cache)}
    # its own session, so a kill takes the whole process group (the model-training pool too)
    return subprocess.Popen(command(results), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(base: Path) -> tuple[dict, float]:
    """Records of an uninterrupted cold run, and its wall time. Every run of this module uses the
    cache path ``base/cache`` (records name the model directory), moved away afterwards."""
    began = time.perf_counter()
    out = finish(start(base / "reference", base / "cache"))
    wall = time.perf_counter() - began
    assert f"{N_JOBS} jobs" in out and f"{N_JOBS} ok" in out, out
    (base / "cache").rename(base / "cache-reference")
    records = snapshot(base / "reference")
    assert len(records) == N_JOBS
    return records, wall


def count_records(results: Path) -> int:
    return sum(1 for p in results.rglob("*.json") if not p.name.startswith(".")) if results.exists() else 0


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_records(base: Path, reference) -> None:
    """Two kills at random times during start-up and training, three at a random moment after a
    random number of records (so between or during jobs); then a plain run finishes the work."""
    expected, wall = reference
    results, cache = base / "killed", base / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    rng = random.Random(7)
    record_targets = sorted(rng.sample(range(1, N_JOBS), N_KILLS - 2))
    log = []
    for attempt in range(N_KILLS):
        process = start(results, cache)
        began = time.perf_counter()
        if attempt < 2:
            time.sleep(rng.uniform(0.5, wall / 2))
        else:
            target = record_targets[attempt - 2]
            while process.poll() is None and count_records(results) < target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.05))  # jobs of quick models take milliseconds
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        stored = snapshot(results) if results.exists() else {}
        log.append({"kill": attempt + 1, "after_s": round(time.perf_counter() - began, 2),
                    "returncode": process.returncode, "records_so_far": len(stored)})
        for path, record in stored.items():  # whatever survived a kill is complete and correct
            assert record == expected[path], path
    out = finish(start(results, cache))
    print(json.dumps(log))
    print(out.splitlines()[-2])
    assert snapshot(results) == expected
    assert all(entry["returncode"] == -signal.SIGKILL for entry in log)  # every attempt really was killed
    assert any(entry["records_so_far"] == 0 for entry in log)  # killed before any job finished
    assert any(0 < entry["records_so_far"] < N_JOBS for entry in log)  # and between finished jobs
    shutil.rmtree(cache)


def test_two_concurrent_runs_into_one_results_directory_lose_nothing(base: Path, reference) -> None:
    expected, _ = reference
    results, cache = base / "concurrent", base / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    first, second = start(results, cache), start(results, cache)  # both cold: they race on training too
    finish(first), finish(second)
    files = sorted(p for p in results.rglob("*") if p.is_file())
    assert len(files) == N_JOBS, [str(p) for p in files]  # no temporary or duplicate files left
    for path in files:
        assert json.loads(path.read_text())["status"] == "ok"
    assert snapshot(results) == expected
    shutil.rmtree(cache)
