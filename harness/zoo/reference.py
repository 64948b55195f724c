"""Telling a user when their models are not the leaderboard's.

The committed leaderboard names the models it was computed on in ``leaderboard/models.json``:
``{"models": [{"task", "source", "dataset", "seed", "episode_fingerprint",
"model_fingerprints": {role: fingerprint}}]}``. A model trained from the same recipe on
another machine can differ from it (other CPU kernels; see "Reproducing the leaderboard's
models" in the README); its numbers are then kept in their own leaderboard section. Before a
run, :func:`reference_differences` says so in one line per affected episode, and how to score
on the leaderboard's own models instead (``harness zoo import``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

from harness.cache import PathLike
from harness.interfaces import ConfigError

DEFAULT_REFERENCE = Path("leaderboard") / "models.json"
GENERATED_SOURCE = "generated"
SHORT = 8  # characters of a fingerprint shown to a user
IMPORT_HINT = ("numbers will go in their own leaderboard section; to score the leaderboard's own models, run in "
               "the repository (leaderboard/zoo/ ships them) with a cache that holds no model trained here "
               "under the same recipe (a fresh HARNESS_CACHE): the run then imports them")


def load_reference(path: PathLike = DEFAULT_REFERENCE) -> list[dict[str, Any]]:
    """The reference entries of ``path``; ``[]`` when the file does not exist (no reference to
    compare with). A malformed file raises ConfigError naming it and the expected layout."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())["models"]
        if not isinstance(entries, list):
            raise TypeError("'models' is not a list")
        for entry in entries:
            missing = [k for k in ("task", "dataset", "seed", "model_fingerprints") if k not in entry]
            if missing:
                raise KeyError(missing[0])
            if not isinstance(entry["model_fingerprints"], dict):
                raise TypeError("'model_fingerprints' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"reference models file {str(path)!r} is malformed ({type(exc).__name__}: {exc}); expected "
            '{"models": [{"task", "source", "dataset", "seed", "episode_fingerprint", "model_fingerprints": {role: fp}}]}'
        ) from None
    return entries


def episode_source(episode: Any) -> str:
    """Where an episode's models and data come from (``"generated"`` for a task's own zoo)."""
    return episode.source or GENERATED_SOURCE


def episode_models(episode: Any) -> dict[str, str]:
    """Role -> model fingerprint of every model of an episode (its ``models``)."""
    return dict(episode.models)


def reference_entry(reference: Iterable[dict[str, Any]], task_name: str, source: str, dataset: str, seed: int,
                    quick: bool = False) -> Optional[dict[str, Any]]:
    """The entry of ``reference`` for (task, source, dataset, seed[, quick]); ``None`` if none."""
    for entry in reference:
        if (entry["task"] == task_name and entry.get("source", GENERATED_SOURCE) == source
                and entry["dataset"] == dataset and entry["seed"] == seed and bool(entry.get("quick", False)) == quick):
            return entry
    return None


def reference_differences(task_name: str, episodes: Iterable[Any], seed: int, reference: Iterable[dict[str, Any]],
                          quick: bool = False) -> list[str]:
    """One line per episode whose models differ from the reference entry of the same (task,
    source, dataset, seed); episodes without an entry (another seed, real inputs, a dataset
    the leaderboard does not have) and episodes on the reference's models give no line.

    An episode with the reference's models but another episode fingerprint (its data or
    validity threshold differ) gets a line too. ``quick``: compare with quick-mode entries only
    (entries without a ``quick`` field are full-size ones).
    """
    reference = list(reference)
    lines = []
    for episode in episodes:
        entry = reference_entry(reference, task_name, episode_source(episode), episode.name, seed, quick)
        if entry is None:
            continue
        mine, theirs = episode_models(episode), dict(entry["model_fingerprints"])
        if mine != theirs:
            lines.append(_models_line(task_name, episode.name, mine, theirs))
        elif entry.get("episode_fingerprint") and entry["episode_fingerprint"] != episode.fingerprint:
            lines.append(
                f"your {episode.name} episode differs from the leaderboard's although its models are the same "
                f"(episode {episode.fingerprint[:SHORT]}, leaderboard {entry['episode_fingerprint'][:SHORT]}: other data "
                f"or task settings): the leaderboard lists its records apart and never averages them with its numbers"
            )
    return lines


def _models_line(task_name: str, dataset: str, mine: dict[str, str], theirs: dict[str, str]) -> str:
    roles = sorted(set(mine) | set(theirs))
    differing = [r for r in roles if mine.get(r) != theirs.get(r)]
    if roles == ["model"]:
        return (f"your {dataset} model differs from the leaderboard's (model {_short(mine.get('model'))}, "
                f"leaderboard {_short(theirs.get('model'))}): {IMPORT_HINT}")
    shown = ", ".join(f"{r} {_short(mine.get(r))} vs {_short(theirs.get(r))}" for r in differing[:3])
    more = f", and {len(differing) - 3} more" if len(differing) > 3 else ""
    return (f"your {task_name} {dataset} models differ from the leaderboard's ({len(differing)} of {len(roles)}: "
            f"{shown}{more}): {IMPORT_HINT}")


def _short(fingerprint: Optional[str]) -> str:
    return fingerprint[:SHORT] if fingerprint else "none"
