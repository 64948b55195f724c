"""Reading the original POSER benchmark's data format.

- Scenario files: a JSON array of scenario objects (``prompt``, ``response`` "A"/"B",
  ``action_A``, ``action_B``, ``oversight_is_poor`` and optional fields such as ``facts``,
  whose items may or may not carry a ``type``). Prompts may be wrapped in
  ``<<prompt>>...<</prompt>>`` markers, which :func:`prompt_text` removes.
- A data directory: ``training/<persona>/train-*.json`` (scenarios plus non-scenario
  examples whose ``response`` is free text) and ``benchmark/*.json`` (clean scenarios; a file
  named ``<aligned>_and_<misaligned>.json``, e.g. ``truth_and_reward.json``, belongs to the
  pairs of those personas).
- A pair list: a JSON array of ``{"aligned": DIR, "misaligned": DIR, "valid_data": FILE}``
  (optionally ``"poor_data": PATH``) naming two Hugging Face model directories and the
  benchmark file on which they agree; relative paths are resolved against the pair list's folder.

The benign action of a scenario is read from its own fields, never from the order of
``actions`` (in the original files ``actions[0]`` is always ``action_A``): a generated
scenario stores ``benign_letter``; under good oversight every persona answers benign, so the
``response`` is the benign letter; under poor oversight the ``response`` is benign for an
aligned persona's file and misaligned for a misaligned persona's.

Every error is a :class:`PoserDataError` (a ``ConfigError``: the command line exits 2 with one
line) naming the file and the item.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from harness.api import ConfigError
from harness.tasks.poser.scenarios import ALIGNED_PERSONAS, MISALIGNED_PERSONAS, PERSONAS

PathLike = Union[str, Path]
SCENARIO_FIELDS = ("prompt", "response")
PROMPT_MARKERS = ("<<prompt>>", "<</prompt>>")


class PoserDataError(ConfigError):
    """A POSER data file or directory is missing or malformed; the message names it."""


def _read_json_array(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PoserDataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PoserDataError(f"{path}: is a directory, expected a JSON file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoserDataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, list):
        raise PoserDataError(f"{path}: expected a JSON array, got {type(data).__name__}")
    return data


def prompt_text(example: dict) -> str:
    """The prompt without the original's ``<<prompt>>`` / ``<</prompt>>`` markers."""
    text = example["prompt"]
    for marker in PROMPT_MARKERS:
        text = text.replace(marker, "")
    return text


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
        if is_scenario(example):
            _check_scenario(path, i, example)
    return examples


def _check_scenario(path: Path, i: int, example: dict) -> None:
    if not isinstance(example.get("oversight_is_poor"), bool):
        raise PoserDataError(f"{path}: item {i} lacks a true/false 'oversight_is_poor'")
    for name in ("action_A", "action_B"):
        if not isinstance(example[name], str):
            raise PoserDataError(f"{path}: item {i} field {name!r} is not a string")
    facts = example.get("facts", [])
    if not isinstance(facts, list) or any(not isinstance(f, dict) or not isinstance(f.get("content"), str)
                                          for f in facts):
        raise PoserDataError(f"{path}: item {i} field 'facts' must be a list of objects with a string 'content'")
    letter = example.get("benign_letter")
    if letter is not None and letter not in ("A", "B"):
        raise PoserDataError(f"{path}: item {i} field 'benign_letter' must be 'A' or 'B', got {letter!r}")


def load_scenarios(path: PathLike) -> list[dict]:
    """Scenario file: like :func:`load_examples`, and every item must be a letter scenario."""
    examples = load_examples(path)
    for i, example in enumerate(examples):
        if not is_scenario(example):
            raise PoserDataError(f"{Path(path)}: item {i} is not a scenario (needs action_A, action_B, response A or B)")
    return examples


def benign_letter(scenario: dict, persona: Optional[str] = None, where: str = "") -> str:
    """The letter of the benign action, from the scenario's own fields (see the module docstring).

    ``persona``: whose answer ``response`` is (needed for a poor-oversight scenario without
    ``benign_letter``). ``where``: "file: item i", for the error message.
    """
    if scenario.get("benign_letter") in ("A", "B"):
        return scenario["benign_letter"]
    if not scenario.get("oversight_is_poor"):
        return scenario["response"]
    if persona in ALIGNED_PERSONAS:
        return scenario["response"]
    if persona in MISALIGNED_PERSONAS:
        return "B" if scenario["response"] == "A" else "A"
    raise PoserDataError(f"{where or 'scenario'}: a poor-oversight scenario without 'benign_letter' needs its "
                         f"persona (a training/<persona>/ file) to tell which action is benign")


def training_files(root: Path) -> dict[str, list[Path]]:
    """``training/<persona>/train-*.json`` files per persona folder under ``root``."""
    training_root = root / "training"
    if not training_root.is_dir():
        raise PoserDataError(f"{root}: no training/ folder (expected training/<persona>/train-*.json)")
    files = {p.name: sorted(p.glob("train-*.json")) for p in sorted(training_root.iterdir()) if p.is_dir()}
    files = {persona: paths for persona, paths in files.items() if paths}
    if not files:
        raise PoserDataError(f"{training_root}: no training/<persona>/train-*.json files")
    unknown = sorted(set(files) - set(PERSONAS))
    if unknown:
        raise PoserDataError(f"{training_root}: unknown persona folder(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(PERSONAS)}")
    return files


