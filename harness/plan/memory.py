"""Memory a job will need, estimated before it starts, against what the device has.

The runner asks, for every (episode, detector) it is about to run, how many bytes the job
needs: the weights of the largest model it loads (models of a POSER pair list are loaded one
at a time), the extraction's working set (one batch's hidden states of every layer), and what
the detector declares beyond that (:meth:`harness.interfaces.Detector.memory_need`). If the
largest need exceeds the device's free memory the run stops before its first record with one
line: how much is needed, of what, and which option lowers it.

The estimate is deliberately simple (a bound to catch hopeless runs, not a profiler): it
needs no weight loaded, only ``config.json``, the weight files' headers and the tokenizer. The
model facts come from the handles themselves (:class:`harness.zoo.store.ModelHandle`:
``weight_bytes``, ``d_model``, ``n_layers``), so this module imports no model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from harness.interfaces import ConfigError
from harness.runtime import Runtime

GIB = 1024 ** 3
# tokens assumed per prompt when the items do not say (MAD statements are ~10-30 tokens)
DEFAULT_TOKENS = 128
# fixed cost of a harness process (torch, transformers, python)
PROCESS_BYTES = GIB // 2


@dataclass
class Need:
    """Bytes a job needs, by part."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return " + ".join(f"{name} {gib(value)}" for name, value in self.parts.items() if value)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def episode_handles(episode: Any) -> list[Any]:
    """The model handles an episode's items use (one for MAD-kind items, one per model item)."""
    handles = []
    for items in (episode.trusted, episode.test):
        extractor = getattr(items, "extractor", None)
        if extractor is not None:
            handles.append(extractor.handle)
        elif isinstance(items, (list, tuple)):
            handles += [item.handle for item in items if getattr(item, "handle", None) is not None]
    unique = {id(handle): handle for handle in handles}
    return list(unique.values())


def extraction_bytes(handle: Any, runtime: Runtime, tokens: int = DEFAULT_TOKENS) -> int:
    """One batch's hidden states of every layer in float32 (kept by output_hidden_states)."""
    return runtime.initial_batch_size() * tokens * handle.d_model * (handle.n_layers + 1) * 4


def job_need(episode: Any, detector: Any, runtime: Runtime) -> Need:
    """What running ``detector`` on ``episode`` needs, by part (no weight is loaded)."""
    handles = episode_handles(episode)
    need = Need({"process": PROCESS_BYTES})
    if handles:
        largest = max(handles, key=lambda handle: handle.n_parameters)
        need.parts["weights"] = largest.weight_bytes(runtime.dtype)  # at the run's dtype
        need.parts["extraction batch"] = extraction_bytes(largest, runtime)
    extra = detector.memory_need(episode)
    if extra:
        need.parts[f"{detector.name}"] = int(extra)
    return need


def available_bytes(device: str) -> Optional[int]:
    """Free memory of ``device`` (``None`` if it cannot be told)."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.mem_get_info(index)[0])
    if device == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(jobs: Iterable[tuple[Any, Any]], runtime: Runtime, available: Optional[int] = None) -> None:
    """ConfigError naming the largest job if its need exceeds the free memory of the device."""
    device = runtime.resolved_device()
    free = available if available is not None else available_bytes(device)
    if free is None or runtime.device_map:  # a device map spreads the model: no single-device bound
        return
    worst: Optional[tuple[Need, Any, Any]] = None
    for episode, detector in jobs:
        need = job_need(episode, detector, runtime)
        if worst is None or need.total > worst[0].total:
            worst = (need, episode, detector)
    if worst is None or worst[0].total <= free:
        return
    need, episode, detector = worst
    advice = ["--dtype bfloat16 halves the weights" if runtime.dtype in ("float32", "auto") else "",
              "a smaller --batch-size shrinks the extraction batch" if need.parts.get("extraction batch", 0) > GIB else "",
              f"fewer layers or items lower {detector.name}'s part" if need.parts.get(detector.name) else "",
              "--device-map auto spreads the model over devices" if device.startswith("cuda") else ""]
    raise ConfigError(
        f"{detector.name} on {episode.name} needs about {gib(need.total)} ({need.describe()}), more than the "
        f"{gib(free)} free on {device}; " + "; ".join(a for a in advice if a))
