"""The leaderboard: stored records -> sections -> ``leaderboard/README.md``, ``results.csv``,
``models.json`` and each task's PNG plots. It never mixes: a number is only shown beside
numbers computed on the same models with the same setting.

Records are selected (:func:`newest_records`) by (task, source, quick, models, episode,
dataset, seed, detector, detector plugin distribution and version, hyperparameters, setting):
the newest record of each such job setting counts. Two versions of a detector are two
selections, never one replacing the other.

A *section* is one task, one source (the task's own generated zoo, or a named real model and
dataset), quick or full-size models (quick records never join a full-size section), and one
set of models (the records' ``model_fingerprints``; a record that names no model is known by
its episode fingerprint). Which models belong together is decided for the whole section,
never cell by cell:

* the reference: where ``models.json`` in the output directory lists models of this (task,
  source, quick) and some records were made on them, section 0 holds exactly the records of
  those models: in a (dataset, seed) it lists, the models it lists there; in one it does not
  list, only models it lists elsewhere (e.g. one real model scored with another run seed).
  Records of other models go to other sections;
* without a reference (no ``models.json``, or none of its models has a record), section 0
  takes, in each (dataset, seed), the models recorded first; models recorded later in the same
  (dataset, seed) (a retrained zoo, a foreign machine) go to other sections, never spliced in;
* other sections (index 1, 2, ...) take the remaining models of each (dataset, seed) in the
  order they were first recorded; they are flagged (:func:`mixes`) and fail ``--check``.

Settings that do not change the models (task options, a gate override) never split a section.
Within a section one *setting* (:func:`harness.leaderboard.report.record_setting`: task version and
plugin, dtype, validity gate) is shown, the reference's or else the one with the most records,
and each (dataset, seed) shows one episode; records of the section's models with another
setting or episode are *left out*: listed under the section, in ``results.csv``, never
averaged. A section made with a non-default gate says so in its header (the task's report
reads ``Section.setting``). A row is (detector, detector plugin distribution and version,
hyperparameters) (:func:`harness.leaderboard.report.detector_labels`): two versions are two rows.

Each task renders its own sections (its report module, ``Task.report``);
``README.md`` wraps each between ``<!-- leaderboard section SLUG DIGEST -->`` and ``<!-- end
of leaderboard section SLUG -->``, where DIGEST hashes the section's records. A section whose
task plugin is not installed here is copied from the ``README.md`` on disk when its digest
matches (with a warning: it was not re-rendered), so ``--check`` does not depend on which
plugins are installed; otherwise it gets the default table and a note.

``results.csv`` has one row per selected record, with the fixed columns :data:`RESULT_COLUMNS`
whatever the plugins and records: where the record is shown (``section``, ``in_table``), what
it is (task, versions and plugin provenance, source, dataset, seed, detector, hyperparameters
as JSON), ``status``, ``valid``, ``message``, the fingerprints, ``auroc`` with its interval,
the timings, then ``metrics`` and ``validity``: the record's scalar metrics and validity facts
as JSON objects (each task's own numbers, without giving every other task's rows a column).

``models.json`` lists the models behind section 0 of each (task, source, quick): the
reference a fresh ``harness run`` compares its models against.

``--check`` (:func:`check`, :func:`check_files`) fails on stale text files, on a PNG in the
output directory that no section draws (orphan), on a plot a section draws but that is
missing, and on an image link in ``README.md`` to a file that does not exist. Everything shown
is recomputed from the records (scores and labels are stored in them), so the rendered files
are a pure function of the records, the previous ``models.json`` and, for sections of plugins
not installed, the previous ``README.md``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from harness.leaderboard.report import (
    Section,
    models_identity,
    record_model_fingerprint,
    record_models,
    record_models_identity,
    record_plugin,
    record_setting,
    record_source,
    records_frame,
    report_of,
)
from harness.records import iter_records, record_content

if TYPE_CHECKING:
    from harness.interfaces import Task
    from harness.plugins import Registry

logger = logging.getLogger(__name__)

MODELS_NAME = "models.json"  # read back by harness.zoo.reference
README_NAME = "README.md"
CSV_NAME = "results.csv"
# the columns of results.csv, in this order (see the module docstring)
RESULT_COLUMNS = (
    "section", "in_table", "task", "task_kind", "task_version", "task_distribution", "task_plugin_version", "source",
    "quick", "dataset", "seed", "detector", "detector_distribution", "detector_version", "params", "status", "valid",
    "message", "episode_fingerprint", "model_fingerprint", "auroc", "auroc_ci_low", "auroc_ci_high", "fit_s",
    "score_s", "metrics", "validity", "key",
)
BEGIN_MARK = "<!-- leaderboard section {slug} {digest} -->"
END_MARK = "<!-- end of leaderboard section {slug} -->"
_BEGIN = re.compile(r"^<!-- leaderboard section (\S+) (\S+) -->$")
_END = re.compile(r"^<!-- end of leaderboard section (\S+) -->$")
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)")
_PNG_NAME = re.compile(r"[\w.-]+\.png")


def newest_records(results_dir: Path, include_quick: bool = False) -> list[dict[str, Any]]:
    """The newest record of each job setting: task, source, quick, models, episode, dataset,
    seed, detector, detector plugin distribution and version, hyperparameters and setting
    (:func:`harness.leaderboard.report.record_setting`). Records of another model, another version of a
    detector or another setting are kept (and sorted into sections), never replaced."""
    newest: dict[str, dict[str, Any]] = {}
    for record in iter_records(results_dir):
        if record.get("quick") and not include_quick:
            continue
        setting = json.dumps([record["task"], record_source(record), bool(record.get("quick")),
                              record_models_identity(record), record.get("episode_fingerprint", ""),
                              record["dataset"], record.get("seed", 0), record["detector"],
                              record_plugin(record, "detector"), record.get("params"), record_setting(record)],
                             sort_keys=True)
        if setting not in newest or record.get("created_unix", 0) >= newest[setting].get("created_unix", 0):
            newest[setting] = record
    return sorted(newest.values(), key=lambda r: r["_path"])


def load_models_file(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``models.json`` (empty if it is missing or unreadable)."""
    try:
        return list(json.loads(Path(path).read_text()).get("models", []))
    except (OSError, ValueError, AttributeError):
        return []


