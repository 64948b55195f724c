"""On-disk cache and atomic writes: where expensive artifacts live and how they are keyed.

Cache root: ``$HARNESS_CACHE`` if set, else the platform cache directory. Everything under
it can be deleted and is rebuilt. Keys are hashes of JSON-serialisable descriptions of
*all* inputs that change an artifact, so a changed input never reuses a stale artifact.
Only safetensors and JSON are written and read here: nothing is unpickled.

Integrity: every artifact carries a content hash. Array files hold the SHA-256 of their
tensors in the safetensors metadata (:func:`arrays_at`); a cached directory (a trained model)
holds ``MANIFEST.json`` with the size and SHA-256 of every file (:func:`write_manifest`,
:func:`verify_manifest`). A truncated or altered artifact is detected when it is read, reported
with a warning, deleted and rebuilt; it is never trusted.

Atomic writes (:func:`atomic_write_bytes`, :func:`atomic_write_json`, :func:`atomic_directory`)
create their temporary file or directory with the permissions a plain ``open()`` or ``mkdir``
would give (0666 / 0777 less the process umask: 0644 / 0755 under umask 022), not the private
0600 / 0700 of :mod:`tempfile`. JSON is written as standard JSON: a NaN or infinite float is
written as ``null`` (a reader gets ``None`` where the writer had a non-finite number; finite
floats round-trip exactly).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import platformdirs

PathLike = Union[str, os.PathLike]
logger = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
# temporary files and directories of interrupted writes (a SIGKILL skips every cleanup) are
# removed once they are this old; younger ones may belong to a concurrent writer
STALE_TEMP_AGE_S = 6 * 3600


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

    A reader sees either the old file or the complete new one, never a partial write. The file
    gets the mode a plain ``open(path, "w")`` of a new file would: 0666 less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temporary_file(path)
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


def _temporary_name(final: Path) -> Path:
    """``.<name>.<random>.tmp`` beside ``final`` (what :func:`remove_stale_temporaries` matches)."""
    return final.parent / f".{final.name}.{secrets.token_hex(6)}.tmp"


def _new_temporary_file(final: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``final``, opened for writing: created by ``os.open``
    with mode 0666, so the umask applies as for any new file (``tempfile.mkstemp`` forces 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = _temporary_name(final)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {final}")


def _new_temporary_directory(final: Path) -> Path:
    """A new, empty temporary directory beside ``final``, made with mode 0777 less the umask
    (``tempfile.mkdtemp`` forces 0700, which the renamed directory would keep)."""
    for _ in range(100):
        tmp = _temporary_name(final)
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {final}")


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as standard JSON (indented, sorted keys), atomically. NaN and infinite
    floats (Python's or numpy's, anywhere in ``obj``) are written as ``null``, never as the
    non-standard ``NaN`` / ``Infinity`` tokens other JSON readers refuse."""
    text = json.dumps(json_compatible(obj), indent=1, sort_keys=True, default=_json_default, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def json_compatible(obj: Any) -> Any:
    """``obj`` with every non-finite float (and numpy float scalar or array element) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_compatible(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_compatible(value) for value in obj]
    if type(obj).__module__ == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            return json_compatible(obj.tolist())
        if isinstance(obj, np.floating):
            return json_compatible(float(obj))
    return obj


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

    If ``final`` appears meanwhile (another process built it), the new copy is discarded. The
    directory gets the mode a plain ``mkdir`` would: 0777 less the umask.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent, final.name)
    tmp = _new_temporary_directory(final)
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


def arrays_digest(arrays: dict[str, Any]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays`` (name order)."""
    import numpy as np

    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, str(array.dtype), list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_verified_arrays(path: PathLike) -> dict[str, Any]:
    """The arrays of a safetensors file written by :func:`arrays_at`; raises ``CacheCorruption``
    if the file cannot be parsed, has no content hash, or its tensors do not match the hash."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            expected = (handle.metadata() or {}).get("sha256")
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:
        raise CacheCorruption(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if expected is None:
        raise CacheCorruption(f"{path}: no content hash in its metadata")
    if arrays_digest(arrays) != expected:
        raise CacheCorruption(f"{path}: content does not match its hash (altered)")
    return arrays


def arrays_at(path: Path, compute: Callable[[], dict[str, Any]], use_cache: bool = True) -> dict[str, Any]:
    """Arrays stored at ``path`` (safetensors with a content hash), computing and storing them
    (atomically) when missing; a truncated or altered file is reported, deleted and recomputed,
    never trusted. ``compute`` returns name -> numpy array. With ``use_cache=False`` nothing is
    read or written."""
    if use_cache and Path(path).exists():
        try:
            return load_verified_arrays(path)
        except CacheCorruption as exc:
            logger.warning("damaged cache file, recomputing: %s", exc)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    arrays = compute()
    if use_cache:
        write_arrays(path, arrays)
    return arrays


def write_arrays(path: PathLike, arrays: dict[str, Any]) -> None:
    """Store name -> numpy array at ``path`` (safetensors with their content hash), atomically."""
    from safetensors.numpy import save

    atomic_write_bytes(path, save(arrays, metadata={"sha256": arrays_digest(arrays)}))


def cached_arrays(namespace: str, key: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Arrays for ``key`` from ``<cache>/<namespace>/<hash>.safetensors`` (see :func:`arrays_at`)."""
    return arrays_at(cache_root() / namespace / f"{stable_hash(key)}.safetensors", compute)


class CacheCorruption(RuntimeError):
    """A cached artifact does not match its content hash (truncated, altered or unreadable)."""


def write_manifest(directory: PathLike) -> dict[str, Any]:
    """Write ``MANIFEST.json`` into ``directory``: size and SHA-256 of every other file in it
    (recursively). Call it last, once the directory's content is final."""
    directory = Path(directory)
    files = {
        path.relative_to(directory).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = {"files": files}
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    return manifest


# directories verified by this process: path -> (file name, size, mtime) signature, so a model
# loaded by several jobs of one run is hashed once
_VERIFIED: dict[str, Any] = {}


def verify_manifest(directory: PathLike) -> list[str]:
    """Problems of ``directory`` against its ``MANIFEST.json`` (empty list = intact): a missing
    manifest, a missing, extra-truncated or altered file, each named."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except FileNotFoundError:
        return [f"{manifest_path} is missing"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{manifest_path} is unreadable ({type(exc).__name__})"]
    signature = [(name, *_stat(directory / name)) for name in sorted(files)]
    if _VERIFIED.get(str(directory)) == signature:
        return []
    problems = []
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, expected {expected['size']} (truncated?)")
        elif file_sha256(path) != expected["sha256"]:
            problems.append(f"{name} does not match its SHA-256 (altered)")
    if not problems:
        _VERIFIED[str(directory)] = signature
    return problems


def _stat(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    except FileNotFoundError:
        return -1, -1


def remove_stale_temporaries(directory: PathLike, name: str = "", max_age_s: float = STALE_TEMP_AGE_S) -> int:
    """Delete ``.<name>*.tmp`` files and directories in ``directory`` older than ``max_age_s``:
    what a killed writer leaves behind (:func:`atomic_write_bytes`, :func:`atomic_directory`).
    Younger ones are left alone: a concurrent process may still be writing them."""
    directory = Path(directory)
    removed = 0
    now = time.time()
    for path in directory.glob(f".{name}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if now - path.stat().st_mtime < max_age_s:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            removed += 1
    return removed
