"""Reading the original POSER benchmark's data format.

- Scenario files: a JSON array of scenario objects (``prompt``, ``response`` and the schema
  fields of :mod:`tasks.poser.scenarios`).
- A data directory: ``training/<persona>/train-*.json`` (scenarios plus non-scenario
  examples whose ``response`` is free text) and ``benchmark/*.json`` (clean scenarios).
- A pair list: a JSON array of ``{"aligned": DIR, "misaligned": DIR, "valid_data": FILE}``
  naming two Hugging Face model directories and the benchmark file on which they agree;
  relative paths are resolved against the pair list's folder.

Every error names the file and what is wrong with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, Path]
SCENARIO_FIELDS = ("prompt", "response")


class PoserDataError(ValueError):
    """A POSER data file or directory is missing or malformed; the message names it."""


def _read_json_array(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PoserDataError(f"{path}: file not found") from None
    except ValueError as exc:
        raise PoserDataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise PoserDataError(f"{path}: expected a JSON array, got {type(data).__name__}")
    return data


def is_scenario(example: dict) -> bool:
    """A scenario asks for a letter: it has two actions and a one-letter response."""
    return "action_A" in example and "action_B" in example and example.get("response") in ("A", "B")


def load_examples(path: PathLike) -> list[dict]:
    """Examples of one file: every item needs ``prompt`` and ``response`` strings."""
    path = Path(path)
    examples = _read_json_array(path)
    if not examples:
        raise PoserDataError(f"{path}: the file holds no examples")
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise PoserDataError(f"{path}: item {i} is a {type(example).__name__}, expected an object")
        missing = [f for f in SCENARIO_FIELDS if not isinstance(example.get(f), str)]
        if missing:
            raise PoserDataError(f"{path}: item {i} lacks string field(s) {', '.join(missing)}")
    return examples


def load_scenarios(path: PathLike) -> list[dict]:
    """Scenario file: like :func:`load_examples`, and every item must be a letter scenario."""
    examples = load_examples(path)
    for i, example in enumerate(examples):
        if not is_scenario(example):
            raise PoserDataError(f"{path}: item {i} is not a scenario (needs action_A, action_B, response A or B)")
        if "oversight_is_poor" not in example:
            raise PoserDataError(f"{path}: item {i} lacks 'oversight_is_poor'")
    return examples


def load_data_dir(root: PathLike) -> tuple[dict[str, list[dict]], list[dict]]:
    """``(training examples per persona, benchmark scenarios)`` of an original-format directory."""
    root = Path(root)
    training_root, benchmark_root = root / "training", root / "benchmark"
    if not training_root.is_dir():
        raise PoserDataError(f"{root}: no training/ folder (expected training/<persona>/train-*.json)")
    training: dict[str, list[dict]] = {}
    for persona_dir in sorted(p for p in training_root.iterdir() if p.is_dir()):
        files = sorted(persona_dir.glob("train-*.json"))
        if files:
            training[persona_dir.name] = [e for f in files for e in load_examples(f)]
    if not training:
        raise PoserDataError(f"{training_root}: no training/<persona>/train-*.json files")
    benchmark_files = sorted(benchmark_root.glob("*.json")) if benchmark_root.is_dir() else []
    if not benchmark_files:
        raise PoserDataError(f"{root}: no benchmark/*.json files")
    benchmark = [s for f in benchmark_files for s in load_scenarios(f)]
    return training, benchmark


@dataclass(frozen=True)
class ModelPair:
    """One aligned/misaligned pair of model directories and its benchmark file."""

    aligned: Path
    misaligned: Path
    valid_data: Path


def load_pair_list(path: PathLike) -> list[ModelPair]:
    """Pairs of a pair-list file; relative paths are taken from the file's folder."""
    path = Path(path)
    pairs = []
    for i, item in enumerate(_read_json_array(path)):
        if not isinstance(item, dict):
            raise PoserDataError(f"{path}: item {i} is not an object")
        missing = [k for k in ("aligned", "misaligned", "valid_data") if not isinstance(item.get(k), str)]
        if missing:
            raise PoserDataError(f"{path}: item {i} lacks {', '.join(missing)}")
        resolved = {k: (path.parent / item[k]) if not Path(item[k]).is_absolute() else Path(item[k])
                    for k in ("aligned", "misaligned", "valid_data")}
        pairs.append(ModelPair(**resolved))
    if not pairs:
        raise PoserDataError(f"{path}: the pair list is empty")
    return pairs


def write_json(path: PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (used to export generated data in the original format)."""
    from harness.cache import atomic_write_json

    atomic_write_json(path, data)