def _entry_identity(entry: dict[str, Any]) -> str:
    models = dict(entry.get("model_fingerprints") or {})
    if not models and entry.get("model_fingerprint"):
        models = {"model": entry["model_fingerprint"]}
    return models_identity(models, entry.get("episode_fingerprint", ""))


def _created(records: list[dict[str, Any]], first: bool = True) -> float:
    times = [r.get("created_unix", 0) or 0 for r in records]
    return min(times) if first else max(times)


def sections(records: list[dict[str, Any]], reference: Optional[list[dict[str, Any]]] = None) -> list[Section]:
    """Group records into sections (see the module docstring), in (task, source, quick, index) order.

    ``reference``: the entries of the previous ``models.json``.
    """
    groups: dict[tuple[str, str, bool], dict[tuple[str, int], dict[str, list[dict[str, Any]]]]] = {}
    for record in records:
        group = (record["task"], record_source(record), bool(record.get("quick")))
        cell = (record["dataset"], record.get("seed", 0))
        groups.setdefault(group, {}).setdefault(cell, {}).setdefault(record_models_identity(record), []).append(record)
    entries: dict[tuple[str, str, bool], dict[tuple[str, int], dict[str, Any]]] = {}
    for entry in reference or []:
        group = (entry.get("task"), entry.get("source") or "generated", bool(entry.get("quick", False)))
        entries.setdefault(group, {})[(entry.get("dataset"), entry.get("seed", 0))] = entry
    out = []
    taken: set[str] = set()
    for group in sorted(groups):
        task, source, quick = group
        cells = groups[group]
        reference_cells = entries.get(group, {})
        use_reference = any(_entry_identity(entry) in cells.get(cell, {}) for cell, entry in reference_cells.items())
        reference_models = {_entry_identity(entry) for entry in reference_cells.values()}
        ranked: dict[int, list[dict[str, Any]]] = {}
        for cell in sorted(cells, key=lambda c: (str(c[0]), c[1])):
            by_models = cells[cell]
            # first recorded first: later models of a (dataset, seed) never displace earlier ones
            order = sorted(by_models, key=lambda m: (_created(by_models[m]), -len(by_models[m]), m))
            if use_reference:
                entry = reference_cells.get(cell)
                if entry is not None:
                    mine = _entry_identity(entry)
                else:  # a (dataset, seed) models.json does not list: only on models it lists
                    mine = next((m for m in order if m in reference_models), None)
                if mine in by_models:
                    ranked.setdefault(0, []).extend(by_models[mine])
                rest = [m for m in order if m != mine]
            else:
                ranked.setdefault(0, []).extend(by_models[order[0]])
                rest = order[1:]
            for rank, models in enumerate(rest, start=1):
                ranked.setdefault(rank, []).extend(by_models[models])
        for index in sorted(ranked):
            chosen = reference_cells if (index == 0 and use_reference) else {}
            setting, shown, left_out = _one_setting(ranked[index], chosen)
            base = task if source == "generated" else f"{task}-{source}"
            if quick and (task, source, False) in groups:  # beside the full-size section's plots
                base += "-quick"
            slug = _unique_slug(base, index, taken)
            shown = sorted(shown, key=lambda r: r["_path"])
            out.append(Section(task=task, task_kind=shown[0].get("task_kind", "") if shown else "", source=source,
                               index=index, records=shown, frame=records_frame(shown), models=_models_of(shown),
                               slug=slug, quick=quick, left_out=sorted(left_out, key=lambda r: r["_path"]),
                               setting=setting))
    return out


