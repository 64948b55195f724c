"""Every leaderboard figure that README.md and docs/*.md quote is checked against the committed
records: each carries a claim marker (``<!-- claim: QUERY -->0.954``) whose query
:mod:`harness.leaderboard.claims` recomputes, a figure shaped like an AUROC or an accuracy in a
results paragraph without one fails, and editing one record (a metric or a score) fails the check.
After the records are regenerated: ``python -m harness.leaderboard.claims --update``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.leaderboard import claims
from harness.leaderboard.claims import Allowed, ClaimError, Query
from harness.scoring import auroc, scored_items
from tasks.mad.columns import COLUMNS, column_cell

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "leaderboard" / "records"
DOCUMENTS = claims.documents(ROOT)


def mad_metrics(record: dict) -> dict[str, float]:
    """Every MAD column's AUROC from the record's scores, as the task defines the column."""
    labels, scores = np.asarray(record["labels"]), np.asarray(record["scores"], dtype=float)
    tags = {k: np.asarray(v) for k, v in (record.get("tags") or {}).items()}
    cells = {key: column_cell(labels, scores, tags, column, scored_items(record)) for column, key in COLUMNS.items()}
    return {key: auroc(y, s) for key, (y, s, _) in cells.items()}


RECOMPUTE = {"mad": mad_metrics}


def check(records: Path) -> list[str]:
    return claims.check(ROOT, records, recompute=RECOMPUTE)


# -- the committed documents and records ---------------------------------------------------------
def marked() -> list[claims.Claim]:
    found = []
    for document in DOCUMENTS:
        found += claims.find_claims((ROOT / document).read_text(), document)[0]
    return found


def test_every_marked_figure_is_what_the_records_give():
    problems = claims.check(ROOT, recompute=RECOMPUTE)  # every page's records: tiny and pretrained
    hint = ["a figure the records moved: python -m harness.leaderboard.claims --update rewrites it; a record whose "
            "stored metric is not what its scores give was edited by hand or by another metric's code"]
    assert not problems, "\n".join(problems + hint)


def test_the_readme_and_the_mad_doc_quote_through_markers():
    by_document = {d: sum(c.document == d for c in marked()) for d in DOCUMENTS}
    assert by_document["README.md"] >= 10 and by_document["docs/mad.md"] >= 10


@pytest.mark.parametrize("document", [
    pytest.param(d, marks=pytest.mark.xfail(strict=True, reason=(
        f"{d}: {claims.PENDING[d]}. Once it passes, remove it from harness.leaderboard.claims.PENDING")))
    if d in claims.PENDING else d
    for d in DOCUMENTS])
def test_no_unmarked_leaderboard_figure(document):
    problems, pending = claims.scan(ROOT, [document])
    assert not problems and not pending, "\n".join(problems + pending)


def copy_records(tmp_path: Path) -> Path:
    copied = tmp_path / "records"
    shutil.copytree(RECORDS, copied)
    return copied


def a_single_record_claim(field: str = "") -> tuple[claims.Claim, Path]:
    """A marked figure that one record alone gives (aggregate ``value``, a number printed to at
    least two decimals; of ``field`` if given), and that record's file."""
    records = claims.load_records(RECORDS)
    for claim in marked():
        query = Query.parse(claim.query)
        numbers, shape = claims.figure_numbers(claim.figure)
        matched = [r for r in records if query.matches(r)]
        if (query.aggregate == "value" and shape == "scalar" and claims._decimals(numbers[0]) >= 2
                and len(matched) == 1 and query.field == (field or query.field)):
            return claim, Path(matched[0]["_path"])
    pytest.fail(f"no marked figure {'of ' + field + ' ' if field else ''}comes from a single record")


