"""Figures that README.md and docs/*.md quote from the leaderboard, checked against the records.

A quoted figure carries, right before it, an HTML comment naming the records it comes from::

    <!-- claim: mad activations_mahalanobis auroc mean -->0.954
    <!-- claim: mad name_only auroc range control=yes -->0.48-0.55
    <!-- claim: poser activation_noise pair_accuracy_ci value -->[0.333, 1.000]

The query is ``TASK DETECTORS FIELD AGGREGATE [KEY=VALUE ...]``:

* ``TASK``: the records' task (``mad``, ``poser``).
* ``DETECTORS``: comma-separated shell patterns of detector names; ``!pattern`` leaves out what
  it matches (``*,!name_only,!input_only``: every detector but the two baselines).
* ``FIELD``: a dotted path into the record's ``metrics`` (``auroc``, ``pair_accuracy_ci``), or,
  when ``metrics`` has no such key, into the record (``validity.bob_accuracy``); a number
  indexes a list (``pair_accuracy_ci.0``). ``n_items`` is the number of scored-or-not items,
  ``n_scored`` the number the detector scored; ``-`` where the aggregate needs no field.
* ``AGGREGATE`` (each AUROC is the record's own, stored under ``metrics``):

  - ``mean``: the leaderboard's average: per dataset the mean over its records (its valid
    seeds), a dataset counting when it has at least ``min_seeds`` of them (MAD: 2), then the
    mean over the counting datasets;
  - ``dataset_min`` / ``dataset_max`` / ``dataset_range``: the same per-dataset means' least,
    greatest, or both (printed ``lo-hi``);
  - ``min`` / ``max`` / ``range`` / ``sum``: over the matching records;
  - ``value``: the one value every matching record shares (a model's gate accuracy, shared by
    every detector's record of it; a list field of two numbers prints as ``[lo, hi]``);
  - ``count``: the number of matching records; ``models``: of distinct (dataset, seed) pairs.

* Filters: ``dataset=`` (patterns), ``seed=`` (numbers), ``control=no|yes|any`` (a dataset whose
  name ends in ``_control``; default ``no``), ``valid=yes|no|any`` (``yes``: status ok and
  the model passed the gate, the records the leaderboard scores; default ``yes``),
  ``source=`` (default ``generated``: the tasks' own models, as the headline quotes them),
  ``min_seeds=``.

A figure is compared with the records' value printed at the figure's own precision (``0.99``:
two decimals; ``758``: an integer), so it fails exactly when the printed figure would change.
Where the caller says how a task's metrics follow from a record's scores (``recompute``: the
task's own definitions of which items each AUROC compares; tests/docs/test_claims.py gives
MAD's, from ``tasks/mad/columns.py``), every stored metric must be what the record's scores
give: an edited score fails the check even where no figure quotes it.

Unmarked figures: in README.md and docs/*.md, a number that looks like an AUROC or an accuracy
(``0.xx...``, ``1.00...``) in a paragraph or table that speaks of AUROCs, scores, accuracies
or Wilson bounds must be marked, or be listed in :data:`ALLOWED` with the reason it is not a
leaderboard figure (published numbers, measurements of other models). An entry of
:data:`ALLOWED` that no longer matches anything is reported too, so the list cannot rot.

``python -m harness.leaderboard.claims`` checks; ``--update`` rewrites every marked figure from
the records (at its printed precision) after the records are regenerated, then checks.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from harness.records import BOARDS, iter_records
from harness.scoring import auroc, scored_items
from harness.leaderboard.report import record_source

ROOT = Path(__file__).resolve().parents[2]

Value = Union[float, tuple[float, float]]

AGGREGATES = ("mean", "dataset_min", "dataset_max", "dataset_range", "min", "max", "range", "sum",
              "value", "count", "models")
FILTERS = ("dataset", "seed", "control", "valid", "source", "min_seeds")
DEFAULT_FILTERS = {"control": "no", "valid": "yes", "source": "generated"}
MIN_SEEDS = {"mad": 2}  # the MAD leaderboard counts a dataset with at least two valid seeds

NUMBER = r"-?\d+(?:\.\d+)?"
FIGURE = rf"\[{NUMBER}, {NUMBER}\]|{NUMBER}(?:-\d+(?:\.\d+)?)?"
MARKER = re.compile(rf"<!--\s*claim:\s*(?P<query>.*?)\s*-->(?P<figure>{FIGURE})?", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
# a number shaped like an AUROC or an accuracy, in a paragraph that speaks of them; one after a
# comparison ("p < 0.05", "quantile > 0.75") is a threshold, and one with a unit ("0.96 GiB") a
# measurement: neither is a result
CANDIDATE = re.compile(r"(?<![\w.])(?<![<>=] )(?<![<>=])(?:0\.\d{2,}|1\.00+)(?!\d)(?!\.\d)"
                       r"(?! ?(?:[KMG]i?B|ms|s|min|h|%|x)\b)")
RESULT_WORDS = re.compile(r"AUROC|pair accuracy|accurac(?:y|ies)|Wilson|\bscor(?:es?|ed|ing)\b|\bfloor\b", re.I)


class ClaimError(ValueError):
    """A marker whose query cannot be evaluated (bad syntax, no matching record, ...)."""


@dataclass(frozen=True)
class Allowed:
    """Unmarked figures a document may quote under one heading, and why they are no
    leaderboard figures. ``figures=("*",)``: every figure of that section."""

    document: str
    heading: str
    figures: tuple[str, ...]
    reason: str


ALLOWED: tuple[Allowed, ...] = (
    Allowed("docs/mad.md", "Published figures", ("*",),
            "the seed's Table 1, published on other models; never computed from our records"),
    Allowed("docs/mad.md", "Two frames: seeing the trigger vs detecting the mechanism", ("0.999",),
            "the one-frame board's name_only figure, quoted as what the two frames answer; not in the new records"),
    Allowed("docs/mad.md", "The split", ("0.383", "0.620", "0.51"),
            "issue 23's recomputation of the one-frame no-quirk controls (published vs matched normals); history"),
    Allowed("docs/mad.md", "The models and the recipe", ("0.33", "0.44", "0.01-0.05", "0.746", "0.794"),
            "the earlier 5,000-step recipe's seed-0 models, which are not among the records"),
    Allowed("docs/mad.md", "The validity gate", ("0.85",),
            "what the 0.8 gate needs at ~190 items per character: arithmetic, not a result"),
    Allowed("docs/reproducing-models.md", "Why training differs between machines", ("*",),
            "models retrained on other CPU kernels for the reproduction study, not leaderboard records"),
    Allowed("docs/reproducing-models.md", "Retraining: `harness zoo retrain`", ("*",),
            "models retrained here beside the shipped ones' records: the reproduction report, not leaderboard figures"),
    Allowed("docs/reproducing-models.md", "Scoring on another machine", ("*",),
            "differences between re-runs under emulated kernels and tolerances, not leaderboard figures"),
    Allowed("docs/benchmarks.md", "Reproducing models across CPUs", ("*",),
            "an earlier recipe's models retrained on other CPUs (the same study as docs/reproducing-models.md)"),
    Allowed("docs/benchmarks.md", "Storing the models in float16", ("*",),
            "changes between the float32 records (git history) and the float16 ones; the one current average is marked"),
    Allowed("docs/pretrained.md", "The leaderboard's pretrained page", ("0.019", "0.001", "0.0004", "0.027"),
            "changes between the float32 adapters' records and the page's float16 ones, not leaderboard figures"),
    Allowed("docs/pretrained.md", "What it measures so far", ("*",),
            "the pretrained tier's first runs, on the float32 version-1 adapters; the page holds the float16 ones"),
    Allowed("docs/pretrained.md", "All twelve detectors of Table 1 on hemisphere, two seeds", ("*",),
            "the float32 version-1 adapters' records (the page holds the float16 ones); Table 1's are published"),
    Allowed("docs/pretrained.md", "POSER on the pretrained base", ("*",),
            "persona adapters' first run, on the float32 version-1 adapters; the page holds the float16 ones"),
    Allowed("docs/pretrained.md", "Choosing the adapter", ("*",),
            "validation accuracies and losses of trial adapters along their training; none is a page's model"),
    Allowed("docs/pretrained.md", "The page's records on another CPU", ("*",),
            "the page's jobs re-scored on an AVX2 machine and their changes from the page: not the page's records"),
    Allowed("docs/benchmarks.md", "2026-12-05: a repeatable compiled path, and how far early stopping goes", ("*",),
            "gate results of models trained by candidate training paths and along one run; none is a shipped model"),
)
# Documents whose figures are not marked yet, with who marks them: reported apart, not failed.
PENDING = {
    "docs/poser.md": "rewritten for issue 23's POSER with power; its figures get markers with the new records",
}


# -- queries -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    task: str
    detectors: tuple[str, ...]
    field: str
    aggregate: str
    filters: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "Query":
        words = text.split()
        if len(words) < 4:
            raise ClaimError(f"'{text}': a claim is 'TASK DETECTORS FIELD AGGREGATE [KEY=VALUE ...]'")
        task, detectors, path, aggregate, *rest = words
        if aggregate not in AGGREGATES:
            raise ClaimError(f"'{text}': unknown aggregate '{aggregate}' (one of {', '.join(AGGREGATES)})")
        filters = dict(DEFAULT_FILTERS)
        filters["min_seeds"] = str(MIN_SEEDS.get(task, 1))
        for word in rest:
            key, sep, value = word.partition("=")
            if not sep or key not in FILTERS or not value:
                raise ClaimError(f"'{text}': bad filter '{word}' (KEY=VALUE, KEY one of {', '.join(FILTERS)})")
            filters[key] = value
        for key, allowed in (("control", ("yes", "no", "any")), ("valid", ("yes", "no", "any"))):
            if filters[key] not in allowed:
                raise ClaimError(f"'{text}': {key}= takes {'|'.join(allowed)}")
        if path == "-" and aggregate not in ("count", "models"):
            raise ClaimError(f"'{text}': '{aggregate}' needs a field")
        return cls(task, tuple(detectors.split(",")), path, aggregate, filters, " ".join(words))

    def matches(self, record: dict[str, Any]) -> bool:
        if record.get("task") != self.task or record.get("quick"):
            return False
        if not _patterns_match(self.detectors, str(record.get("detector", ""))):
            return False
        dataset = str(record.get("dataset", ""))
        f = self.filters
        if "dataset" in f and not _patterns_match(tuple(f["dataset"].split(",")), dataset):
            return False
        if "seed" in f and str(record.get("seed")) not in f["seed"].split(","):
            return False
        control = dataset.endswith("_control")
        if f["control"] != "any" and control != (f["control"] == "yes"):
            return False
        scored = record.get("status") == "ok" and record.get("valid") is True
        if f["valid"] != "any" and scored != (f["valid"] == "yes"):
            return False
        return fnmatch.fnmatchcase(record_source(record), f["source"])


def _patterns_match(patterns: Sequence[str], name: str) -> bool:
    keep = [p for p in patterns if not p.startswith("!")]
    drop = [p[1:] for p in patterns if p.startswith("!")]
    return any(fnmatch.fnmatchcase(name, p) for p in keep) and not any(fnmatch.fnmatchcase(name, p) for p in drop)


def field_value(record: dict[str, Any], path: str) -> Any:
    """The record's value at ``path`` (see the module's docstring)."""
    if path == "n_items":
        return len(record.get("scores") or [])
    if path == "n_scored":
        return int(scored_items(record).sum()) if record.get("scores") else 0
    parts = path.split(".")
    metrics = record.get("metrics") or {}
    node: Any = metrics if parts[0] in metrics else record
    for part in parts:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ClaimError(f"record {_name(record)} has no '{path}'")
    return node


def _number(record: dict[str, Any], path: str) -> float:
    value = field_value(record, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ClaimError(f"record {_name(record)}: '{path}' is {value!r}, not a number")
    return float(value)


def _name(record: dict[str, Any]) -> str:
    return f"{record.get('task')}/{record.get('dataset')}/{record.get('detector')} seed {record.get('seed')}"


def evaluate(query: Query, records: Iterable[dict[str, Any]]) -> Value:
    """The query's value over ``records``: a number, or a (low, high) pair."""
    matched = [r for r in records if query.matches(r)]
    if not matched:
        raise ClaimError(f"'{query.text}' matches no record")
    agg = query.aggregate
    if agg == "count":
        return float(len(matched))
    if agg == "models":
        return float(len({(r.get("dataset"), r.get("seed")) for r in matched}))
    if agg == "value":
        values = {_shared(field_value(r, query.field), r, query.field) for r in matched}
        if len(values) > 1:
            raise ClaimError(f"'{query.text}': the {len(matched)} matching records differ ({sorted(values)[:4]})")
        return values.pop()
    numbers = [_number(r, query.field) for r in matched]
    if agg in ("min", "max", "range", "sum"):
        return {"min": min(numbers), "max": max(numbers), "sum": float(sum(numbers)),
                "range": (min(numbers), max(numbers))}[agg]
    per_dataset: dict[str, list[float]] = {}
    for r, number in zip(matched, numbers):
        per_dataset.setdefault(str(r.get("dataset")), []).append(number)
    means = [mean(v) for v in per_dataset.values() if len(v) >= int(query.filters["min_seeds"])]
    if not means:
        raise ClaimError(f"'{query.text}': no dataset has {query.filters['min_seeds']} matching records")
    return {"mean": mean(means), "dataset_min": min(means), "dataset_max": max(means),
            "dataset_range": (min(means), max(means))}[agg]


