"""The leaderboard: stored records -> sections -> ``leaderboard/README.md``, ``results.csv``,
``models.json`` and each task's PNG plots.

A number is only shown beside numbers computed on the same models. Records are grouped into
*sections*: one task, one source (the task's own generated zoo, or a named real model and
dataset), and one set of episodes: within a section every (dataset, seed) cell has exactly
one episode fingerprint. Records of other models (a user's retrained zoo, an older model)
go into a section of their own, named by its model fingerprints, never into another's rows.
Each task renders its own sections (:meth:`harness.interfaces.Task.leaderboard_section`).

``models.json`` lists the models behind the first section of each (task, source): the
reference a fresh ``harness run`` compares its models against. When a (task, source) has
records of several model sets, the one in the existing ``models.json`` stays first.

Everything shown is recomputed from the records (scores and labels are stored in them), so the
rendered files are a pure function of the records and the previous ``models.json``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from harness.report import record_model_fingerprint, record_source, records_frame
from harness.results import iter_records

if TYPE_CHECKING:
    from harness.interfaces import Task
    from harness.plugins import Registry

logger = logging.getLogger(__name__)

MODELS_NAME = "models.json"  # read back by harness.zoo.reference


@dataclass
class Section:
    """The newest records of one task, one source and one set of models.

    Attributes:
        task, task_kind, source: what the records are of.
        index: 0 for the reference models of this (task, source); 1, 2, ... for other model
            sets (each listed with its fingerprints, never averaged with the reference).
        records: the newest record of each job setting; one episode fingerprint per
            (dataset, seed).
        frame: :func:`harness.report.records_frame` of ``records``.
        models: one entry per (dataset, seed): its episode and model fingerprints.
        slug: a file-name prefix for this section's plots (``mad`` for the first generated
            MAD section, so plot names stay stable).
    """

    task: str
    task_kind: str
    source: str
    index: int
    records: list[dict[str, Any]]
    frame: pd.DataFrame
    models: list[dict[str, Any]]
    slug: str

    @property
    def title(self) -> str:
        title = f"task `{self.task}`" + ("" if self.source == "generated" else f", {self.source}")
        return title if self.index == 0 else f"{title}, other models ({self.index})"

    def models_line(self) -> str:
        """The models behind every number of the section, with short fingerprints."""
        cells = []
        for entry in self.models:
            fingerprints = entry["model_fingerprints"]
            if not fingerprints:  # a record written before model fingerprints were stored
                models = f"episode `{entry['episode_fingerprint'][:8]}`"
            elif len(fingerprints) == 1:
                models = f"`{entry['model_fingerprint'][:8]}`"
            else:
                models = f"{len(fingerprints)} models, combined `{entry['model_fingerprint'][:8]}`"
            cells.append(f"{entry['dataset']} (seed {entry['seed']}) {models}")
        return "Models: " + "; ".join(cells) + "."

    def preamble(self) -> list[str]:
        """The lines every section starts with: its models, and a warning on non-reference sets."""
        lines = [self.models_line()]
        if self.index:
            lines += ["", f"These records come from models that differ from the first `{self.task}` section's "
                          "(a retrained zoo or an older model): they are shown apart and never averaged with it."]
        return lines

    def problem_lines(self) -> list[str]:
        """One line per error record and per invalid episode (not scored)."""
        lines = []
        for _, row in self.frame[self.frame["status"] == "error"].iterrows():
            lines.append(f"- error: `{row['detector']}` on {row['dataset']} (seed {row['seed']}): {row['message'][:120]}")
        invalid = self.frame[self.frame["status"] == "invalid"].drop_duplicates(["dataset", "seed"])
        for _, row in invalid.iterrows():
            lines.append(f"- not scored: {row['dataset']} (seed {row['seed']}): {row['message'][:160]}")
        return lines + ([""] if lines else [])


def newest_records(results_dir: Path, include_quick: bool = False) -> list[dict[str, Any]]:
    """The newest record of each job setting: task, source, dataset, episode fingerprint,
    detector, hyperparameters, seed. Records of another model have another episode
    fingerprint, so they are kept (in their own section), never replaced or averaged."""
    newest: dict[str, dict[str, Any]] = {}
    for record in iter_records(results_dir):
        if record.get("quick") and not include_quick:
            continue
        setting = json.dumps([record["task"], record_source(record), record["dataset"],
                              record.get("episode_fingerprint", ""), record["detector"], record.get("params"),
                              record.get("seed", 0), bool(record.get("quick"))], sort_keys=True)
        if setting not in newest or record.get("created_unix", 0) >= newest[setting].get("created_unix", 0):
            newest[setting] = record
    return sorted(newest.values(), key=lambda r: r["_path"])


def load_models_file(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``models.json`` (empty if it is missing or unreadable)."""
    try:
        return list(json.loads(Path(path).read_text()).get("models", []))
    except (OSError, ValueError, AttributeError):
        return []