def test_editing_one_records_metric_fails_the_check(tmp_path):
    claim, path = a_single_record_claim()
    copied = copy_records(tmp_path)
    assert check(copied) == []
    edited = copied / path.relative_to(RECORDS)
    record = json.loads(edited.read_text())
    query = Query.parse(claim.query)
    node = record["metrics"] if query.field.split(".")[0] in record["metrics"] else record
    *parents, last = query.field.split(".")
    for part in parents:
        node = node[part]
    node[last] = node[last] - 0.25 if node[last] >= 0.5 else node[last] + 0.25
    edited.write_text(json.dumps(record))
    problems = check(copied)
    assert any(p.startswith(f"{claim.document}:{claim.line}: prints {claim.figure} but the records give")
               for p in problems), problems


def test_editing_one_records_scores_fails_the_check(tmp_path):
    # any scored MAD record: its stored metrics are recomputed from its scores
    path = next(Path(r["_path"]) for r in claims.load_records(RECORDS)
                if r["task"] == "mad" and r["status"] == "ok" and not r["dataset"].endswith("_control")
                and r["detector"] == "activations_mahalanobis")
    copied = copy_records(tmp_path)
    edited = copied / path.relative_to(RECORDS)
    record = json.loads(edited.read_text())
    record["scores"] = [-s for s in record["scores"]]  # the same metrics, reversed scores
    edited.write_text(json.dumps(record))
    problems = check(copied)
    assert any(p.startswith(f"{edited}: stored auroc ") and "but its scores give" in p for p in problems), problems


# -- the query language, on records made here ---------------------------------------------------
def rec(detector: str, dataset: str, seed: int, auroc: float, *, valid: bool = True, **extra) -> dict:
    return {"task": "mad", "detector": detector, "dataset": dataset, "seed": seed, "status": "ok" if valid else "invalid",
            "valid": valid, "source": "generated", "metrics": {"auroc": auroc, "auroc_ci": [auroc - 0.1, auroc + 0.1]},
            **extra}


RECS = [
    rec("a", "add", 0, 0.90), rec("a", "add", 1, 0.80), rec("a", "sub", 0, 0.70), rec("a", "sub", 1, 0.60),
    rec("a", "mul", 0, 0.10),  # one valid seed: the dataset does not count in 'mean'
    rec("a", "mul", 1, 0.20, valid=False, validity={"bob_accuracy": 0.8457}),
    rec("b", "mul", 1, 0.30, valid=False, validity={"bob_accuracy": 0.8457}),
    rec("a", "add_control", 0, 0.52), rec("b", "add_control", 0, 0.47), rec("name_only", "add_control", 0, 0.55),
    rec("a", "add", 2, 0.99, quick=True),  # quick runs never count
]


def value(query: str) -> object:
    return claims.evaluate(Query.parse(query), RECS)


def test_mean_is_the_leaderboards_average_over_counting_datasets():
    assert value("mad a auroc mean") == pytest.approx((0.85 + 0.65) / 2)
    assert value("mad a auroc mean min_seeds=1") == pytest.approx((0.85 + 0.65 + 0.10) / 3)
    assert value("mad a auroc dataset_range") == pytest.approx((0.65, 0.85))
    assert value("mad a auroc max") == pytest.approx(0.90)


def test_filters_and_patterns():
    assert value("mad *,!name_only auroc range control=yes") == pytest.approx((0.47, 0.52))
    assert value("mad * auroc range control=any dataset=add*") == pytest.approx((0.47, 0.90))
    assert value("mad * - count valid=no") == 2 and value("mad * - models valid=any") == 6
    assert value("mad * validity.bob_accuracy value valid=no") == pytest.approx(0.8457)
    assert value("mad a auroc_ci value dataset=add seed=0") == pytest.approx((0.8, 1.0))
    assert value("mad a auroc_ci.1 value dataset=add seed=0") == pytest.approx(1.0)


@pytest.mark.parametrize("query, message", [
    ("mad a auroc", "a claim is"),
    ("mad a auroc median", "unknown aggregate"),
    ("mad a auroc mean colour=red", "bad filter"),
    ("mad a auroc mean valid=maybe", "valid= takes"),
    ("mad zzz auroc mean", "matches no record"),
    ("mad a auroc value", "records differ"),
    ("mad a nothing max", "has no 'nothing'"),
])
def test_bad_queries_say_why(query, message):
    with pytest.raises(ClaimError, match=message):
        value(query)


