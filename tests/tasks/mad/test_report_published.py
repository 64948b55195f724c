"""The published figures beside ours: Table 1's source named in the header, its num_datasets per
row, and the Spearman rank correlation with n and p, with and without the basin rows."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import spearmanr

from tasks.mad import report
from tasks.mad.report import BASIN_ROWS, PUBLISHED_MAD


def frame(detectors: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"detector": detectors, "status": ["ok"] * len(detectors)})


def summary(values: dict[str, object], column: str = "AUROC avg") -> pd.DataFrame:
    return pd.DataFrame({"detector": list(values), column: list(values.values())})


def table(lines: list[str]) -> dict[str, list[str]]:
    """The Spearman table's rows: label -> [n, rho, p]."""
    text = "\n".join(lines).splitlines()  # a table is one entry of several lines, as section() joins them
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text if line.startswith("|")]
    return {row[0]: row[1:] for row in rows[2:]}


def test_table_1_rows_carry_num_datasets_and_basin_volume_has_8():
    assert {d: r.num_datasets for d, r in PUBLISHED_MAD.items() if r.num_datasets != 10} == {"basin_volume": 8}
    assert PUBLISHED_MAD["activations_lof"] == ("activations lof", 0.762, 10)
    assert PUBLISHED_MAD.get("name_only", ("",))[0] == ""  # how mad_summary looks up the published name


def test_published_reference_names_its_source_and_num_datasets():
    mine = summary({"activations_lof": 0.9, "basin_volume": 0.5})
    ref = report.published_reference(frame(["activations_lof", "basin_volume", "sae_l0"]), mine).set_index("detector")
    header = "published AUROC avg (Table 1, 'meta' models)"
    assert header in ref.columns and not any("8B" in c for c in ref.columns)
    assert ref.loc["basin_volume", "published num_datasets"] == 8
    assert ref.loc["activations_lof", "published num_datasets"] == 10
    assert ref.loc["activations_lof", header] == "0.762"
    assert ref.loc["activations_lof", "ours (tiny models): AUROC avg"] == "0.900"
    assert ref.loc["sae_l0", "ours (tiny models): AUROC avg"] == "no counting dataset yet"
    assert ref.loc["flow_laplace", "ours (tiny models): AUROC avg"] == "not run"


def test_published_reference_takes_another_column():
    column = "mechanism AUROC"
    ref = report.published_reference(frame(["sae_l0"]), summary({"sae_l0": 0.61}, column), column=column)
    assert ref.set_index("detector").loc["sae_l0", f"ours (tiny models): {column}"] == "0.610"


def test_spearman_with_and_without_the_basin_rows():
    ours = {d: row.auroc_avg for d, row in PUBLISHED_MAD.items()}
    ours["basin_volume"], ours["basin_mahalanobis"] = 0.99, 0.98  # the basin rows out of order
    ours["name_only"] = 1.0  # not in Table 1: not matched
    lines = report.spearman_lines(summary(ours))
    rows = table(lines)
    assert "Table 1, 'meta' models" in lines[0]
    (every, without) = rows
    assert without == f"without {' and '.join(BASIN_ROWS)}"
    n, rho, p = rows[every]
    matched = list(PUBLISHED_MAD)
    expected = spearmanr([ours[d] for d in matched], [PUBLISHED_MAD[d].auroc_avg for d in matched])
    assert int(n) == 12 and float(rho) == pytest.approx(expected[0], abs=5e-4) and float(rho) < 0.5
    assert float(p) == pytest.approx(expected[1], abs=5e-4)
    n, rho, p = rows[without]
    assert int(n) == 10 and float(rho) == pytest.approx(1.0) and p == "< 0.001"


def test_spearman_reads_formatted_cells_of_another_column():
    column = "Bob vs Alice (quirky frame)"
    detectors = ["activations_lof", "flow_laplace", "basin_volume", "sae_l0"]
    cells = {d: f"{0.9 - 0.1 * k:.3f} [0.1, 0.9]" for k, d in enumerate(detectors)}
    rows = table(report.spearman_lines(summary(cells, column), column=column))
    n, rho, _ = rows["every detector in both"]
    assert int(n) == 4 and float(rho) == pytest.approx(
        spearmanr([0.9, 0.8, 0.7, 0.6], [PUBLISHED_MAD[d].auroc_avg for d in detectors])[0], abs=5e-4)


def test_spearman_with_too_few_rows_says_so():
    rows = table(report.spearman_lines(summary({"activations_lof": 0.9, "basin_volume": 0.5})))
    assert rows["every detector in both"] == ["2", "", "too few distinct values"]
    assert table(report.spearman_lines(pd.DataFrame(columns=["detector", "AUROC avg"])))["every detector in both"][0] == "0"


def claims(values: dict[str, tuple[float, str]]) -> dict[str, str]:
    column = "Bob vs Alice (quirky frame)"
    table = pd.DataFrame({"detector": list(values), f"{column} AUROC": [v for v, _ in values.values()],
                          f"{column} 95%": [i for _, i in values.values()]})
    lines = report.claims_lines(table, None, column=f"{column} AUROC")
    return {line.split("*")[1]: line for line in lines if line.startswith("- *")}


def test_the_published_claims_are_judged_on_our_column():
    published = {d: (row.auroc_avg, "") for d, row in PUBLISHED_MAD.items()}
    # the published ranking itself: every claim holds
    said = claims({**published, "basin_volume": (0.38, "[0.300, 0.450]")})
    assert "holds: the interval lies below 0.5" in said["Basin volume is anti-predictive"]
    assert "holds as a ranking" in said["Basin Mahalanobis is mediocre"] and "rank 11 of 12" in said["Basin Mahalanobis is mediocre"]
    assert "holds: it ranks first" in said["Activations LOF is best"]
    # basin volume at chance, basin mahalanobis near the top, another detector first
    said = claims({**published, "basin_volume": (0.6, "[0.429, 0.761]"), "basin_mahalanobis": (0.77, ""),
                   "sae_l0": (0.8, "")})
    assert "not seen: the interval holds 0.5" in said["Basin volume is anti-predictive"]
    assert "not seen: in the top half" in said["Basin Mahalanobis is mediocre"]
    assert "not seen: `sae_l0` ranks first" in said["Activations LOF is best"]
    assert claims({"name_only": (0.9, "")}) == {}  # no published detector here: nothing said