def _shared(value: Any, record: dict[str, Any], path: str) -> Value:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return (float(value[0]), float(value[1]))
    return _number(record, path)


# -- figures -----------------------------------------------------------------------------------
def _decimals(number: str) -> int:
    return len(number.partition(".")[2])


def figure_numbers(figure: str) -> tuple[list[str], str]:
    """The printed numbers of a figure and its shape: ``scalar``, ``range`` (lo-hi) or ``interval``."""
    if figure.startswith("["):
        return [x.strip() for x in figure.strip("[]").split(",")], "interval"
    low, sep, high = figure[1:].partition("-")  # a leading minus is the number's own
    return ([figure[0] + low, high], "range") if sep else ([figure], "scalar")


def render(value: Value, figure: str) -> str:
    """``value`` printed as ``figure`` is: the same shape, each number at its own precision."""
    printed, shape = figure_numbers(figure)
    values = [value] if not isinstance(value, tuple) else list(value)
    if len(values) != len(printed):
        kind = "a pair" if len(values) == 2 else "one number"
        raise ClaimError(f"the query gives {kind}; the text prints '{figure}'")
    text = [f"{v:.{_decimals(p)}f}" for v, p in zip(values, printed)]
    return {"scalar": "{}", "range": "{}-{}", "interval": "[{}, {}]"}[shape].format(*text)


