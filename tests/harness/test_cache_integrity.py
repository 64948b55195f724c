"""Cache integrity: a truncated or altered artifact is detected, reported and rebuilt; no pickle."""

from __future__ import annotations

import ast
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cache import (
    MANIFEST_NAME,
    CacheCorruption,
    arrays_at,
    load_verified_arrays,
    remove_stale_temporaries,
    verify_manifest,
    write_manifest,
)
from harness.zoo.store import cached_model_dir, is_cached, model_cache_path

ROOT = Path(__file__).resolve().parents[2]


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"x": np.arange(1000, dtype=np.float32).reshape(10, 100), "y": np.ones(3, dtype=np.int64)}


def flip_a_byte(path: Path, offset_from_end: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "alter", "garbage", "no hash"])
def test_damaged_array_file_is_reported_and_recomputed(tmp_path: Path, caplog, damage: str) -> None:
    path, compute = tmp_path / "a.safetensors", Counter()
    first = arrays_at(path, compute)
    assert compute.calls == 1 and load_verified_arrays(path).keys() == first.keys()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "alter":  # same size, one tensor byte changed: only the hash can tell
        flip_a_byte(path)
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:  # written by an older harness, without a content hash
        from safetensors.numpy import save_file

        save_file(compute(), str(path))
        compute.calls -= 1
    with pytest.raises(CacheCorruption):
        load_verified_arrays(path)
    with caplog.at_level(logging.WARNING):
        again = arrays_at(path, compute)
    assert compute.calls == 2, "the damaged file must be recomputed"
    assert "damaged cache file" in caplog.text
    np.testing.assert_array_equal(again["x"], first["x"])
    assert load_verified_arrays(path)["y"].tolist() == [1, 1, 1]  # and stored intact again


def build_model(tmp: Path) -> None:
    (tmp / "config.json").write_text('{"model_type": "llama"}')
    (tmp / "model.safetensors").write_bytes(os.urandom(4096))


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_damaged_model_directory_is_reported_deleted_and_rebuilt(tmp_path: Path, caplog, damage: str) -> None:
    key = {"test": "integrity", "damage": damage, "at": str(tmp_path)}
    builds = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        build_model(tmp)

    path = cached_model_dir(key, build)
    assert (path / MANIFEST_NAME).exists() and verify_manifest(path) == []
    weights = path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "alter":
        flip_a_byte(weights)
    else:
        weights.unlink()
    assert verify_manifest(path)
    with caplog.at_level(logging.WARNING):
        assert not is_cached(key)
    assert "is damaged" in caplog.text and not path.exists()
    assert cached_model_dir(key, build) == path and len(builds) == 2
    assert verify_manifest(path) == []


def test_model_directory_from_an_older_harness_is_adopted(tmp_path: Path) -> None:
    key = {"test": "legacy", "at": str(tmp_path)}
    path = model_cache_path(key)
    path.mkdir(parents=True)
    build_model(path)
    (path / "key.json").write_text("{}")  # a finished build of a harness without manifests
    assert is_cached(key) and verify_manifest(path) == []


def test_manifest_names_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"abc" * 100)
    (tmp_path / "c.json").write_text("{}")
    write_manifest(tmp_path)
    (tmp_path / "sub" / "w.bin").write_bytes(b"abd" * 100)
    assert verify_manifest(tmp_path) == ["sub/w.bin does not match its SHA-256 (altered)"]


def test_stale_temporaries_of_killed_writers_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    old_file, old_dir, fresh = tmp_path / ".m.x1.tmp", tmp_path / ".m.x2.tmp", tmp_path / ".m.x3.tmp"
    old_file.write_text("partial")
    old_dir.mkdir()
    fresh.write_text("being written")
    long_ago = time.time() - 7 * 3600
    for path in (old_file, old_dir):
        os.utime(path, (long_ago, long_ago))
    assert remove_stale_temporaries(tmp_path, "m") == 2
    assert not old_file.exists() and not old_dir.exists() and fresh.exists()


def test_nothing_is_unpickled() -> None:
    """No module of the harness or its built-in plugins imports pickle, joblib or dill, or calls
    torch.load or numpy.load: cached artifacts are safetensors and JSON only."""
    banned_modules = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}
    offenders = []
    for package in ("harness", "detectors", "tasks"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                if banned_modules & set(names):
                    offenders.append(f"{path}: imports {names}")
                if isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name) \
                        and node.value.id in ("torch", "np", "numpy"):
                    offenders.append(f"{path}:{node.lineno}: {node.value.id}.load")
    assert offenders == []
