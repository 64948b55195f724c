"""Moving trained models between machines: ``harness zoo export`` and ``harness zoo import``.

Training the same recipe on another machine does not always give the same weights (see
"Reproducing the leaderboard's models" in the README), so the models a leaderboard was
computed on travel as an archive instead: one ``.tar.gz`` holding every model directory of
the cache (``<namespace>/<key hash>/...``: weights, tokenizer, ``key.json``,
``MANIFEST.json``) and, first, ``zoo-manifest.json``, which lists for every model its cache
key, key hash, fingerprint (:func:`harness.zoo.store.model_fingerprint`) and the size and
SHA-256 of each of its files.

Import trusts nothing it has not checked: every tar member must be a plain file or directory
of a model the manifest lists (no links, no absolute paths, no ``..``); every file is
unpacked into a staging directory and checked against the manifest's size and SHA-256, every
key against its hash and every model against its fingerprint, all before the first model is
moved into the cache. Each model is then renamed into place on its own
(:func:`harness.cache.atomic_directory`); an intact model already in the cache is never
overwritten. The manifest is not signed: it proves an archive is complete and unaltered since
it was written, not who wrote it.

Archives are byte-for-byte reproducible (sorted members, zero times and owners), so the same
models always give the same archive and the same file name.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from harness.cache import (
    MANIFEST_NAME,
    PathLike,
    atomic_directory,
    cache_root,
    file_sha256,
    stable_hash,
    verify_manifest,
)
from harness.interfaces import ConfigError

logger = logging.getLogger(__name__)

ZOO_MANIFEST = "zoo-manifest.json"
ARCHIVE_FORMAT = 1
KEY_NAME = "key.json"
_CHUNK = 1 << 20


class ZooArchiveError(ConfigError):
    """An archive that cannot be imported (damaged, tampered, truncated or unsafe), or an
    export that cannot be written; the message names the file."""


@dataclass
class CachedModel:
    """A finished model directory of the cache: ``<cache>/<namespace>/<key_hash>/``."""

    namespace: str
    key_hash: str
    key: dict[str, Any]
    path: Path

    @property
    def member(self) -> str:
        """Its directory inside an archive (and under the cache root)."""
        return f"{self.namespace}/{self.key_hash}"


@dataclass
class ImportReport:
    """What :func:`import_zoo` did, model by model (``namespace/key_hash``)."""

    imported: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)


# -- the cache's models -------------------------------------------------------------------

def cached_models(root: Optional[Path] = None) -> list[CachedModel]:
    """Every finished, intact model directory under the cache root, sorted by namespace and key
    hash. A namespace is any top-level cache directory whose subdirectories hold ``key.json``
    (today ``models/``, shared by the MAD and POSER zoos). Unfinished builds (no ``key.json``),
    temporaries and damaged models (reported with a warning) are left out."""
    root = Path(root) if root is not None else cache_root()
    found = []
    for namespace_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in namespace_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (path / KEY_NAME).is_file():
                continue
            try:
                key = json.loads((path / KEY_NAME).read_text())
            except (OSError, ValueError) as exc:
                logger.warning("cached model %s: unreadable key.json (%s); left out", path, exc)
                continue
            problems = verify_manifest(path)
            if problems:
                logger.warning("cached model %s is damaged (%s); left out", path, "; ".join(problems))
                continue
            found.append(CachedModel(namespace_dir.name, path.name, key, path))
    return found


def fingerprints_in_records(records_dir: PathLike) -> tuple[set[str], set[str]]:
    """``(strings, named)`` of the JSON records under ``records_dir`` (or of a
    ``leaderboard/models.json`` file: both are its fingerprints). ``strings``: every string
    anywhere in them, a superset of the model fingerprints they were computed on whatever the
    record layout, to be intersected with the cache's fingerprints. ``named``: the fingerprints
    the records name explicitly (``model_fingerprints``, or ``config.episode.model_fingerprint``
    in older records), which an export of their models must contain."""
    records_dir = Path(records_dir)
    if records_dir.is_file():  # leaderboard/models.json: the models the leaderboard was computed on
        from harness.zoo.reference import load_reference

        named = {fp for entry in load_reference(records_dir) for fp in entry["model_fingerprints"].values()}
        return set(named), named
    if not records_dir.is_dir():
        raise ZooArchiveError(f"{str(records_dir)!r} does not exist (expected a records directory or a models.json file)")
    strings: set[str] = set()
    named: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            strings.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in sorted(records_dir.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            logger.warning("record %s is unreadable; ignored", path)
            continue
        walk(record)
        if isinstance(record, dict):
            named.update(v for v in (record.get("model_fingerprints") or {}).values() if isinstance(v, str))
    return strings, named


def select_models(
    models: Sequence[CachedModel], tasks: Optional[Sequence[str]] = None, fingerprints: Optional[set[str]] = None
) -> list[tuple[CachedModel, str]]:
    """``(model, fingerprint)`` of the models whose key names one of ``tasks`` (key ``"task"``)
    and, when ``fingerprints`` is given, whose fingerprint is in it."""
    from harness.zoo.store import model_fingerprint

    chosen = []
    for model in models:
        if tasks and model.key.get("task") not in tasks:
            continue
        fingerprint = model_fingerprint(model.path)
        if fingerprints is not None and fingerprint not in fingerprints:
            continue
        chosen.append((model, fingerprint))
    return chosen


# -- export ---------------------------------------------------------------------------------

def zoo_manifest(selected: Sequence[tuple[CachedModel, str]]) -> dict[str, Any]:
    """The manifest of an archive of ``selected`` models: key, key hash, fingerprint, files."""
    entries = []
    for model, fingerprint in selected:
        files = {
            path.relative_to(model.path).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(model.path.rglob("*"))
            if path.is_file()
        }
        entries.append({
            "namespace": model.namespace,
            "key_hash": model.key_hash,
            "key": model.key,
            "fingerprint": fingerprint,
            "files": files,
        })
    return {"format": ARCHIVE_FORMAT, "models": entries}


def export_zoo(
    out: PathLike, tasks: Optional[Sequence[str]] = None, records_dir: Optional[PathLike] = None
) -> tuple[Path, dict[str, Any], list[str]]:
    """Write the cache's trained models into one archive; return ``(archive path, manifest,
    missing)``, ``missing`` being the fingerprints the records name that the cache lacks (an
    archive that cannot reproduce all of ``records_dir``; empty without ``records_dir``).

    ``out``: a directory (the archive is written into it as ``harness-zoo-<hash>.tar.gz``, the
    hash naming its content) or a file name ending in ``.tar.gz``. ``tasks``: only models whose
    key names one of these tasks. ``records_dir``: only models whose fingerprint appears in the
    records there (e.g. ``leaderboard/records``), or in a ``leaderboard/models.json`` file
    (exactly the models the leaderboard was computed on). Raises
    :class:`ZooArchiveError` when no model is selected.
    """
    fingerprints, named = fingerprints_in_records(records_dir) if records_dir is not None else (None, set())
    selected = select_models(cached_models(), tasks, fingerprints)
    missing = sorted(named - {fingerprint for _, fingerprint in selected})
    if not selected:
        what = [f"task {', '.join(tasks)}" if tasks else "", f"records in {records_dir}" if records_dir else ""]
        narrowed = " and ".join(w for w in what if w)
        raise ZooArchiveError(
            f"no trained model in the cache {str(cache_root())!r}" + (f" matching {narrowed}" if narrowed else "")
            + "; train them first with `harness run`"
        )
    manifest = zoo_manifest(selected)
    manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    out = Path(out)
    if out.name.endswith(".tar.gz"):
        target = out
    else:
        target = out / f"harness-zoo-{hashlib.sha256(manifest_bytes).hexdigest()[:12]}.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, ZOO_MANIFEST, manifest_bytes)
            for model, _ in selected:
                _add_directory(tar, model.member)
                for name in sorted(manifest_files(manifest, model.member)):
                    with open(model.path / name, "rb") as handle:
                        _add_file(tar, f"{model.member}/{name}", handle, (model.path / name).stat().st_size)
        os.chmod(tmp, 0o644)  # a published artifact, not a private temporary
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target, manifest, missing


def manifest_files(manifest: dict[str, Any], member: str) -> dict[str, dict[str, Any]]:
    """The files (relative name -> size, sha256) of the model stored under ``member``."""
    for entry in manifest["models"]:
        if f"{entry['namespace']}/{entry['key_hash']}" == member:
            return entry["files"]
    raise KeyError(member)


def _tarinfo(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tarinfo(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, handle: Any, size: int) -> None:
    tar.addfile(_tarinfo(name, tarfile.REGTYPE, size), handle)


def _add_directory(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_tarinfo(name, tarfile.DIRTYPE))


# -- import ---------------------------------------------------------------------------------

def import_zoo(archive: PathLike) -> ImportReport:
    """Unpack ``archive`` (written by :func:`export_zoo`) into the current cache.

    Everything is verified before any model is moved into place: a damaged, truncated or
    tampered archive, or an unsafe member (a link, an absolute path, ``..``), raises
    :class:`ZooArchiveError` naming the file and leaves the cache as it was. Models whose
    intact copy is already in the cache are left alone (reported as already present); a
    damaged copy is replaced.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise ZooArchiveError(f"zoo archive {str(archive)!r} does not exist")
    root = cache_root()
    staging = Path(tempfile.mkdtemp(prefix=".zoo-import.", suffix=".tmp", dir=root))
    try:
        manifest = _unpack_verified(archive, staging)
        report = ImportReport()
        for entry in manifest["models"]:
            member = f"{entry['namespace']}/{entry['key_hash']}"
            final = root / entry["namespace"] / entry["key_hash"]
            if _intact(final):
                report.already_present.append(member)
                continue
            if final.exists():
                logger.warning("cached model %s is damaged; replacing it with the archive's copy", final)
                shutil.rmtree(final, ignore_errors=True)
            with atomic_directory(final) as tmp:
                for name in entry["files"]:
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / member / name, tmp / name)
            if _intact(final):
                report.imported.append(member)
            else:  # a concurrent process put a damaged copy there first: never leave it silently
                raise ZooArchiveError(f"{final}: the model in the cache is damaged after the import; delete it and retry")
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _intact(path: Path) -> bool:
    return path.is_dir() and (path / KEY_NAME).is_file() and not verify_manifest(path)


