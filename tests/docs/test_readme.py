"""README.md stays short and true: at most 150 lines, the two commands a newcomer copies (the
test one is CI's last line), every leaderboard number it quotes equal to what the committed
records give, and every relative link in it and in docs/benchmarks.md pointing at a file (and heading)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from statistics import mean

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RECORDS = ROOT / "leaderboard" / "records"

RUN_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . "
               "&& harness run --task mad --detector basin_mahalanobis --jobs 2")
TEST_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
                'pip install -e ".[dev,ray,data,pretrained]" && python -m pytest')


def headline() -> str:
    """The README's leaderboard section: from its heading to the next one."""
    match = re.search(r"^## [^\n]*[Ll]eaderboard[^\n]*headline[^\n]*\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, "README.md has no '## ... leaderboard ... headline' section"
    return match.group(1)


def records(task: str) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted((RECORDS / task).rglob("*.json"))]
    assert found, f"no committed records under {RECORDS / task}"
    return [r for r in found if not r.get("quick")]


def scored(record: dict) -> bool:
    return record.get("status") == "ok" and bool(record.get("valid"))


MAD_COLUMNS = ("auroc_mechanism", "auroc_trigger_only", "auroc")  # the headline's order


def mad_auroc_avg(metric: str = "auroc") -> dict[str, float]:
    """Detector -> AUROC avg of ``metric`` as the leaderboard defines it: per quirky dataset the
    mean over its valid seeds, a dataset counting when at least two seeds are valid; then the
    mean over datasets."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records("mad"):
        if scored(r) and not r["dataset"].endswith("_control"):
            cells[(r["detector"], r["dataset"])].append(r["metrics"][metric])
    per_detector: dict[str, list[float]] = defaultdict(list)
    for (detector, _), aurocs in cells.items():
        if len(aurocs) >= 2:
            per_detector[detector].append(mean(aurocs))
    return {detector: mean(values) for detector, values in per_detector.items()}


def poser_records() -> dict[str, dict]:
    return {r["detector"]: r for r in records("poser") if scored(r)}


def headline_rows() -> list[tuple[str, str, list[float]]]:
    """(detector, task, numbers) of each table row of the headline: ``| `name` ... | task | 0.954 | [lo, hi] |``."""
    rows = []
    for line in headline().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.match(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if name and len(cells) >= 3:
            numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", " ".join(cells[2:]))]
            rows.append((name.group(1), cells[1], numbers))
    return rows


def close(quoted: float, actual: float) -> bool:
    return abs(quoted - actual) <= 0.0005 + 1e-9  # quoted to three decimals


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_both_commands_are_there_verbatim():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert f"{RUN_COMMAND}\n" in blocks
    assert f"{TEST_COMMAND}\n" in blocks


def test_the_test_command_is_what_ci_runs_last():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    last = ci_lines[-1].strip()
    assert "pytest" in last and TEST_COMMAND.endswith(last), (last, TEST_COMMAND)


def test_headline_quotes_mad_and_poser_rows():
    tasks = [task for _, task, _ in headline_rows()]
    assert tasks.count("mad") >= 3 and tasks.count("poser") >= 3


@pytest.mark.parametrize("detector, task, numbers",
                         [pytest.param(*row, id=f"{row[1]}-{row[0]}") for row in headline_rows()])
def test_every_headline_number_is_the_committed_leaderboards(detector, task, numbers):
    if task == "mad":
        assert len(numbers) == len(MAD_COLUMNS), (detector, numbers)
        for quoted, metric in zip(numbers, MAD_COLUMNS):
            actual = mad_auroc_avg(metric)
            assert detector in actual, f"{detector}: no scored MAD records"
            assert close(quoted, actual[detector]), f"{detector} {metric}: README {quoted}, records {actual[detector]:.4f}"
    else:
        assert task == "poser"
        record = poser_records()[detector]
        actual = [record["metrics"]["pair_accuracy"], *record["metrics"]["pair_accuracy_ci"]]
        assert len(numbers) == len(actual) and all(map(close, numbers, actual)), (detector, numbers, actual)
        statistic = re.search(rf"`{detector}` \((\w+)\)", headline())
        if statistic and statistic.group(1).lower() in ("kl", "p"):  # a named statistic is the record's
            assert record["diagnostics"]["statistic"].lower().startswith(statistic.group(1).lower())


def test_the_headline_counts_are_the_records():
    text = " ".join(headline().split())
    mad = [r for r in records("mad") if not r["dataset"].endswith("_control")]
    models = {(r["dataset"], r["seed"]): scored(r) for r in mad}
    datasets, seeds = {d for d, _ in models}, sorted({s for _, s in models})
    quoted = re.search(r"(\d+) datasets", text)
    assert quoted and int(quoted.group(1)) == len(datasets)
    assert all(d.replace("_", " ") in text for d in datasets)
    quoted = re.search(r"seeds (\d+)-(\d+)", text)
    assert quoted and [int(quoted.group(1)), int(quoted.group(2))] == [seeds[0], seeds[-1]]
    quoted = re.search(r"(\d+) of the (\d+) quirky models pass", text)
    assert quoted and (int(quoted.group(1)), int(quoted.group(2))) == (sum(models.values()), len(models))

    poser = list(poser_records().values())
    quoted = re.search(r"(\d+) pairs", text)
    assert quoted and all(r["metrics"]["n_pairs"] == int(quoted.group(1)) for r in poser)
    quoted = re.search(r"(\d+) \+ (\d+) models", text)
    assert quoted and all((r["metrics"]["n_aligned_models"], r["metrics"]["n_misaligned_models"])
                          == (int(quoted.group(1)), int(quoted.group(2))) for r in poser)
    if "Every POSER interval includes 0.5" in text:
        assert all(low <= 0.5 <= high for low, high in (r["metrics"]["pair_accuracy_ci"] for r in poser))


@pytest.mark.parametrize("doc", ["README.md", "docs/benchmarks.md"])
def test_every_relative_link_points_to_a_file(doc):
    path = ROOT / doc
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    assert targets
    for target in targets:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file) if file else path
        assert linked.exists(), f"{doc} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"{doc} links to {target}: no such heading"
