"""Executors: local, a process pool and Ray give the same records as each other and as a rerun."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.run.executors import make_executor
from harness.interfaces import ConfigError
from harness.plugins import get_registry
from harness.records import snapshot
from harness.run.runner import RunOptions, run

DETECTORS = ["activations_mahalanobis", "activations_lof"]


def quick_run(results_dir: Path, **executor) -> list:
    options = RunOptions(quick=True, allow_invalid=True, results_dir=results_dir, **executor)
    return run(get_registry(), "mad", DETECTORS, options)


@pytest.fixture(scope="module")
def local_records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("local-records")
    outcomes = quick_run(results)
    assert [r.status for r in outcomes] == ["ok"] * 4
    return results


def test_rerun_with_force_gives_identical_records(local_records: Path, tmp_path: Path) -> None:
    shutil.copytree(local_records, tmp_path / "again")
    before = snapshot(tmp_path / "again")
    options = RunOptions(quick=True, allow_invalid=True, results_dir=tmp_path / "again", force=True)
    assert [r.status for r in run(get_registry(), "mad", DETECTORS, options)] == ["ok"] * 4
    assert snapshot(tmp_path / "again") == before


@pytest.mark.slow
def test_process_pool_gives_the_records_of_the_local_executor(local_records: Path, tmp_path: Path) -> None:
    outcomes = quick_run(tmp_path / "process", executor="process", jobs=2)
    assert [(r.dataset, r.detector, r.status) for r in outcomes] == [
        (d, det, "ok") for d in ("addition", "modular_addition") for det in DETECTORS
    ]  # reported in job order although the pool finishes them in any order
    assert snapshot(tmp_path / "process") == snapshot(local_records)


def test_bad_executor_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="valid: local, process, ray"):
        make_executor("slurm")
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        make_executor("process", jobs=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def ray_head():
    """A Ray head on loopback (dashboard off, token auth with a throwaway token), stopped after."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).parent / "ray"
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    start = subprocess.run(
        [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--include-dashboard=false", "--num-cpus=2", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_executor_gives_the_records_of_the_local_executor(ray_head, local_records: Path, tmp_path: Path) -> None:
    address, env = ray_head
    command = [sys.executable, "-m", "harness.cli", "run", "--task", "mad", "--quick", "--allow-invalid",
               *[arg for d in DETECTORS for arg in ("--detector", d)], "--results-dir", str(tmp_path / "ray"),
               "--executor", "ray", "--ray-address", address]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 jobs" in done.stdout and "4 ok" in done.stdout, done.stdout
    assert snapshot(tmp_path / "ray") == snapshot(local_records)