def _unpack_verified(archive: Path, staging: Path) -> dict[str, Any]:
    """Unpack ``archive`` into ``staging`` and check it completely; return its manifest."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = _iter_members(tar, archive)
            first = next(members, None)
            if first is None or first.name != ZOO_MANIFEST:
                raise ZooArchiveError(f"{archive}: no {ZOO_MANIFEST} at the start; not a zoo archive written by `harness zoo export`")
            manifest = _read_manifest(tar, first, archive)
            expected = {
                f"{entry['namespace']}/{entry['key_hash']}/{name}": meta
                for entry in manifest["models"]
                for name, meta in entry["files"].items()
            }
            directories = {f"{entry['namespace']}/{entry['key_hash']}" for entry in manifest["models"]}
            seen: set[str] = set()
            for info in members:
                name = info.name
                if info.isdir():
                    if not any(d == name or d.startswith(name + "/") for d in directories):
                        raise ZooArchiveError(f"{archive}: member {name!r} is not a model the manifest lists")
                    continue
                if name not in expected:
                    raise ZooArchiveError(f"{archive}: member {name!r} is not listed in {ZOO_MANIFEST}")
                if name in seen:
                    raise ZooArchiveError(f"{archive}: member {name!r} appears twice")
                seen.add(name)
                _extract_checked(tar, info, staging / name, expected[name], archive)
    except ZooArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
        raise ZooArchiveError(f"{archive}: damaged or truncated archive ({type(exc).__name__}: {exc})") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise ZooArchiveError(f"{archive}: {missing[0]} is listed in {ZOO_MANIFEST} but missing from the archive"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    _check_models(manifest, staging, archive)
    return manifest


def zlib_error() -> type:
    import zlib

    return zlib.error


def _iter_members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar`` in order, refusing anything that is not a plain file or directory
    with a safe relative name."""
    for info in tar:
        name = info.name
        normal = posixpath.normpath(name)
        if (not name or name.startswith(("/", "\\")) or normal != name.rstrip("/") or normal == ".."
                or normal.startswith("../") or "\\" in name or ":" in name.split("/")[0]):
            raise ZooArchiveError(f"{archive}: unsafe member path {name!r} (absolute or outside the archive); refusing it")
        if not (info.isfile() or info.isdir()):
            raise ZooArchiveError(f"{archive}: member {name!r} is a link or special file; refusing it")
        info.name = normal
        yield info


