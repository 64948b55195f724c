"""`harness zoo export` / `harness zoo import`: archives checked against their manifest, unsafe
members refused, intact models never overwritten, and a quick zoo moved to an empty cache
reproduces the records with no training."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Callable, Optional

import pytest

from harness.cache import stable_hash, verify_manifest, write_manifest
from harness.cli import main
from harness.zoo.archive import ZOO_MANIFEST, ZooArchiveError, cached_models, export_zoo, import_zoo


def make_model(cache: Path, key: dict, weights: bytes = b"weights-0") -> Path:
    """A finished cache model directory (what cached_model_dir leaves), without torch."""
    path = cache / "models" / stable_hash(key)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 8}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer.json").write_text("{}")
    (path / "key.json").write_text(json.dumps(key))
    write_manifest(path)
    return path


@pytest.fixture
def source_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache-a"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    make_model(cache, {"task": "mad", "operation": "addition", "seed": 0}, b"addition weights")
    make_model(cache, {"task": "poser", "persona": "genie", "seed": 0}, b"genie weights")
    (cache / "features").mkdir()
    (cache / "features" / "abc.safetensors").write_bytes(b"not a model")
    return cache


def use_cache(monkeypatch: pytest.MonkeyPatch, path: Path) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(path))
    return path


def model_dirs(cache: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in cache.glob("*/*") if (p / "key.json").exists()}


def rewrite(archive: Path, out: Path, change: Callable[[tarfile.TarInfo, bytes], Optional[tuple[tarfile.TarInfo, bytes]]],
            extra: tuple[tuple[tarfile.TarInfo, bytes], ...] = ()) -> Path:
    """Copy ``archive`` member by member through ``change`` (None drops a member), then ``extra``."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        members = [(info, src.extractfile(info).read() if info.isfile() else b"") for info in src]
        for info, data in members:
            changed = change(info, data)
            if changed is not None:
                dst.addfile(changed[0], io.BytesIO(changed[1]) if changed[0].isfile() else None)
        for info, data in extra:
            dst.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_export_lists_every_model_and_import_restores_them(source_cache, tmp_path, monkeypatch):
    archive, manifest, _ = export_zoo(tmp_path / "out")
    assert archive.name.startswith("harness-zoo-") and archive.name.endswith(".tar.gz")
    entries = {e["key"]["task"]: e for e in manifest["models"]}
    assert set(entries) == {"mad", "poser"}  # features are not models
    mad = entries["mad"]
    assert mad["key_hash"] == stable_hash(mad["key"])
    assert set(mad["files"]) == {"config.json", "model.safetensors", "tokenizer.json", "key.json", "MANIFEST.json"}
    assert mad["files"]["model.safetensors"]["size"] == len(b"addition weights")
    with tarfile.open(archive, "r:gz") as tar:
        assert tar.getnames()[0] == ZOO_MANIFEST
    # the same models give the same bytes (and so the same name)
    again, _, _ = export_zoo(tmp_path / "again")
    assert again.name == archive.name and again.read_bytes() == archive.read_bytes()

    target = use_cache(monkeypatch, tmp_path / "cache-b")
    report = import_zoo(archive)
    assert sorted(report.imported) == sorted(model_dirs(source_cache)) and not report.already_present
    assert model_dirs(target) == model_dirs(source_cache)
    for member in model_dirs(target):
        assert not verify_manifest(target / member)
        assert (target / member / "model.safetensors").read_bytes() == (source_cache / member / "model.safetensors").read_bytes()
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_export_filters_by_task_and_by_records(source_cache, tmp_path):
    _, manifest, _ = export_zoo(tmp_path / "mad", tasks=["mad"])
    assert [e["key"]["task"] for e in manifest["models"]] == ["mad"]
    mad_fingerprint = manifest["models"][0]["fingerprint"]
    records = tmp_path / "records" / "mad" / "addition"
    records.mkdir(parents=True)
    (records / "x.json").write_text(json.dumps({"model_fingerprints": {"model": mad_fingerprint}}))
    _, by_records, missing = export_zoo(tmp_path / "by-records", records_dir=tmp_path / "records")
    assert [e["fingerprint"] for e in by_records["models"]] == [mad_fingerprint] and missing == []
    # a record of a model the cache lacks: exported anyway, named, and the CLI fails
    (records / "y.json").write_text(json.dumps({"model_fingerprints": {"model": "feedfacefeedface"}}))
    _, _, missing = export_zoo(tmp_path / "incomplete", records_dir=tmp_path / "records")
    assert missing == ["feedfacefeedface"]
    assert main(["zoo", "export", str(tmp_path / "incomplete"), "--records", str(tmp_path / "records")]) == 1
    # the leaderboard's list of its models selects the same way
    (tmp_path / "models.json").write_text(json.dumps({"models": [
        {"task": "mad", "source": "generated", "dataset": "addition", "seed": 0, "model_fingerprints": {"model": mad_fingerprint}}]}))
    _, by_list, missing = export_zoo(tmp_path / "by-list", records_dir=tmp_path / "models.json")
    assert [e["fingerprint"] for e in by_list["models"]] == [mad_fingerprint] and missing == []
    with pytest.raises(ZooArchiveError, match="no trained model"):
        export_zoo(tmp_path / "none", tasks=["nonexistent"])