@pytest.mark.parametrize("figure, actual, ok", [
    ("0.850", 0.8504, True), ("0.850", 0.8506, False), ("1.000", 0.99951, True), ("0.85", 0.8549, True),
    ("0.65-0.85", (0.65, 0.85), True), ("[0.700, 1.000]", (0.7, 1.0), True), ("[0.700, 1.000]", (0.7, 0.99), False),
])
def test_a_figure_is_compared_at_its_printed_precision(figure, actual, ok):
    assert (claims.render(actual, figure) == figure) is ok


def test_a_range_figure_needs_a_pair():
    with pytest.raises(ClaimError, match="prints"):
        claims.render(0.5, "0.4-0.6")


def test_update_rewrites_figures_at_their_precision_and_shape():
    text = ("AUROC <!-- claim: mad a auroc mean -->0.123 and <!-- claim: mad a auroc dataset_range -->0.10-0.20,\n"
            "interval <!-- claim: mad a auroc_ci value dataset=sub seed=1 -->[0.0, 0.0]; "
            "<!-- claim: mad zzz auroc mean -->0.5 is left.\n")
    new, notes = claims.update_text(text, RECS, "doc.md")
    assert "-->0.750 and" in new and "-->0.65-0.85," in new and "-->[0.5, 0.7];" in new and "-->0.5 is left" in new
    assert any("not updated" in n and "matches no record" in n for n in notes)
    assert [c for c in claims.find_claims(new)[0] if claims.check_claim(c, RECS)] == [claims.find_claims(new)[0][-1]]


def test_markers_without_a_figure_or_at_a_line_start_are_reported():
    _, problems = claims.find_claims("x <!-- claim: mad a auroc mean --> 0.75\n<!-- claim: mad a auroc mean -->0.75\n", "d.md")
    assert len(problems) == 2 and "not followed by a figure" in problems[0] and "starts a line" in problems[1]


def test_the_scan_finds_unmarked_figures_in_result_paragraphs_only(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text(
        "# X\n\nThe detector's AUROC is 0.912, and <!-- claim: mad a auroc mean -->0.750 is marked.\n\n"
        "A learning rate of 0.0015 in a paragraph about training.\n\n"
        "```\nAUROC 0.555 in a code block\n```\n\n"
        "## Published\n\nTheir AUROC avg 0.762 and 0.99-1.00.\n")
    problems, _ = claims.scan(tmp_path, ["docs/x.md"], allowed=())
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == ["0.912", "0.762", "0.99-1.00"]
    allowed = (Allowed("docs/x.md", "Published", ("*",), "published"), Allowed("docs/x.md", "X", ("0.912", "0.3"), "?"))
    problems, _ = claims.scan(tmp_path, ["docs/x.md"], allowed=allowed)
    assert problems == ["docs/x.md: the allowlist entry for '0.3' under 'X' matches nothing "
                        "(remove it from harness.leaderboard.claims.ALLOWED)"]


def test_the_command_line_updates_then_checks(tmp_path, capsys):
    records = tmp_path / "leaderboard" / "records"
    records.mkdir(parents=True)
    for k, r in enumerate(RECS):
        (records / f"{k}.json").write_text(json.dumps(r))
    readme = tmp_path / "README.md"
    readme.write_text("| `a` | mad | <!-- claim: mad a auroc mean -->0.111 |\n")
    assert claims.main(["--root", str(tmp_path)]) == 1
    assert "prints 0.111 but the records give 0.750" in capsys.readouterr().err
    assert claims.main(["--root", str(tmp_path), "--update"]) == 0
    assert readme.read_text() == "| `a` | mad | <!-- claim: mad a auroc mean -->0.750 |\n"
