"""``harness leaderboard --check``: fails with a diff after a record is edited, passes after a rebuild."""

import json

from harness.cli import main
from harness.run.runner import RunOptions, run


def test_check_fails_with_a_diff_after_a_record_is_edited(tmp_path, toy_registry, capsys):
    records, board = tmp_path / "records", tmp_path / "board"
    [ok, _] = run(toy_registry, "toy", ["activations_mahalanobis"], RunOptions(results_dir=records))
    args = ["leaderboard", "--results-dir", str(records), "--out-dir", str(board)]
    assert main(args) == 0
    assert main(args + ["--check"]) == 0
    capsys.readouterr()
    record = json.loads(ok.path.read_text())
    before = record["metrics"]["auroc"]
    record["metrics"]["auroc"] = 0.123
    ok.path.write_text(json.dumps(record))
    assert main(args + ["--check"]) == 1
    err = capsys.readouterr().err
    assert "stale: README.md, results.csv" in err
    assert "(rendered from records)" in err and "+" in err and "0.123" in err and f"{before:.3f}" in err
    assert main(args) == 0
    assert main(args + ["--check"]) == 0