def sections(records: list[dict[str, Any]], reference: Optional[list[dict[str, Any]]] = None) -> list[Section]:
    """Group records into sections (see the module docstring), in (task, source, index) order.

    Per (task, source, dataset, seed) cell, the episode fingerprints are ranked: the one in
    ``reference`` first, then by number of records, then by the newest record; section ``i``
    takes the rank-``i`` fingerprint of every cell that has one.
    """
    preferred = {(e.get("task"), e.get("source"), e.get("dataset"), e.get("seed")): e.get("episode_fingerprint")
                 for e in (reference or [])}
    cells: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        cell = (record["task"], record_source(record), record["dataset"], record.get("seed", 0))
        cells.setdefault(cell, {}).setdefault(record.get("episode_fingerprint", ""), []).append(record)
    ranked: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for cell, by_fingerprint in cells.items():
        order = sorted(by_fingerprint, key=lambda fp: (fp != preferred.get(cell), -len(by_fingerprint[fp]),
                                                       -max(r.get("created_unix", 0) for r in by_fingerprint[fp]), fp))
        for rank, fingerprint in enumerate(order):
            ranked.setdefault((cell[0], cell[1], rank), []).extend(by_fingerprint[fingerprint])
    out = []
    taken: set[str] = set()
    for (task, source, index), group in sorted(ranked.items()):
        group = sorted(group, key=lambda r: r["_path"])
        slug = _unique_slug(task if source == "generated" else f"{task}-{source}", index, taken)
        out.append(Section(task=task, task_kind=group[0].get("task_kind", ""), source=source, index=index,
                           records=group, frame=records_frame(group), models=_models_of(group), slug=slug))
    return out


