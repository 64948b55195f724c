import json
import os

import pytest

from harness.cache import atomic_directory, atomic_write_bytes, atomic_write_json, cache_root, stable_hash


def test_stable_hash_ignores_dict_order_and_sees_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp files left


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_bytes(path, b"old")

    def exploding_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", exploding_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new content")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_directory_appears_only_on_success(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "weights").write_text("partial")
            raise RuntimeError("crash while training")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(final) as tmp:
        (tmp / "weights").write_text("done")
    assert (final / "weights").read_text() == "done"