@dataclass
class Claim:
    document: str
    line: int
    start: int  # the figure's span in the document's text
    end: int
    query: str
    figure: str


def find_claims(text: str, document: str = "") -> tuple[list[Claim], list[str]]:
    """(the marked figures of a document, problems: a marker with no figure after it)."""
    claims, problems = [], []
    for match in MARKER.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if not text[text.rfind("\n", 0, match.start()) + 1:match.start()].strip():
            problems.append(f"{document}:{line}: a claim marker that starts a line ends the paragraph there "
                            "(Markdown reads it as an HTML block): put a word before it")
        if match.group("figure") is None:
            problems.append(f"{document}:{line}: claim marker '{match.group('query')}' is not followed by a figure")
            continue
        claims.append(Claim(document, line, match.start("figure"), match.end("figure"),
                            match.group("query"), match.group("figure")))
    return claims, problems


def check_claim(claim: Claim, records: list[dict[str, Any]]) -> Optional[str]:
    """None if the claim's figure is what the records give, else the problem."""
    where = f"{claim.document}:{claim.line}"
    try:
        expected = render(evaluate(Query.parse(claim.query), records), claim.figure)
    except ClaimError as exc:
        return f"{where}: {exc}"
    if expected != claim.figure:
        return f"{where}: prints {claim.figure} but the records give {expected} ({claim.query})"
    return None


