"""Loading causal LMs from directories, fingerprinting them, and caching trained tiny models.

``load_model`` is the one loader: the tiny models the tasks train (saved with
``save_pretrained``) and a real Hugging Face model directory go through the same code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from harness.cache import (
    MANIFEST_NAME,
    PathLike,
    atomic_directory,
    atomic_write_json,
    cache_root,
    file_sha256,
    stable_hash,
    verify_manifest,
    write_manifest,
)
from harness.interfaces import ConfigError
from harness.runtime import Runtime, current, free_memory

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
METADATA_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "generation_config.json", "adapter_config.json", "base.json")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# a LoRA adapter's folder (harness.zoo.adapters trains them): peft's adapter files, and base.json,
# the base it sits on (its spec: a base `harness setup` put in <cache>/bases, or a folder; and its
# fingerprint)
ADAPTER_CONFIG = "adapter_config.json"
BASE_FILE = "base.json"


class ModelDirectoryError(ConfigError):
    """A model directory is missing or does not hold a loadable causal LM."""


def check_model_dir(path: PathLike) -> Path:
    """Raise an actionable error unless ``path`` looks like a saved Hugging Face causal LM."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirectoryError(f"model directory {str(path)!r} does not exist")
    if not (path / "config.json").exists():
        raise ModelDirectoryError(f"model directory {str(path)!r} has no config.json (save it with save_pretrained)")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        raise ModelDirectoryError(
            f"model directory {str(path)!r} has no weights (*.safetensors or *.bin); save it with save_pretrained"
        )
    return path


def model_fingerprint(path: PathLike, memo: bool = True) -> str:
    """Content hash of a model directory's config, tokenizer and weight files.

    Memoised in the cache by (path, size, mtime) so a large model is hashed once
    (``memo=False``: hash without reading or writing the memo, e.g. for a temporary copy).
    """
    path = check_model_dir(path).resolve()
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in METADATA_FILES))
    if not memo:
        return stable_hash({p.name: file_sha256(p) for p in files})
    stat_key = stable_hash([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files] + [str(path)])
    memo = cache_root() / "fingerprints" / f"{stat_key}.json"
    if memo.exists():
        try:
            return json.loads(memo.read_text())["fingerprint"]
        except (ValueError, KeyError):
            pass  # a damaged memo is recomputed
    fingerprint = stable_hash({p.name: file_sha256(p) for p in files})
    atomic_write_json(memo, {"path": str(path), "fingerprint": fingerprint})
    return fingerprint


def is_adapter_dir(path: PathLike) -> bool:
    """Whether ``path`` holds a LoRA adapter on a pretrained base (:mod:`harness.zoo.adapters`)."""
    return (Path(path) / ADAPTER_CONFIG).exists()


def adapter_base_dir(path: PathLike) -> Path:
    """The base folder an adapter sits on (``<cache>/bases/<spec>`` for a base ``harness setup``
    put there, else the folder ``spec`` names), checked against the fingerprint it was trained on."""
    file = Path(path) / BASE_FILE
    if not file.exists():
        raise ModelDirectoryError(f"adapter directory {str(path)!r} has no {BASE_FILE}: it does not say which base it is for")
    base = json.loads(file.read_text())
    spec = base["spec"]
    folder = cache_root() / "bases" / spec
    if not folder.is_dir():
        folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ModelDirectoryError(f"adapter {str(path)!r} sits on base {spec!r}, which is not here: run "
                                  f"`harness setup {spec}` (or put that folder back)")
    found = model_fingerprint(folder)
    if found != base["fingerprint"]:
        raise ModelDirectoryError(
            f"adapter {str(path)!r} was trained on base {spec!r} with fingerprint {base['fingerprint']}, but {folder} "
            f"has fingerprint {found}: set up the same base or retrain the adapter")
    return folder


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Hide the FutureWarning peft triggers in transformers 5 (``is_gradient_checkpointing``): the
    user has nothing to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _load_adapter_model(path: Path, dtype: Any) -> Any:
    """The base with the adapter of ``path`` merged into its weights: one plain causal LM."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(adapter_base_dir(path), dtype=dtype)
    with peft_quietly():
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload()


def load_model(path: PathLike, runtime: Optional[Runtime] = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a directory written by ``save_pretrained``.

    ``runtime`` (default: this process's, :mod:`harness.runtime`) says the device, dtype and
    device map. The model is put in eval mode; the tokenizer pads on the left (the last position
    of every row is then the answer position) and gets a pad token if it has none.
    """
    from transformers import AutoModelForCausalLM

    runtime = runtime or current()
    path = check_model_dir(path)
    config = model_config(path)
    checkpoint_dtype = config.get("dtype") or config.get("torch_dtype")  # "torch_dtype" before transformers 5
    kwargs: dict[str, Any] = {"dtype": runtime.torch_dtype(checkpoint_dtype)}
    if runtime.device_map:
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise ConfigError('--device-map auto needs accelerate: pip install -e ".[big]"') from None
        kwargs["device_map"] = runtime.device_map
    if is_adapter_dir(path):  # a LoRA adapter on a pretrained base: merged into one plain model
        if runtime.device_map:
            raise ConfigError("--device-map auto is not supported for adapter models; give --device instead")
        model = _load_adapter_model(path, kwargs["dtype"])
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not runtime.device_map:
        model = model.to(runtime.resolved_device())
    model.eval()
    return model, load_tokenizer(path)