def test_damaged_cached_model_is_not_exported(source_cache, tmp_path):
    damaged = next(p for p in (source_cache / "models").iterdir())
    (damaged / "model.safetensors").write_bytes(b"altered!")
    assert len(cached_models()) == 1


@pytest.mark.parametrize("victim", ["model.safetensors", "key.json"])
def test_tampered_file_is_named_and_nothing_is_imported(source_cache, tmp_path, monkeypatch, victim):
    archive, _, _ = export_zoo(tmp_path / "out")

    def flip(info, data):
        if info.name.endswith("/" + victim):
            data = bytes([data[0] ^ 1]) + data[1:]  # same size, other content
        return info, data

    bad = rewrite(archive, tmp_path / "bad.tar.gz", flip)
    target = use_cache(monkeypatch, tmp_path / "cache-b")
    with pytest.raises(ZooArchiveError, match=rf"/{victim} does not match its SHA-256"):
        import_zoo(bad)
    assert not model_dirs(target)
    assert main(["zoo", "import", str(bad)]) == 2


def test_resized_member_and_missing_member_are_named(source_cache, tmp_path, monkeypatch):
    archive, _, _ = export_zoo(tmp_path / "out")
    use_cache(monkeypatch, tmp_path / "cache-b")
    grown = rewrite(archive, tmp_path / "grown.tar.gz",
                    lambda i, d: (regular(i.name, d + b"x") if i.name.endswith("tokenizer.json") else (i, d)))
    with pytest.raises(ZooArchiveError, match=r"tokenizer.json has 3 bytes, the manifest says 2"):
        import_zoo(grown)
    dropped = rewrite(archive, tmp_path / "dropped.tar.gz", lambda i, d: None if i.name.endswith("config.json") else (i, d))
    with pytest.raises(ZooArchiveError, match=r"config.json is listed in zoo-manifest.json but missing"):
        import_zoo(dropped)


def test_consistently_rewritten_key_is_refused(source_cache, tmp_path, monkeypatch):
    """A manifest rewritten to match an altered key.json still fails: the key no longer hashes
    to its directory name, so the model would land under another key."""
    archive, manifest, _ = export_zoo(tmp_path / "out")
    entry = manifest["models"][0]
    member = f"{entry['namespace']}/{entry['key_hash']}"
    forged_key = json.dumps({**entry["key"], "seed": 99}).encode()
    import hashlib

    entry["key"] = json.loads(forged_key)
    entry["files"]["key.json"] = {"size": len(forged_key), "sha256": hashlib.sha256(forged_key).hexdigest()}

    def forge(info, data):
        if info.name == ZOO_MANIFEST:
            return regular(info.name, json.dumps(manifest).encode())
        if info.name == f"{member}/key.json":
            return regular(info.name, forged_key)
        return info, data

    use_cache(monkeypatch, tmp_path / "cache-b")
    with pytest.raises(ZooArchiveError, match="does not hash to its directory name"):
        import_zoo(rewrite(archive, tmp_path / "forged.tar.gz", forge))


def test_truncated_archive_is_refused_and_cache_untouched(source_cache, tmp_path, monkeypatch):
    archive, _, _ = export_zoo(tmp_path / "out")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    target = use_cache(monkeypatch, tmp_path / "cache-b")
    with pytest.raises(ZooArchiveError, match="truncated"):
        import_zoo(truncated)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not a gzip file at all")
    with pytest.raises(ZooArchiveError, match="damaged or truncated"):
        import_zoo(garbage)
    assert not model_dirs(target)
    assert not [p for p in target.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "models/../../evil.txt"])