def update_text(text: str, records: list[dict[str, Any]], document: str = "") -> tuple[str, list[str]]:
    """``text`` with every marked figure rewritten from the records, and what changed (or could
    not be evaluated: those are left as they are and reported)."""
    claims, notes = find_claims(text, document)
    for claim in reversed(claims):
        try:
            new = render(evaluate(Query.parse(claim.query), records), claim.figure)
        except ClaimError as exc:
            notes.append(f"{claim.document}:{claim.line}: not updated: {exc}")
            continue
        if new != claim.figure:
            text = text[:claim.start] + new + text[claim.end:]
            notes.append(f"{claim.document}:{claim.line}: {claim.figure} -> {new} ({claim.query})")
    return text, notes


# -- records -----------------------------------------------------------------------------------
def load_records(records_dir: Path) -> list[dict[str, Any]]:
    """Every record under ``records_dir`` except quick runs."""
    return [r for r in iter_records(Path(records_dir)) if not r.get("quick")]


def leaderboard_records(root: Path, records_dir: Optional[Path] = None) -> list[dict[str, Any]]:
    """The records under ``records_dir``; by default those of every page of the leaderboard
    (:data:`harness.records.BOARDS`: the tiny models' and the pretrained tier's; a figure
    names its page's models with ``source=``)."""
    if records_dir is not None:
        return load_records(records_dir)
    return [r for board in BOARDS if (root / board / "records").is_dir() for r in load_records(root / board / "records")]