def load_tokenizer(path: PathLike) -> Any:
    """The tokenizer of a model directory, padding on the left (the last position of every row
    is then the answer position), with a pad token even if the checkpoint has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(check_model_dir(path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def model_config(path: PathLike) -> dict[str, Any]:
    """The ``config.json`` of a model directory (read without loading any weight)."""
    return json.loads((check_model_dir(path) / "config.json").read_text())


def count_parameters(path: PathLike) -> int:
    """Parameters stored in a model directory, from the safetensors headers (no weight is read);
    ``.bin``/``.pt`` files are counted as float32 bytes / 4. An adapter counts its base's
    parameters: merged, it is a model of the base's size."""
    if is_adapter_dir(path):
        return count_parameters(adapter_base_dir(path))
    total = 0
    for file in Path(path).iterdir():
        if file.suffix == ".safetensors":
            with open(file, "rb") as handle:
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
            for name, info in header.items():
                if name != "__metadata__":
                    count = 1
                    for dim in info["shape"]:
                        count *= dim
                    total += count
        elif file.suffix in WEIGHT_SUFFIXES:
            total += file.stat().st_size // 4
    return total


@dataclass
class ModelHandle:
    """A model directory with its fingerprint; loads the model (and, separately, the tokenizer)
    on first use, once. Its configuration facts (layers, parameters) load no weight."""

    path: Path
    fingerprint: str = ""
    _loaded: Optional[tuple[Any, Any]] = field(default=None, repr=False, compare=False)
    _tokenizer: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.fingerprint:
            self.fingerprint = model_fingerprint(self.path)

    @property
    def model(self) -> Any:
        return self._load()[0]

    @property
    def tokenizer(self) -> Any:
        if self._loaded is not None:
            return self._loaded[1]
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path)
        return self._tokenizer

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._loaded is not None

    @property
    def d_model(self) -> int:
        """Residual stream width, from ``config.json``."""
        config = model_config(self.path)
        for name in ("hidden_size", "n_embd", "d_model"):
            if isinstance(config.get(name), int):
                return config[name]
        return int(self.model.config.hidden_size)

    @property
    def n_layers(self) -> int:
        """Blocks of the model (hidden states 0..n_layers), from ``config.json``: no weight is
        loaded, so up-front checks on a pair list of large models stay cheap."""
        config = model_config(self.path)
        for name in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(config.get(name), int):
                return config[name]
        return int(self.model.config.num_hidden_layers)

    @property
    def n_parameters(self) -> int:
        """Parameters of the model, from its weight files' headers (no weight is loaded)."""
        return count_parameters(self.path)

    @property
    def input_device(self) -> Any:
        """Where input ids go: the input embeddings' device (several devices with a device map)."""
        return self.model.get_input_embeddings().weight.device

    def weight_bytes(self, dtype: str = "auto") -> int:
        """Bytes of the weights at ``dtype`` (``auto``: the checkpoint's, or float32); no weight
        is loaded."""
        if dtype == "auto":
            config = model_config(self.path)
            dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
        return self.n_parameters * DTYPE_BYTES.get(dtype, 4)

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            _make_room_for(self)
            self._loaded = load_model(self.path)
        _touch(self)
        return self._loaded

    def release(self) -> None:
        """Drop the weights from memory (they load again on next use)."""
        if self._loaded is not None:
            self._loaded = None
            _RESIDENT[:] = [h for h in _RESIDENT if h is not self]
            free_memory()


# Models in memory, least recently used first. A run that walks a pair list of large models
# (POSER) keeps only what fits in HARNESS_RESIDENT_GIB (default 0.5 GiB) resident: loading
# another model releases the least recently used ones first. Tiny models (about 1 MB each) all
# stay resident; a pretrained base's merged adapters (SmolLM2-135M: 0.54 GB each in float32) load
# one at a time, as harness.plan.memory assumes. Under the former 4 GiB all four POSER personas
# on SmolLM2-135M stayed resident (3.9 GiB resident between passes) and feature extraction on top
# of them peaked at 5.1 GiB; one at a time the same run peaks at 3.4 GiB. A released model costs a
# reload of a second or two, and the detectors cache their per-model results, so each model
# loads about once per detector.
_RESIDENT: list[ModelHandle] = []
DEFAULT_RESIDENT_GIB = 0.5


