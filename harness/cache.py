"""On-disk cache and atomic writes: where expensive artifacts live and how they are keyed.

Cache root: ``$HARNESS_CACHE`` if set, else the platform cache directory. Everything under
it can be deleted and is rebuilt. Keys are hashes of JSON-serialisable descriptions of
*all* inputs that change an artifact, so a changed input never reuses a stale artifact.
Only safetensors and JSON are written and read here: nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import platformdirs

PathLike = Union[str, os.PathLike]


def cache_root() -> Path:
    """The cache directory (created if missing)."""
    root = os.environ.get("HARNESS_CACHE") or platformdirs.user_cache_dir("detector-harness")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename.

    A reader sees either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_directory(final: PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it into place when the block succeeds.

    If ``final`` appears meanwhile (another process built it), the new copy is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def arrays_at(path: Path, compute: Callable[[], dict[str, Any]], use_cache: bool = True) -> dict[str, Any]:
    """Arrays stored at ``path`` (safetensors), computing and storing them (atomically) when
    missing or unreadable; a damaged file is recomputed, never trusted. ``compute`` returns
    name -> numpy array. With ``use_cache=False`` nothing is read or written."""
    import logging

    from safetensors.numpy import load_file, save

    if use_cache and path.exists():
        try:
            return load_file(str(path))
        except Exception as exc:
            logging.getLogger(__name__).warning("cache file %s unreadable (%s); recomputing", path, exc)
    arrays = compute()
    if use_cache:
        atomic_write_bytes(path, save(arrays))
    return arrays


def cached_arrays(namespace: str, key: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Arrays for ``key`` from ``<cache>/<namespace>/<hash>.safetensors`` (see :func:`arrays_at`)."""
    return arrays_at(cache_root() / namespace / f"{stable_hash(key)}.safetensors", compute)
