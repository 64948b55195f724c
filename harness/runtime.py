"""Where and how models run: device, dtype, batch size, device map; one setting per process.

``harness run --device/--dtype/--batch-size/--device-map`` set these for every model the run
touches: the runner installs them with :func:`use` before it builds episodes, the worker of a
process pool or Ray cluster installs the driver's, and :class:`harness.zoo.store.ModelHandle`
and :class:`harness.features.extractor.FeatureExtractor` read them when they load a model or run it.

What goes where: ``dtype`` changes numbers, so it is part of the feature cache key and the
result key; ``device`` may change the last bits (other kernels), so it is stored in every record
but not keyed (a CPU and a GPU run of one job share a record); ``batch_size`` never changes a
number (batches of similar length, per-row positions) and is only recorded.

The CPU thread policy (one torch thread on 2-core machines, ``HARNESS_TORCH_THREADS``
overrides) applies when the device is the CPU; see :func:`harness.zoo.store.configure_process`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union

from harness.interfaces import ConfigError

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEFAULT_BATCH_SIZE = 256
# features of models this large are stored in float16 (half the disk and the load time);
# smaller models keep float32, so the tiny benchmark models' numbers stay exact
FLOAT16_STORAGE_PARAMS = 1_000_000_000

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """How models run in this process.

    device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (the best available).
    dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (the checkpoint's own, float32
        for a checkpoint that does not say).
    batch_size: prompts per forward pass, or ``"auto"``: start at 256 and halve on
        out-of-memory, saying so.
    device_map: ``None``, or ``"auto"`` to spread a model larger than one device over the
        available ones (needs ``accelerate``: ``pip install -e ".[big]"``).
    """

    device: str = "cpu"
    dtype: str = "float32"
    batch_size: Union[int, str] = "auto"
    device_map: Optional[str] = None

    def __post_init__(self) -> None:
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"--device must be cpu, cuda, cuda:N, mps or auto; got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"--batch-size must be a positive integer or 'auto'; got {self.batch_size!r}")
        if self.device_map not in (None, "auto"):
            raise ConfigError(f"--device-map must be 'auto'; got {self.device_map!r}")

    def resolved_device(self) -> str:
        """The concrete torch device (``auto`` -> cuda, then mps, then cpu)."""
        if self.device != "auto":
            if self.device.startswith("cuda") or self.device == "mps":
                _check_available(self.device)
            return self.device
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def torch_dtype(self, checkpoint_dtype: Any = None) -> Any:
        """The torch dtype to load with (``auto``: the checkpoint's, float32 if it has none)."""
        import torch

        if self.dtype == "auto":
            if isinstance(checkpoint_dtype, str):
                checkpoint_dtype = getattr(torch, checkpoint_dtype, None)
            return checkpoint_dtype if isinstance(checkpoint_dtype, torch.dtype) else torch.float32
        return getattr(torch, self.dtype)

    def initial_batch_size(self) -> int:
        return DEFAULT_BATCH_SIZE if self.batch_size == "auto" else int(self.batch_size)

    def record(self) -> dict[str, Any]:
        """What a record stores (device resolved: ``auto`` says what it meant)."""
        return {"device": self.resolved_device(), "dtype": self.dtype, "batch_size": self.batch_size,
                "device_map": self.device_map}

    def key(self) -> dict[str, Any]:
        """What changes numbers, for cache and result keys: only a non-default dtype (so the
        float32 CPU keys of earlier harness versions stay valid)."""
        return {} if self.dtype == "float32" else {"dtype": self.dtype}


def _check_available(device: str) -> None:
    import torch

    if device == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ConfigError("--device mps: this machine has no MPS device; use --device cpu or auto")
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); "
                          "use --device cpu or auto")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


_current = Runtime()


def current() -> Runtime:
    """The runtime of this process (the default: CPU, float32, batch size auto)."""
    return _current


def use(runtime: Runtime) -> Runtime:
    """Install ``runtime`` for this process; returns the previous one."""
    global _current
    previous, _current = _current, runtime
    return previous


def from_dict(values: dict[str, Any]) -> Runtime:
    return Runtime(**{f.name: values[f.name] for f in dataclasses.fields(Runtime) if f.name in values})


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator's out-of-memory error (CUDA, MPS or CPU)."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def with_batch_backoff(run: Callable[[int], T], batch_size: int, what: str, auto: bool) -> T:
    """``run(batch_size)``; with ``auto``, halve the batch size on out-of-memory and retry
    (down to 1), saying so. A fixed batch size that does not fit is reported as a usage error
    naming the option."""
    while True:
        try:
            return run(batch_size)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_memory()
            if not auto:
                raise ConfigError(f"{what} ran out of memory at --batch-size {batch_size}; lower it or use "
                                  "--batch-size auto") from None
            if batch_size == 1:
                raise
            logger.warning("%s ran out of memory at batch size %d; retrying with %d", what, batch_size,
                           batch_size // 2)
            batch_size //= 2


def free_memory() -> None:
    """Collect garbage and return cached accelerator memory to the device."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