Recompute = Callable[[dict[str, Any]], dict[str, float]]


def record_problems(records: Iterable[dict[str, Any]], recompute: Optional[Mapping[str, Recompute]] = None) -> list[str]:
    """Records whose stored metrics are not what their own scores give. ``recompute``: task ->
    a function of a record giving metric key -> value from its labels, scores and tags (the
    task's own definitions: which items each AUROC compares); a task without one is not checked
    (the harness cannot know a plugin's metric). Every key both hold is compared."""
    problems = []
    for r in records:
        again = (recompute or {}).get(str(r.get("task")))
        if again is None or r.get("status") != "ok" or not r.get("scores") or not r.get("labels"):
            continue
        stored = r.get("metrics") or {}
        for key, actual in again(r).items():
            value = stored.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not (math.isnan(actual) and math.isnan(value)) and not abs(actual - value) <= 1e-9:
                problems.append(f"{r.get('_path', _name(r))}: stored {key} {value:.6f} but its scores give {actual:.6f}")
    return problems


# -- unmarked figures --------------------------------------------------------------------------
@dataclass
class Block:
    line: int
    heading: str
    text: str  # with code blocks blanked


def blocks(text: str) -> list[Block]:
    """Paragraphs and tables (runs of non-blank lines) with the heading they sit under; fenced
    code is left out."""
    found: list[Block] = []
    heading, in_code, current, start = "", False, [], 0
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            line = ""
        elif in_code:
            line = ""
        elif re.match(r"#{1,6} ", line):
            heading = line.lstrip("#").strip()
            line = ""
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            found.append(Block(start, heading, "\n".join(current)))
            current = []
    return found


@dataclass
class Unmarked:
    document: str
    line: int
    heading: str
    figure: str


def unmarked_figures(text: str, document: str) -> list[Unmarked]:
    """Figures shaped like AUROCs or accuracies in result paragraphs, with no claim marker."""
    found = []
    for block in blocks(text):
        if not RESULT_WORDS.search(COMMENT.sub(" ", block.text)):
            continue
        covered = [(m.start(), m.end()) for m in MARKER.finditer(block.text)]
        covered += [(m.start(), m.end()) for m in COMMENT.finditer(block.text)]
        seen = set()
        for match in CANDIDATE.finditer(block.text):
            if any(a <= match.start() < b for a, b in covered):
                continue
            start, figure = _whole_figure(block.text, match)
            if start in seen:  # the other end of a range already reported
                continue
            seen.add(start)
            line = block.line + block.text.count("\n", 0, start)
            found.append(Unmarked(document, line, block.heading, figure))
    return found


def _whole_figure(text: str, match: re.Match[str]) -> tuple[int, str]:
    """(start, printed figure) around a candidate number: ``0.99-1.00`` for either end of a range."""
    for m in re.finditer(rf"(?<![\w.]){NUMBER}(?:-\d+(?:\.\d+)?)?", text):
        if m.start() <= match.start() < m.end():
            return m.start(), m.group()
    return match.start(), match.group()