def resident_budget() -> int:
    """Bytes of weights kept in memory at once (``HARNESS_RESIDENT_GIB``, default 0.5 GiB)."""
    return int(float(os.environ.get("HARNESS_RESIDENT_GIB", DEFAULT_RESIDENT_GIB)) * 1024 ** 3)


def _make_room_for(handle: ModelHandle) -> None:
    budget = resident_budget()
    dtype = current().dtype
    need = handle.weight_bytes(dtype)
    while _RESIDENT and sum(h.weight_bytes(dtype) for h in _RESIDENT) + need > budget:
        _RESIDENT[0].release()


def _touch(handle: ModelHandle) -> None:
    if _RESIDENT and _RESIDENT[-1] is handle:
        return
    _RESIDENT[:] = [h for h in _RESIDENT if h is not handle] + [handle]


def portable_model_path(path: PathLike) -> str:
    """``path`` as a record may store it: ``$HARNESS_CACHE/<namespace>/<hash>`` for a model of
    the cache (the cache root differs between machines and users; the key hash does not), the
    path itself for any other model directory."""
    path = Path(path)
    try:
        return "$HARNESS_CACHE/" + path.resolve().relative_to(cache_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def model_cache_path(key: dict, namespace: str = "models") -> Path:
    """Where the model for ``key`` lives in the cache (complete once it holds ``key.json``)."""
    return cache_root() / namespace / stable_hash(key)


def is_cached(key: dict, namespace: str = "models") -> bool:
    """Whether an intact model for ``key`` is in the cache. A damaged one (a file truncated or
    altered since its manifest was written, or an interrupted build) is reported and deleted,
    so the caller rebuilds it."""
    path = model_cache_path(key, namespace)
    if not path.exists():
        return False
    if not (path / "key.json").exists():
        problems = ["the build never finished (no key.json)"]
    elif not (path / MANIFEST_NAME).exists():
        # written before manifests existed (a finished build: key.json is written last); adopt it
        logger.info("cached model %s has no manifest (older harness); writing one", path)
        write_manifest(path)
        problems = []
    else:
        problems = verify_manifest(path)
    if not problems:
        return True
    logger.warning("cached model %s is damaged (%s); deleting it to rebuild", path, "; ".join(problems))
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return False


def cached_model_dir(key: dict, build: Callable[[Path], None], namespace: str = "models") -> Path:
    """Return the cache directory for ``key``, calling ``build(tmp_dir)`` to create it if missing
    or damaged.

    ``build`` must ``save_pretrained`` the model and tokenizer into ``tmp_dir``; the directory
    is renamed into place only when ``build`` returns, so a crash never leaves a half-written
    model that later runs would load. ``key.json`` beside the weights records the key and
    ``MANIFEST.json`` the SHA-256 of every file, checked on every later use.
    """
    final = model_cache_path(key, namespace)
    if is_cached(key, namespace):
        return final
    with atomic_directory(final) as tmp:
        build(tmp)
        atomic_write_json(tmp / "key.json", key)
        write_manifest(tmp)
    return final


def quiet_transformers() -> None:
    """Hide transformers' per-load progress bars and info logs (our own tqdm bars report progress)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def configure_process(device: str = "cpu") -> None:
    """Set up a harness process: quiet transformers logging and, when models run on the CPU,
    the thread policy: one torch thread (more threads than free cores slow every process
    down); ``HARNESS_TORCH_THREADS`` overrides (training always runs on one thread, see
    :data:`harness.zoo.training.TRAINING_THREADS`). On an accelerator torch's default stays.

    numpy's and scipy's BLAS get the same number of threads as torch: the detectors' covariances
    and solves sum in another order on two threads than on one, which moved a Mahalanobis score on
    SmolLM2-135M's 576-wide features by 2e-8 of its size. One thread everywhere makes a record the
    same bits whatever the machine's core count or ``OMP_NUM_THREADS``."""
    import torch

    quiet_transformers()
    threads = None
    if os.environ.get("HARNESS_TORCH_THREADS"):
        threads = int(os.environ["HARNESS_TORCH_THREADS"])
    elif device == "cpu":
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
        limit_blas_threads(threads)


def limit_blas_threads(threads: int) -> None:
    """Limit the BLAS libraries numpy and scipy loaded to ``threads`` (threadpoolctl, which
    scikit-learn installs; a library only counts once loaded, so scipy's is loaded first)."""
    import scipy.linalg  # noqa: F401  (loads scipy's own BLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