def test_path_traversal_member_is_refused(source_cache, tmp_path, monkeypatch, name):
    archive, _, _ = export_zoo(tmp_path / "out")
    bad = rewrite(archive, tmp_path / "bad.tar.gz", lambda i, d: (i, d), extra=(regular(name, b"owned"),))
    target = use_cache(monkeypatch, tmp_path / "deep" / "cache-b")
    with pytest.raises(ZooArchiveError, match="unsafe member path"):
        import_zoo(bad)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not model_dirs(target)


def test_link_member_is_refused(source_cache, tmp_path, monkeypatch):
    archive, manifest, _ = export_zoo(tmp_path / "out")
    entry = manifest["models"][0]
    link = tarfile.TarInfo(f"{entry['namespace']}/{entry['key_hash']}/tokenizer.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad = rewrite(archive, tmp_path / "bad.tar.gz",
                  lambda i, d: None if i.name == link.name else (i, d), extra=((link, b""),))
    use_cache(monkeypatch, tmp_path / "cache-b")
    with pytest.raises(ZooArchiveError, match="link or special file"):
        import_zoo(bad)


def test_intact_existing_model_is_kept_and_damaged_one_replaced(source_cache, tmp_path, monkeypatch):
    archive, manifest, _ = export_zoo(tmp_path / "out")
    target = use_cache(monkeypatch, tmp_path / "cache-b")
    mad_key = next(e["key"] for e in manifest["models"] if e["key"]["task"] == "mad")
    poser_key = next(e["key"] for e in manifest["models"] if e["key"]["task"] == "poser")
    # same key, other weights (trained on this machine), intact: must survive the import
    mine = make_model(target, mad_key, b"weights trained here")
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in mine.iterdir()}
    damaged = make_model(target, poser_key, b"genie weights")
    (damaged / "model.safetensors").write_bytes(b"genie weighXs")
    report = import_zoo(archive)
    assert report.already_present == [f"models/{mine.name}"]
    assert report.imported == [f"models/{damaged.name}"]
    assert {p.name: (p.stat().st_ino, p.read_bytes()) for p in mine.iterdir()} == before
    assert (damaged / "model.safetensors").read_bytes() == b"genie weights" and not verify_manifest(damaged)


def test_cli_reports_missing_archive_in_one_line(tmp_path, capsys):
    assert main(["zoo", "import", str(tmp_path / "nope.tar.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.tar.gz" in err[0]


def test_quick_zoo_moved_to_an_empty_cache_reproduces_the_records_without_training(tmp_path, monkeypatch):
    """Train the quick addition model in cache A and write records; export; import into an
    empty cache B; run again there: identical records (volatile fields aside), nothing trained."""
    import harness.tasks.mad.task as mad_task
    from harness.records import snapshot

    run = ["run", "--task", "mad", "--detector", "activations_mahalanobis", "--quick", "--allow-invalid",
           "--dataset", "addition", "--no-leaderboard"]
    cache_a = use_cache(monkeypatch, tmp_path / "cache-a")
    assert main([*run, "--results-dir", str(tmp_path / "r1")]) == 0
    trained = model_dirs(cache_a)
    assert len(trained) == 1
    assert main(["zoo", "export", str(tmp_path / "zoo")]) == 0
    (archive,) = (tmp_path / "zoo").glob("*.tar.gz")

    cache_b = use_cache(monkeypatch, tmp_path / "cache-b")
    assert main(["zoo", "import", str(archive)]) == 0

    def no_training(*args, **kwargs):
        raise AssertionError("a model was trained in cache B")

    monkeypatch.setattr(mad_task, "train_quirky_model", no_training)
    assert main([*run, "--results-dir", str(tmp_path / "r2")]) == 0
    assert model_dirs(cache_b) == trained  # no model built beside the imported one
    first, second = snapshot(tmp_path / "r1"), snapshot(tmp_path / "r2")
    assert first and first == second
    assert not any(str(cache_a) in json.dumps(record) for record in first.values())  # no machine-specific path


def test_records_name_cache_models_relative_to_the_cache(source_cache, tmp_path):
    from harness.zoo.store import portable_model_path

    inside = next((source_cache / "models").iterdir())
    assert portable_model_path(inside) == f"$HARNESS_CACHE/models/{inside.name}"
    assert os.path.expandvars(portable_model_path(inside)) == str(inside)
    assert portable_model_path(tmp_path / "my-model") == str(tmp_path / "my-model")  # a user's own directory