def _unique_slug(base: str, index: int, taken: set[str]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "task"
    if index:
        slug = f"{slug}_other{index}"
    while slug in taken:
        slug += "_"
    taken.add(slug)
    return slug


def _models_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        cell = (record["dataset"], record.get("seed", 0))
        if cell not in entries:
            entries[cell] = {
                "task": record["task"], "source": record_source(record), "dataset": cell[0], "seed": cell[1],
                "episode_fingerprint": record.get("episode_fingerprint", ""),
                "model_fingerprint": record_model_fingerprint(record),
                "model_fingerprints": record.get("model_fingerprints")
                or ({"model": record_model_fingerprint(record)} if record_model_fingerprint(record) else {}),
            }
    return [entries[cell] for cell in sorted(entries, key=lambda c: (c[1], c[0]))]


def mixes(all_sections: list[Section]) -> list[str]:
    """One line per section of non-reference models: records of several models for one
    (task, source), which a committed leaderboard must not hold."""
    return [f"{s.title}: {len(s.records)} records of models that differ from the first section's "
            f"({s.models_line()[len('Models: '):-1]}); delete them or the others" for s in all_sections if s.index]


def task_class(registry: Optional["Registry"], name: str) -> type["Task"]:
    """The registered class of task ``name``; the base Task (default report) if it is not installed."""
    from harness.interfaces import Task

    if registry is not None and name in registry.tasks and ("task", name) not in registry.clashes:
        return registry.tasks[name]
    return Task


def _registry(registry: Optional["Registry"]) -> "Registry":
    if registry is not None:
        return registry
    from harness.plugins import get_registry

    return get_registry()


def load_sections(results_dir: Path, out_dir: Path, include_quick: bool = False) -> list[Section]:
    """The sections of the records under ``results_dir``, the reference read from ``out_dir``."""
    return sections(newest_records(results_dir, include_quick), load_models_file(Path(out_dir) / MODELS_NAME))


def render(results_dir: Path, out_dir: Path, include_quick: bool = False,
           registry: Optional["Registry"] = None, all_sections: Optional[list[Section]] = None) -> dict[str, str]:
    """Render README.md, results.csv and models.json; returns {filename: content} (the caller
    writes them, so ``--check`` can compare instead)."""
    registry = _registry(registry)
    if all_sections is None:
        all_sections = load_sections(results_dir, out_dir, include_quick)
    lines = [
        "# Leaderboard",
        "",
        "Generated by `harness leaderboard` from the records in "
        f"`{Path(results_dir).as_posix()}`; do not edit by hand.",
        "Score polarity everywhere: higher = more suspicious. AUROCs are computed on the raw",
        "score and never flipped (an anti-predictive detector shows AUROC < 0.5).",
        "Each section holds the records of one task on one set of models (fingerprints on its",
        "\"Models\" line); numbers of different models are never put side by side.",
        "",
    ]
    if not all_sections:
        lines.append("No results yet: run `harness run --task mad --detector activations_mahalanobis`.")
    for section in all_sections:
        cls = task_class(registry, section.task)
        try:
            section_lines = cls.leaderboard_section(section)
        except Exception as exc:  # one task's broken report must not lose the other sections
            logger.warning("the leaderboard section of %s failed: %s: %s", section.title, type(exc).__name__, exc)
            section_lines = [f"## {section.title}", "", f"This section failed to render: {type(exc).__name__}: {exc}",
                             ""]
        if section.task not in registry.tasks:  # say why the table is the default one
            section_lines[1:1] = ["", f"(Task `{section.task}`'s plugin is not installed here: its records are "
                                      "shown in the default table.)"]
        lines += section_lines
    frames = [s.frame.assign(section=s.slug) for s in all_sections]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    csv_frame = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
    models = [entry for s in all_sections if s.index == 0 for entry in s.models]
    return {
        "README.md": "\n".join(lines).rstrip() + "\n",
        "results.csv": csv_frame.to_csv(index=False, float_format="%.6g"),
        MODELS_NAME: json.dumps({"about": "the models behind the leaderboard's sections; `harness run` compares "
                                          "freshly built models against them",
                                 "models": models}, indent=1, sort_keys=True) + "\n",
    }


def write(files: dict[str, str], out_dir: Path) -> None:
    from harness.cache import atomic_write_bytes

    for name, content in files.items():
        atomic_write_bytes(Path(out_dir) / name, content.encode())


def build(results_dir: Path, out_dir: Path, include_quick: bool = False,
          registry: Optional["Registry"] = None) -> list[Path]:
    """Render and write everything, plots included; returns the written paths."""
    registry = _registry(registry)
    all_sections = load_sections(results_dir, out_dir, include_quick)
    files = render(results_dir, out_dir, include_quick, registry, all_sections)
    write(files, out_dir)
    written = [Path(out_dir) / name for name in files]
    for section in all_sections:
        try:
            written += task_class(registry, section.task).leaderboard_plots(section, Path(out_dir))
        except Exception as exc:  # a broken plot of one task must not lose the others
            logger.warning("plots of %s failed: %s: %s", section.title, type(exc).__name__, exc)
    return written


def check(results_dir: Path, out_dir: Path, include_quick: bool = False,
          registry: Optional["Registry"] = None) -> list[str]:
    """Names of the rendered text files that differ from what is on disk (stale)."""
    stale = []
    for name, content in render(results_dir, out_dir, include_quick, registry).items():
        path = Path(out_dir) / name
        if not path.exists() or path.read_text() != content:
            stale.append(name)
    return stale