def _read_manifest(tar: tarfile.TarFile, info: tarfile.TarInfo, archive: Path) -> dict[str, Any]:
    handle = tar.extractfile(info)
    try:
        manifest = json.loads(handle.read() if handle else b"")
        models = manifest["models"]
        if manifest.get("format") != ARCHIVE_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, this harness reads format {ARCHIVE_FORMAT}")
        for entry in models:
            for field_name in ("namespace", "key_hash", "key", "fingerprint", "files"):
                if field_name not in entry:
                    raise ValueError(f"a model entry has no {field_name!r}")
            for part in (entry["namespace"], entry["key_hash"]):
                if not isinstance(part, str) or not part or part.startswith(".") or "/" in part or "\\" in part:
                    raise ValueError(f"bad model directory name {part!r}")
            for name in entry["files"]:
                normal = posixpath.normpath(name)
                if normal != name or name.startswith("/") or normal == ".." or normal.startswith("../"):
                    raise ValueError(f"unsafe file name {name!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ZooArchiveError(f"{archive}: {ZOO_MANIFEST} is invalid ({exc})") from None
    return manifest


def _extract_checked(tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path, expected: dict[str, Any],
                     archive: Path) -> None:
    """Copy one member to ``target``, checking its size and SHA-256 against the manifest."""
    if info.size != expected["size"]:
        raise ZooArchiveError(f"{archive}: {info.name} has {info.size} bytes, the manifest says {expected['size']} (altered)")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    source = tar.extractfile(info)
    assert source is not None  # a regular file
    with open(target, "wb") as out:
        while block := source.read(_CHUNK):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != expected["sha256"]:
        raise ZooArchiveError(f"{archive}: {info.name} does not match its SHA-256 in {ZOO_MANIFEST} (altered)")


def _check_models(manifest: dict[str, Any], staging: Path, archive: Path) -> None:
    """Each staged model: its key hashes to its directory name, its own MANIFEST.json agrees
    with its files, and its fingerprint is the manifest's."""
    from harness.zoo.store import model_fingerprint

    for entry in manifest["models"]:
        member = f"{entry['namespace']}/{entry['key_hash']}"
        path = staging / member
        try:
            key = json.loads((path / KEY_NAME).read_text())
        except (OSError, ValueError):
            raise ZooArchiveError(f"{archive}: {member}/{KEY_NAME} is missing or unreadable") from None
        if key != entry["key"] or stable_hash(key) != entry["key_hash"]:
            raise ZooArchiveError(f"{archive}: {member}/{KEY_NAME} does not hash to its directory name (tampered key)")
        problems = verify_manifest(path)
        if problems:
            raise ZooArchiveError(f"{archive}: {member}: {problems[0]} (against its {MANIFEST_NAME})")
        try:
            fingerprint = model_fingerprint(path, memo=False)
        except ConfigError as exc:
            raise ZooArchiveError(f"{archive}: {member} is not a model directory ({exc})") from None
        if fingerprint != entry["fingerprint"]:
            raise ZooArchiveError(f"{archive}: {member} has fingerprint {fingerprint}, the manifest says {entry['fingerprint']}")


def model_label(key: dict[str, Any]) -> str:
    """What a model is, from its cache key (task, operation, dataset or persona, labels, seed); ``-``
    if unknown."""
    return " ".join(str(key[k]) for k in ("task", "operation", "dataset", "persona", "labels", "seed")
                    if k in key) or "-"


def read_manifest(archive: PathLike) -> dict[str, Any]:
    """The ``zoo-manifest.json`` of ``archive``, checked; only that first member is read."""
    archive = Path(archive)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            first = next(_iter_members(tar, archive), None)
            if first is None or first.name != ZOO_MANIFEST:
                raise ZooArchiveError(f"{archive}: no {ZOO_MANIFEST} at the start; not a zoo archive written by `harness zoo export`")
            return _read_manifest(tar, first, archive)
    except ZooArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
        raise ZooArchiveError(f"{archive}: damaged or unreadable archive ({type(exc).__name__}: {exc})") from None


def describe(manifest: dict[str, Any]) -> Iterable[str]:
    """One line per model of a manifest: namespace/key hash, what it is, fingerprint, size."""
    for entry in manifest["models"]:
        size = sum(meta["size"] for meta in entry["files"].values())
        yield (f"{entry['namespace']}/{entry['key_hash']}  {model_label(entry['key'])}  model {entry['fingerprint']}  "
               f"{size / 1e6:.1f} MB")
