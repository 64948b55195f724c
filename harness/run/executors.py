"""Executors: where the jobs of a run execute. The runner hands them job specs and gets outcomes.

* ``local`` (default): one after another in this process, on the episodes the driver built.
* ``process``: a pool of ``jobs`` local worker processes (spawned, one torch thread each).
* ``ray``: tasks on a Ray cluster (``pip install -e ".[ray]"``); each job requests the CPUs and
  GPUs its detector declares. ``address=None`` starts a private local instance; otherwise it
  connects to ``address`` (e.g. ``127.0.0.1:6379`` or ``auto``). Workers need the harness and
  its plugins installed and must see the same cache directory (``HARNESS_CACHE``, passed on).

Whatever the executor, workers only compute: the driver writes every record, so concurrent
workers never race on the results directory, and a job gives the same numbers everywhere
(see :func:`harness.run.jobs.job_seed`).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Optional, Sequence

from harness.interfaces import ConfigError
from harness.run.jobs import JobSpec, error_outcome, run_in_worker

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "process", "ray")
# environment a worker needs to see what the driver sees
FORWARDED_ENV = ("HARNESS_CACHE", "HARNESS_LOAD_PLUGINS", "HARNESS_TORCH_THREADS", "HARNESS_QUICK")

LocalRunner = Callable[[JobSpec], dict[str, Any]]


class Executor:
    """Runs job specs; ``run`` yields ``(spec, outcome)`` pairs as jobs finish, in any order."""

    name = ""

    def run(self, specs: Sequence[JobSpec], local: LocalRunner) -> Iterator[tuple[JobSpec, dict[str, Any]]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (a no-op for the local executor)."""


class LocalExecutor(Executor):
    """In this process, in order, on the driver's own episodes (``local`` runs a spec)."""

    name = "local"

    def run(self, specs: Sequence[JobSpec], local: LocalRunner) -> Iterator[tuple[JobSpec, dict[str, Any]]]:
        for spec in specs:
            yield spec, local(spec)


class ProcessExecutor(Executor):
    """A pool of ``jobs`` spawned worker processes on this machine."""

    name = "process"

    def __init__(self, jobs: int = 2) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self._pool: Optional[ProcessPoolExecutor] = None

    def run(self, specs: Sequence[JobSpec], local: LocalRunner) -> Iterator[tuple[JobSpec, dict[str, Any]]]:
        if not specs:
            return
        if self._pool is None:
            # spawn, not fork: forking a process that holds torch thread pools can deadlock
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn"))
        pending = {self._pool.submit(run_in_worker, spec): spec for spec in specs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                spec = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # a worker died (e.g. killed, out of memory)
                    outcome = error_outcome(exc)
                yield spec, outcome

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Ray tasks, each requesting its detector's CPUs and GPUs."""

    name = "ray"

    def __init__(self, address: Optional[str] = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError('--executor ray needs Ray: pip install -e ".[ray]"') from None
        self._ray = ray
        self.address = address
        self._started = False

    def _ensure_connected(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
        from harness.cache import cache_root

        env["HARNESS_CACHE"] = str(cache_root().resolve())  # workers must share the driver's cache
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
        if self.address is None:
            kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
        try:
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--ray-address {self.address!r}: cannot connect to a Ray cluster ({exc})") from None
        self._started = True

    def run(self, specs: Sequence[JobSpec], local: LocalRunner) -> Iterator[tuple[JobSpec, dict[str, Any]]]:
        if not specs:
            return
        self._ensure_connected()
        ray = self._ray
        remote = ray.remote(run_in_worker)
        pending = {}
        for spec in specs:
            ref = remote.options(
                num_cpus=spec.resources.get("cpus", 1), num_gpus=spec.resources.get("gpus", 0), max_retries=2
            ).remote(spec)
            pending[ref] = spec
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the worker process died or the task was cancelled
                    outcome = error_outcome(exc)
                yield spec, outcome

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def make_executor(name: str, jobs: int = 1, ray_address: Optional[str] = None) -> Executor:
    """The executor called ``name``; an unknown name or a bad setting is a ConfigError."""
    if name == "local":
        if jobs != 1:
            raise ConfigError("--jobs needs --executor process (or ray, which sizes itself from the cluster)")
        return LocalExecutor()
    if name == "process":
        return ProcessExecutor(jobs)
    if name == "ray":
        return RayExecutor(ray_address)
    raise ConfigError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
