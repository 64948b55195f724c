"""Real inputs for the ``mad`` task: a Hugging Face model plus a quirky dataset on disk.

``--option model=DIR_OR_HUB_ID --option dataset=PATH [--option template=FORMAT]`` scores the
model on the dataset instead of training the built-in tiny models. The dataset holds records
in the published quirky format (``docs/mad.md``): ``id, template_args{op1, op2, result,
character}, character ("Alice"/"Bob"), label, alice_label, bob_label, difficulty,
difficulty_quantile`` and a ``statement`` (the prompt; or give ``template``, a format string
over ``template_args`` such as ``"{op1} + {op2} = {result}. {character}:"``). An optional
``choices`` field (the same two answer words on every record, negative first) sets the answer
tokens; default ``(" False", " True")``.

Formats: a ``datasets.save_to_disk`` directory (read with ``datasets.load_from_disk``, only if
the ``datasets`` package is installed; a DatasetDict's splits are concatenated in order), a
JSONL file (``.jsonl``, ``.ndjson``, or ``.json`` holding JSON lines or one JSON array), or a
parquet file (``pandas.read_parquet``, which needs ``pyarrow`` or ``fastparquet``).

The split is the built-in one: trusted = Alice records with difficulty_quantile < 0.25, test =
records with difficulty_quantile > 0.75 (Alice normal, Bob anomalous), names as given in the
records, in file order; the episode is then built by the same
:func:`harness.tasks.mad.episode.build_episode` as the generated source, with the same validity gate.
Records of this source are labelled ``model <model dir or hub id> on <dataset file>``, so the
leaderboard never mixes them with the generated zoo's.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from harness.api import ConfigError, Episode, RunContext, Task
from harness.zoo.store import ModelDirectoryError, ModelHandle
from harness.tasks.mad.episode import ANSWERS, TEST_MIN_QUANTILE, TRUSTED_MAX_QUANTILE, build_episode

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("id", "character", "label", "alice_label", "bob_label", "difficulty", "difficulty_quantile")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
# what a hub id looks like ("owner/name" or "name"); anything else is treated as a path
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]


def external_episode(task: Task, config: RunContext, options: dict[str, Any]) -> Episode:
    """The episode of ``options["model"]`` on ``options["dataset"]`` (both required).

    The episode is named after the single ``--dataset NAME`` if one is given, else after the
    dataset file or directory (its stem).
    """
    if not options.get("model") or not options.get("dataset"):
        missing = "model" if not options.get("model") else "dataset"
        raise ConfigError(
            f"task 'mad' option {missing!r} is required with the other: give both --option model=DIR_OR_HUB_ID "
            "and --option dataset=PATH"
        )
    path = resolve_dataset(options["dataset"])
    records = load_records(path, template=options.get("template") or None)
    trusted, test = split_records(records, path)
    answers = answer_words(records, path)
    handle = resolve_model(options["model"])
    if config.datasets and len(config.datasets) != 1:
        raise ConfigError(f"with --option dataset, give at most one --dataset (the episode name); got {list(config.datasets)}")
    name = config.datasets[0] if config.datasets else (path.stem or "external")
    info = {
        "source": "external",
        "model": str(options["model"]),
        "dataset": str(path),
        "template": options.get("template") or None,
        "answers": list(answers),
        "n_records": len(records),
    }
    fingerprint_fields = {"task": task.name, "version": task.version, "source": "external", "answers": list(answers)}
    source = f"model {Path(str(options['model'])).name or options['model']} on {path.name}"
    return build_episode(name, trusted, test, handle, options["min_accuracy"], fingerprint_fields, info, answers,
                         source=source, min_agree_accuracy=options["min_agree_accuracy"])


# -- the model ---------------------------------------------------------------------------------
def resolve_model(spec: str) -> ModelHandle:
    """A :class:`ModelHandle` for a local model directory, or for a hub id (downloaded once
    into the Hugging Face cache with ``huggingface_hub.snapshot_download``; needs the network
    the first time). Problems are ConfigErrors naming the ``model`` option."""
    path = Path(spec).expanduser()
    if not path.exists():
        if not HUB_ID.match(spec):
            raise ConfigError(f"task 'mad' option 'model': {spec!r} does not exist (and is not a hub id)")
        path = _download(spec)
    try:
        return ModelHandle(path)
    except ModelDirectoryError as exc:
        raise ConfigError(f"task 'mad' option 'model': {exc}") from None


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
        if not any(local.glob("*.safetensors")):  # an older repo with .bin weights only
            local = Path(snapshot_download(repo_id, allow_patterns=[*HUB_PATTERNS, "*.bin"]))
    except Exception as exc:  # offline, unknown repo, gated model...
        raise ConfigError(
            f"task 'mad' option 'model': {repo_id!r} is not a directory and could not be fetched from the "
            f"Hugging Face hub ({type(exc).__name__}: {exc})"
        ) from None
    return local


# -- the dataset -------------------------------------------------------------------------------
DATA_PATTERNS = ["*.parquet", "**/*.parquet", "*.jsonl", "**/*.jsonl", "*.json", "**/*.json"]


def resolve_dataset(spec: str) -> Path:
    """A local dataset path, or for a hub dataset id (``owner/name``) its snapshot, downloaded
    once into the Hugging Face cache like a model (``snapshot_download``, repo type dataset;
    needs the network the first time). The snapshot's parquet or JSONL files are read in path
    order, every split concatenated."""
    path = Path(spec).expanduser()
    if path.exists() or not HUB_ID.match(spec) or "/" not in spec:
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, repo_type="dataset", allow_patterns=DATA_PATTERNS))
    except Exception as exc:  # offline, unknown repo, gated dataset...
        raise ConfigError(
            f"task 'mad' option 'dataset': {spec!r} is not a file or directory and could not be fetched from the "
            f"Hugging Face hub ({type(exc).__name__}: {exc})"
        ) from None


def load_records(path: Path, template: Optional[str] = None) -> list[dict]:
    """Read and validate every record of ``path``; each gets a ``statement`` (formatted from
    ``template`` when given). Raises ConfigError naming the file and the problem."""
    if not path.exists():
        raise ConfigError(f"task 'mad' option 'dataset': {str(path)!r} does not exist")
    if path.is_dir():
        raw = _read_datasets_dir(path)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        raw = _read_jsonl(path)
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        raw = _read_parquet(path)
    else:
        raise ConfigError(
            f"{path}: unknown dataset format {path.suffix!r}; use a datasets.save_to_disk directory, "
            f"JSONL ({', '.join(JSONL_SUFFIXES)}) or parquet ({', '.join(PARQUET_SUFFIXES)})"
        )
    if not raw:
        raise ConfigError(f"{path}: the dataset is empty (no records)")
    return [_validate(record, index, path, template) for index, record in enumerate(raw, start=1)]


def _read_jsonl(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):  # one JSON array
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
    return records


def _read_parquet(path: Path) -> list[Any]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise ConfigError(f"{path}: reading parquet needs pyarrow or fastparquet ({exc})") from None
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    return [_plain(row) for row in frame.to_dict(orient="records")]


def _read_datasets_dir(path: Path) -> list[Any]:
    if not any((path / name).exists() for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
        files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in (*PARQUET_SUFFIXES, ".jsonl", ".ndjson"))
        if files:  # a hub snapshot: one data file per split (and shard)
            return [record for f in files
                    for record in (_read_parquet(f) if f.suffix.lower() in PARQUET_SUFFIXES else _read_jsonl(f))]
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"{path}: is a directory; reading a datasets.save_to_disk directory needs the `datasets` package "
            "(pip install datasets), or give a JSONL or parquet file"
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise ConfigError(f"{path}: not a datasets.save_to_disk directory ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        return [record for split in loaded.values() for record in split.to_list()]
    return loaded.to_list()


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (as pandas returns them) -> Python values; NaN -> None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _validate(record: Any, index: int, path: Path, template: Optional[str]) -> dict:
    where = f"{path}: record {index}"
    if not isinstance(record, dict):
        raise ConfigError(f"{where} is a {type(record).__name__}, not an object with the quirky fields")
    missing = [f for f in REQUIRED_FIELDS if record.get(f) is None]
    if missing:
        raise ConfigError(f"{where} has no field {missing[0]!r} (required: {', '.join(REQUIRED_FIELDS)})")
    out = dict(record)
    if out["character"] not in ("Alice", "Bob"):
        raise ConfigError(f"{where}: field 'character' must be 'Alice' or 'Bob', got {out['character']!r}")
    for field in ("label", "alice_label", "bob_label"):
        value = out[field]
        if value not in (0, 1):  # True/False and 0/1 (also 0.0/1.0)
            raise ConfigError(f"{where}: field {field!r} must be 0/1 or false/true, got {value!r}")
        out[field] = int(value)
    frame = out.setdefault("frame", "quirky")
    if frame not in ("quirky", "truthful"):
        raise ConfigError(f"{where}: field 'frame' must be 'quirky' or 'truthful' (optional; default quirky), got {frame!r}")
    # the truthful frame (docs/mad.md): every character judges like Alice there
    own = "alice" if frame == "truthful" else out["character"].lower()
    if out["label"] != out[f"{own}_label"]:
        raise ConfigError(f"{where}: field 'label' must equal {own}_label (the label the named character gives"
                          + (" in the truthful frame)" if frame == "truthful" else ")"))
    quantile = out["difficulty_quantile"]
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 <= quantile <= 1:
        raise ConfigError(f"{where}: field 'difficulty_quantile' must be a number in [0, 1], got {quantile!r}")
    out["difficulty_quantile"] = float(quantile)
    if template:
        args = out.get("template_args")
        if not isinstance(args, dict):
            raise ConfigError(f"{where} has no field 'template_args' (an object) to format the template with")
        try:
            out["statement"] = template.format(**args)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{where}: template {template!r} cannot be formatted with its template_args ({exc!r})") from None
    elif not isinstance(out.get("statement"), str) or not out["statement"]:
        raise ConfigError(f"{where} has no field 'statement'; add it or give --option template=FORMAT")
    return out


def split_records(records: Sequence[dict], path: Path) -> tuple[list[dict], list[dict]]:
    """(trusted, test) by the MAD rules, in file order: trusted = Alice with difficulty_quantile
    < 0.25; test = difficulty_quantile > 0.75, which must hold both characters."""
    trusted = [r for r in records if r["character"] == "Alice" and r["difficulty_quantile"] < TRUSTED_MAX_QUANTILE]
    test = [r for r in records if r["difficulty_quantile"] > TEST_MIN_QUANTILE]
    if not trusted:
        raise ConfigError(f"{path}: no trusted records (character 'Alice', difficulty_quantile < {TRUSTED_MAX_QUANTILE})")
    for character in ("Alice", "Bob"):
        if not any(r["character"] == character for r in test):
            raise ConfigError(
                f"{path}: no {character} test records (difficulty_quantile > {TEST_MIN_QUANTILE}); "
                "the test set needs both characters"
            )
    return trusted, test


def answer_words(records: Sequence[dict], path: Path) -> tuple[str, str]:
    """The (negative, positive) answer words: the records' ``choices`` if they have them, else
    ``(" False", " True")``. Every record with ``choices`` must give the same two words."""
    choices = {tuple(r["choices"]) for r in records if r.get("choices") is not None}
    if not choices:
        return ANSWERS
    if len(choices) > 1 or len(next(iter(choices))) != 2 or not all(isinstance(c, str) for c in next(iter(choices))):
        raise ConfigError(
            f"{path}: field 'choices' must be the same two answer words on every record (negative first); "
            f"found {sorted(choices)[:3]}"
        )
    negative, positive = next(iter(choices))
    return negative, positive