def _one_setting(records: list[dict[str, Any]], reference_cells: dict[tuple[str, int], dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(setting, shown, left out) of one section's records: the setting of the reference's
    episodes, else the one with the most records, else the newest; then per (dataset, seed)
    the episode of the reference, else the one with the most records, else the newest."""
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_setting.setdefault(json.dumps(record_setting(record), sort_keys=True), []).append(record)
    reference_episodes = {e.get("episode_fingerprint") for e in reference_cells.values()} - {None, ""}
    chosen = min(by_setting, key=lambda s: (
        -sum(r.get("episode_fingerprint") in reference_episodes for r in by_setting[s]), -len(by_setting[s]),
        -_created(by_setting[s], first=False), s))
    cells: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = {}
    for record in by_setting[chosen]:
        cell = (record["dataset"], record.get("seed", 0))
        cells.setdefault(cell, {}).setdefault(record.get("episode_fingerprint", ""), []).append(record)
    shown: list[dict[str, Any]] = []
    for cell, by_episode in cells.items():
        preferred = (reference_cells.get(cell) or {}).get("episode_fingerprint")
        episode = min(by_episode, key=lambda fp: (fp != preferred, -len(by_episode[fp]),
                                                  -_created(by_episode[fp], first=False), fp))
        shown += by_episode[episode]
    ids = {id(r) for r in shown}
    return json.loads(chosen), shown, [r for r in records if id(r) not in ids]


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
                "model_fingerprints": record_models(record),
                **({"quick": True} if record.get("quick") else {}),
            }
    return [entries[cell] for cell in sorted(entries, key=lambda c: (c[1], c[0]))]


def mixes(all_sections: list[Section]) -> list[str]:
    """One line per section of non-reference models: records of several model sets for one
    (task, source, quick), which a committed leaderboard must not hold."""
    return [f"{s.title}: {len(s.records)} records of models that differ from the first section's "
            f"({s.models_line()[len('Models: '):-1]}); delete them or the others (or delete {MODELS_NAME} to make "
            "the first-recorded models the reference)" for s in all_sections if s.index]


def task_class(registry: Optional["Registry"], name: str) -> type["Task"]:
    """The registered class of task ``name``; the base Task (default report) if it is not installed."""
    from harness.interfaces import Task

    if _installed(registry, name):
        return registry.tasks[name]  # type: ignore[union-attr]
    return Task


def _installed(registry: Optional["Registry"], name: str) -> bool:
    return registry is not None and name in registry.tasks and ("task", name) not in registry.clashes


def _registry(registry: Optional["Registry"]) -> "Registry":
    if registry is not None:
        return registry
    from harness.plugins import get_registry

    return get_registry()


def load_sections(results_dir: Path, out_dir: Path, include_quick: bool = False) -> list[Section]:
    """The sections of the records under ``results_dir``, the reference read from ``out_dir``."""
    return sections(newest_records(results_dir, include_quick), load_models_file(Path(out_dir) / MODELS_NAME))


# -- README.md sections and their markers --------------------------------------------------------
def section_digest(section: Section) -> str:
    """A hash of everything a section's text is computed from (its records, left-out records,
    models, setting, title and slug), written in its begin marker."""
    from harness.cache import stable_hash

    return stable_hash({
        "title": section.title, "slug": section.slug, "index": section.index, "setting": section.setting,
        "models": section.models, "records": [record_content(r) for r in section.records],
        "left_out": [record_content(r) for r in section.left_out],
    })


def disk_sections(readme: str) -> dict[str, tuple[str, list[str]]]:
    """slug -> (digest, lines between the markers) of every marked section of a ``README.md`` text."""
    found: dict[str, tuple[str, list[str]]] = {}
    current: Optional[tuple[str, str, list[str]]] = None
    for line in readme.splitlines():
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            current = (begin.group(1), begin.group(2), [])
        elif end and current is not None and end.group(1) == current[0]:
            found[current[0]] = (current[1], current[2])
            current = None
        elif current is not None:
            current[2].append(line)
    return found


def _kept_sections(all_sections: list[Section], registry: Optional["Registry"], out_dir: Path
                   ) -> dict[str, list[str]]:
    """slug -> text on disk of every section whose task is not installed and whose digest on
    disk matches its records: what :func:`render` copies instead of re-rendering."""
    readme_path = Path(out_dir) / README_NAME
    missing = [s for s in all_sections if not _installed(registry, s.task)]
    on_disk = disk_sections(readme_path.read_text()) if missing and readme_path.exists() else {}
    return {s.slug: on_disk[s.slug][1] for s in missing
            if s.slug in on_disk and on_disk[s.slug][0] == section_digest(s)}


@dataclass
class _Rendered:
    files: dict[str, str]
    kept: dict[str, list[str]]  # slug -> the lines copied from the README on disk


def _page_links(out_dir: Path) -> list[str]:
    """When ``out_dir`` is a page of the committed leaderboard (:data:`harness.records.BOARDS`),
    a line linking the other pages that have records (so the line does not depend on which
    page was rendered first)."""
    from harness.records import BOARDS

    here = out_dir.resolve()
    if here not in {board.resolve() for board in BOARDS}:
        return []
    others = [(board, what) for board, what in BOARDS.items()
              if board.resolve() != here and (board / "records").is_dir()]
    if not others:
        return []
    links = ", ".join(f"[{what}]({Path(os.path.relpath(board / README_NAME, here)).as_posix()})"
                      for board, what in others)
    return [f"This page: {BOARDS[next(b for b in BOARDS if b.resolve() == here)]}. Also on this leaderboard: {links}.", ""]


def render(results_dir: Path, out_dir: Path, include_quick: bool = False,
           registry: Optional["Registry"] = None, all_sections: Optional[list[Section]] = None) -> dict[str, str]:
    """Render README.md, results.csv and models.json; returns {filename: content} (the caller
    writes them, so ``--check`` can compare instead)."""
    return _render(results_dir, out_dir, include_quick, registry, all_sections).files


def _render(results_dir: Path, out_dir: Path, include_quick: bool = False,
            registry: Optional["Registry"] = None, all_sections: Optional[list[Section]] = None) -> _Rendered:
    registry = _registry(registry)
    if all_sections is None:
        all_sections = load_sections(results_dir, out_dir, include_quick)
    readme_path = Path(out_dir) / README_NAME
    kept = _kept_sections(all_sections, registry, Path(out_dir))
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
    lines += _page_links(Path(out_dir))
    shipped = sorted((Path(out_dir) / "zoo").glob("harness-zoo-*.tar.gz"))  # harness.zoo.shipped's archive
    if shipped:
        lines += [f"The models the records were computed on ship beside them, in `zoo/{shipped[0].name}`: "
                  "`harness run` imports them instead of training, so a rerun scores the same models.", ""]
    if not all_sections:
        lines.append("No results yet: run `harness run --task mad --detector activations_mahalanobis`.")
    for section in all_sections:
        digest = section_digest(section)
        if _installed(registry, section.task):
            section_lines = _section_lines(task_class(registry, section.task), section)
        elif section.slug in kept:
            section_lines = kept[section.slug]
            logger.warning("%s: task `%s`'s plugin is not installed here; the section is kept as it is in %s, "
                           "not re-rendered", section.title, section.task, readme_path)
        else:
            section_lines = _section_lines(task_class(None, section.task), section)
            section_lines[1:1] = ["", f"(Task `{section.task}`'s plugin is not installed here: its records are "
                                      "shown in the default table.)"]
            logger.warning("%s: task `%s`'s plugin is not installed here; its records are shown in the default "
                           "table", section.title, section.task)
        if not section_lines or section_lines[-1] != "":
            section_lines = [*section_lines, ""]
        lines += [BEGIN_MARK.format(slug=section.slug, digest=digest), *section_lines,
                  END_MARK.format(slug=section.slug), ""]
    models = [entry for s in all_sections if s.index == 0 for entry in s.models]
    return _Rendered(files={
        README_NAME: "\n".join(lines).rstrip() + "\n",
        CSV_NAME: results_csv(all_sections),
        MODELS_NAME: json.dumps({"about": "the models behind the leaderboard's sections; `harness run` compares "
                                          "freshly built models against them",
                                 "models": models}, indent=1, sort_keys=True) + "\n",
    }, kept=kept)


def _section_lines(cls: type["Task"], section: Section) -> list[str]:
    try:
        return list(report_of(cls, "section")(section))
    except Exception as exc:  # one task's broken report must not lose the other sections
        logger.warning("the leaderboard section of %s failed: %s: %s", section.title, type(exc).__name__, exc)
        return [f"## {section.title}", "", f"This section failed to render: {type(exc).__name__}: {exc}", ""]


# -- results.csv -------------------------------------------------------------------------------------
def result_row(record: dict[str, Any], section: Section, in_table: bool) -> dict[str, Any]:
    """The results.csv row of one record (:data:`RESULT_COLUMNS`)."""
    from harness.cache import json_compatible

    metrics = record.get("metrics") or {}
    interval = metrics.get("auroc_ci") if isinstance(metrics.get("auroc_ci"), list) else [None, None]
    task_distribution, task_version = record_plugin(record, "task")
    detector_distribution, detector_version = record_plugin(record, "detector")
    timings = record.get("timings") or {}

    def scalars(facts: dict[str, Any]) -> str:
        kept = {k: v for k, v in facts.items() if isinstance(v, (bool, int, float, str)) or v is None
                or (isinstance(v, list) and len(v) == 2 and k.endswith("_ci"))}
        return json.dumps(json_compatible(kept), sort_keys=True, allow_nan=False)

    def number(value: Any) -> float:
        return float("nan") if value is None or isinstance(value, (str, bool)) else float(value)

    return {
        "section": section.slug, "in_table": in_table, "task": record["task"], "task_kind": record.get("task_kind", ""),
        "task_version": str(record.get("task_version", "")), "task_distribution": task_distribution,
        "task_plugin_version": task_version, "source": record_source(record), "quick": bool(record.get("quick")),
        "dataset": record["dataset"], "seed": record.get("seed", 0), "detector": record["detector"],
        "detector_distribution": detector_distribution, "detector_version": detector_version,
        "params": json.dumps(record.get("params") or {}, sort_keys=True), "status": record.get("status", ""),
        "valid": bool(record.get("valid", False)), "message": record.get("message", ""),
        "episode_fingerprint": record.get("episode_fingerprint", ""),
        "model_fingerprint": record_model_fingerprint(record), "auroc": number(metrics.get("auroc")),
        "auroc_ci_low": number(interval[0]), "auroc_ci_high": number(interval[1]),
        "fit_s": number(timings.get("fit_s")), "score_s": number(timings.get("score_s")),
        "metrics": scalars(metrics), "validity": scalars(record.get("validity") or {}), "key": record.get("key", ""),
    }


def results_csv(all_sections: list[Section]) -> str:
    """results.csv: one row per selected record (shown or left out), section by section."""
    rows = []
    for section in all_sections:
        shown = {id(r) for r in section.records}
        for record in sorted([*section.records, *section.left_out], key=lambda r: r.get("_path", "")):
            rows.append(result_row(record, section, id(record) in shown))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(index=False, float_format="%.6g")


# -- writing and checking ----------------------------------------------------------------------------
def write(files: dict[str, str], out_dir: Path) -> None:
    from harness.cache import atomic_write_bytes

    for name, content in files.items():
        atomic_write_bytes(Path(out_dir) / name, content.encode())


def _draw_plots(all_sections: list[Section], registry: "Registry", out_dir: Path) -> list[Path]:
    """The PNGs of every section whose task is installed, drawn into ``out_dir``."""
    written: list[Path] = []
    for section in all_sections:
        if not _installed(registry, section.task):
            continue
        try:
            written += report_of(task_class(registry, section.task), "plots")(section, Path(out_dir))
        except Exception as exc:  # a broken plot of one task must not lose the others
            logger.warning("plots of %s failed: %s: %s", section.title, type(exc).__name__, exc)
    return written


def _kept_plots(kept: dict[str, list[str]], all_sections: list[Section], out_dir: Path) -> set[str]:
    """PNG names that belong to sections kept from disk: linked in their text, or named
    ``<slug>_*.png`` after one of them (the longest current slug that prefixes the name owns it;
    ``<slug>_other<n>_*`` and ``<slug>_quick_*`` are other sections' names, not this one's)."""
    names = {name for lines in kept.values() for name in _PNG_NAME.findall("\n".join(lines))}
    slugs = [s.slug for s in all_sections]
    for path in Path(out_dir).glob("*.png"):
        owners = [slug for slug in slugs if path.name.startswith(f"{slug}_")
                  and not re.match(r"(other\d+|quick)_", path.name[len(slug) + 1:])]
        if owners and max(owners, key=len) in kept:
            names.add(path.name)
    return names


def build(results_dir: Path, out_dir: Path, include_quick: bool = False,
          registry: Optional["Registry"] = None) -> list[Path]:
    """Render and write everything, plots included; remove PNGs no section draws any more
    (orphans of sections that are gone); returns the written paths."""
    registry = _registry(registry)
    all_sections = load_sections(results_dir, out_dir, include_quick)
    rendered = _render(results_dir, out_dir, include_quick, registry, all_sections)
    write(rendered.files, out_dir)
    written = [Path(out_dir) / name for name in rendered.files]
    plots = _draw_plots(all_sections, registry, Path(out_dir))
    expected = {p.name for p in plots} | _kept_plots(rendered.kept, all_sections, Path(out_dir))
    for orphan in sorted(Path(out_dir).glob("*.png")):
        if orphan.name not in expected:
            logger.warning("removed %s: no section of the leaderboard draws it any more", orphan)
            orphan.unlink()
    return written + plots


def check(results_dir: Path, out_dir: Path, include_quick: bool = False,
          registry: Optional["Registry"] = None) -> list[str]:
    """Names of the rendered text files that differ from what is on disk (stale)."""
    stale = []
    for name, content in render(results_dir, out_dir, include_quick, registry).items():
        path = Path(out_dir) / name
        if not path.exists() or path.read_text() != content:
            stale.append(name)
    return stale


def check_files(results_dir: Path, out_dir: Path, include_quick: bool = False,
                registry: Optional["Registry"] = None) -> list[str]:
    """One line per problem with the files beside the text: a PNG in ``out_dir`` that the
    current render would not write (an orphan), a PNG it would write that is missing, and an
    image link in the ``README.md`` on disk to a file that does not exist."""
    registry = _registry(registry)
    out_dir = Path(out_dir)
    all_sections = load_sections(results_dir, out_dir, include_quick)
    with tempfile.TemporaryDirectory() as scratch:
        drawn = {p.name for p in _draw_plots(all_sections, registry, Path(scratch))}
    kept = _kept_plots(_kept_sections(all_sections, registry, out_dir), all_sections, out_dir)
    present = {p.name for p in out_dir.glob("*.png")}
    problems = [f"orphan plot {out_dir / name}: no section draws it (run `harness leaderboard`, or delete it)"
                for name in sorted(present - drawn - kept)]
    problems += [f"missing plot {out_dir / name}: run `harness leaderboard`" for name in sorted(drawn - present)]
    readme = out_dir / README_NAME
    if readme.exists():
        for target in _IMAGE_LINK.findall(readme.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, not a file here
            if not (out_dir / target.split("#")[0]).exists():
                problems.append(f"broken image link in {readme}: {target} does not exist")
    return problems