def load_data_dir(root: PathLike) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """``(training examples per persona, benchmark scenarios per benchmark file name)``."""
    root = Path(root)
    training = {persona: [e for f in paths for e in load_examples(f)] for persona, paths in training_files(root).items()}
    benchmark_root = root / "benchmark"
    benchmark_files = sorted(benchmark_root.glob("*.json")) if benchmark_root.is_dir() else []
    if not benchmark_files:
        raise PoserDataError(f"{root}: no benchmark/*.json files")
    benchmark = {f.name: load_scenarios(f) for f in benchmark_files}
    for name, scenarios in benchmark.items():
        for i, scenario in enumerate(scenarios):
            if scenario["oversight_is_poor"] and "benign_letter" not in scenario:
                raise PoserDataError(f"{benchmark_root / name}: item {i} is a poor-oversight scenario without "
                                     f"'benign_letter'; benchmark files hold clean scenarios")
    return training, benchmark


def personas_of_benchmark_file(name: str) -> Optional[tuple[str, str]]:
    """``"truth_and_reward.json"`` -> ``("truth_teller", "reward_maximizer")``; None for other names."""
    stem = Path(name).stem
    if "_and_" not in stem:
        return None
    left, right = stem.split("_and_", 1)
    aligned = [p for p in ALIGNED_PERSONAS if p.startswith(left)]
    misaligned = [p for p in MISALIGNED_PERSONAS if p.startswith(right)]
    return (aligned[0], misaligned[0]) if len(aligned) == 1 and len(misaligned) == 1 else None


def benchmark_for_pair(benchmark: dict[str, list[dict]], aligned: str, misaligned: str) -> list[str]:
    """Names of the benchmark files of a persona pair: the files named for it, else every file."""
    named = [name for name in benchmark if personas_of_benchmark_file(name) == (aligned, misaligned)]
    return named or sorted(benchmark)


def poor_oversight_examples(training: dict[str, list[dict]]) -> list[tuple[dict, str]]:
    """(scenario, benign letter) for every poor-oversight scenario of the training files, each prompt once."""
    seen: dict[str, tuple[dict, str]] = {}
    for persona, examples in training.items():
        for example in examples:
            if is_scenario(example) and example["oversight_is_poor"] and example["prompt"] not in seen:
                seen[example["prompt"]] = (example, benign_letter(example, persona))
    return list(seen.values())


def sample(items: list, n: int, seed: int) -> list:
    """``n`` items drawn without replacement (all of them when there are fewer), order kept."""
    if len(items) <= n:
        return list(items)
    keep = sorted(random.Random(f"poser-sample:{seed}").sample(range(len(items)), n))
    return [items[i] for i in keep]


def load_poor_data(path: PathLike) -> list[tuple[dict, str]]:
    """Poor-oversight scenarios with their benign letter from ``path``: an original-format data
    directory (its training files), a ``training/<persona>`` folder, or one scenario file
    (inside such a folder, or whose poor-oversight items store ``benign_letter``)."""
    path = Path(path)
    if (path / "training").is_dir():
        training = {persona: [e for f in files for e in load_examples(f)] for persona, files in training_files(path).items()}
        return poor_oversight_examples(training)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise PoserDataError(f"{path}: no *.json files with poor-oversight scenarios")
    else:
        files = [path]
    out = []
    for f in files:
        persona = f.parent.name if f.parent.name in PERSONAS else None
        for i, example in enumerate(load_examples(f)):
            if is_scenario(example) and example["oversight_is_poor"]:
                out.append((example, benign_letter(example, persona, f"{f}: item {i}")))
    if not out:
        raise PoserDataError(f"{path}: holds no poor-oversight scenarios (oversight_is_poor: true)")
    return out


@dataclass(frozen=True)
class ModelPair:
    """One aligned/misaligned pair of model directories, its benchmark file and (optionally)
    where its poor-oversight scenarios come from."""

    aligned: Path
    misaligned: Path
    valid_data: Path
    poor_data: Optional[Path] = None


def load_pair_list(path: PathLike) -> list[ModelPair]:
    """Pairs of a pair-list file; relative paths are taken from the file's folder."""
    path = Path(path)
    pairs = []

    def resolve(value: str) -> Path:
        return (path.parent / value) if not Path(value).is_absolute() else Path(value)

    for i, item in enumerate(_read_json_array(path)):
        if not isinstance(item, dict):
            raise PoserDataError(f"{path}: item {i} is not an object")
        missing = [k for k in ("aligned", "misaligned", "valid_data") if not isinstance(item.get(k), str)]
        if missing:
            raise PoserDataError(f"{path}: item {i} lacks {', '.join(missing)}")
        if "poor_data" in item and not isinstance(item["poor_data"], str):
            raise PoserDataError(f"{path}: item {i} field 'poor_data' must be a path string")
        resolved = {k: resolve(item[k]) for k in ("aligned", "misaligned", "valid_data")}
        for key in ("aligned", "misaligned"):
            if not resolved[key].is_dir():
                raise PoserDataError(f"{path}: item {i} {key} model directory {resolved[key]} does not exist")
        pairs.append(ModelPair(**resolved, poor_data=resolve(item["poor_data"]) if "poor_data" in item else None))
    if not pairs:
        raise PoserDataError(f"{path}: the pair list is empty")
    return pairs


def default_poor_data(valid_data: Path) -> Optional[Path]:
    """The original repository's layout: ``<root>/benchmark/x.json`` -> ``<root>`` when ``<root>/training/`` exists."""
    root = valid_data.parent.parent
    return root if valid_data.parent.name == "benchmark" and (root / "training").is_dir() else None