def _allowed(figure: Unmarked, allowed: Sequence[Allowed]) -> Optional[Allowed]:
    for entry in allowed:
        if entry.document == figure.document and entry.heading == figure.heading and (
                entry.figures == ("*",) or figure.figure in entry.figures):
            return entry
    return None


def scan(root: Path, documents: Sequence[str], allowed: Sequence[Allowed] = ALLOWED) -> tuple[list[str], list[str]]:
    """(problems, pending): unmarked figures that are not allowed, and allowlist entries that
    match nothing, in ``documents`` (paths relative to ``root``); figures of :data:`PENDING`
    documents are returned apart, as pending."""
    problems, pending, used = [], [], set()
    for document in documents:
        for figure in unmarked_figures((root / document).read_text(), document):
            entry = _allowed(figure, allowed)
            if entry is not None:
                used.add((entry, figure.figure if entry.figures != ("*",) else "*"))
                continue
            message = (f"{document}:{figure.line}: {figure.figure} (under '{figure.heading}') looks like a "
                       "leaderboard figure but has no claim marker")
            (pending if document in PENDING else problems).append(message)
    for entry in allowed:
        if entry.document not in documents:
            continue
        for fig in entry.figures:
            if (entry, fig) not in used:
                problems.append(f"{entry.document}: the allowlist entry for '{fig}' under '{entry.heading}' "
                                "matches nothing (remove it from harness.leaderboard.claims.ALLOWED)")
    return problems, pending


def documents(root: Path) -> list[str]:
    """README.md and docs/*.md, relative to ``root``."""
    found = ["README.md"] if (root / "README.md").exists() else []
    return found + sorted(str(p.relative_to(root)) for p in (root / "docs").glob("*.md"))


# -- the whole check ---------------------------------------------------------------------------
def check(root: Path = ROOT, records_dir: Optional[Path] = None, docs: Optional[Sequence[str]] = None,
          recompute: Optional[Mapping[str, Recompute]] = None) -> list[str]:
    """Every problem with the marked figures of ``docs`` (default: :func:`documents`) against the
    records in ``records_dir`` (default: every page's, :func:`leaderboard_records`), and with
    those records (:func:`record_problems` with ``recompute``)."""
    records = leaderboard_records(root, records_dir)
    problems = record_problems(records, recompute)
    for document in (docs if docs is not None else documents(root)):
        claims, marker_problems = find_claims((root / document).read_text(), document)
        problems += marker_problems
        problems += [p for p in (check_claim(c, records) for c in claims) if p]
    return problems


def update(root: Path = ROOT, records_dir: Optional[Path] = None,
           docs: Optional[Sequence[str]] = None) -> list[str]:
    """Rewrite every marked figure of ``docs`` from the records; returns what changed."""
    records = leaderboard_records(root, records_dir)
    notes = []
    for document in (docs if docs is not None else documents(root)):
        path = root / document
        text = path.read_text()
        new, changed = update_text(text, records, document)
        if new != text:
            path.write_text(new)
        notes += changed
    return notes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.leaderboard.claims", description=(
        "Check the leaderboard figures quoted in README.md and docs/*.md against the records."))
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this checkout)")
    parser.add_argument("--records", type=Path, default=None, help="records directory (default: every page's, ROOT/leaderboard/records and "
                             "ROOT/leaderboard/pretrained/records)")
    parser.add_argument("--update", action="store_true", help="rewrite every marked figure from the records first")
    parser.add_argument("documents", nargs="*", help="documents relative to ROOT (default: README.md, docs/*.md)")
    args = parser.parse_args(argv)
    docs = args.documents or documents(args.root)
    if args.update:
        for note in update(args.root, args.records, docs):
            print(note)
    problems = check(args.root, args.records, docs)
    unmarked, pending = scan(args.root, docs)
    for line in problems + unmarked:
        print(line, file=sys.stderr)
    for line in pending:
        print(f"pending ({PENDING[line.split(':')[0]]}): {line}", file=sys.stderr)
    if problems or unmarked:
        print(f"{len(problems) + len(unmarked)} problem(s)", file=sys.stderr)
        return 1
    print(f"every marked figure in {len(docs)} documents is what the records give")
    return 0


if __name__ == "__main__":
    sys.exit(main())
