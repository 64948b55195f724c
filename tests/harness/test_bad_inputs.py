"""Bad input: each mistake gets a one-line error naming what is wrong and what is valid, exit
code 2, and no record written. ``python -m pytest tests/harness/test_bad_inputs.py -s`` prints
the table of inputs and messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import EXIT_USAGE, main

QUICK = ["run", "--task", "mad", "--quick", "--allow-invalid"]


def files(tmp: Path) -> dict[str, Path]:
    """Broken inputs on disk: an empty and a malformed dataset, a model directory without weights."""
    (tmp / "empty.jsonl").write_text("")
    (tmp / "malformed.jsonl").write_text('{"id": 1, "character": "Alice"\nnot json at all\n')
    no_weights = tmp / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "llama"}')
    return {"empty": tmp / "empty.jsonl", "malformed": tmp / "malformed.jsonl", "no_weights": no_weights}


CASES = {
    "unknown task": (["run", "--task", "nope", "--detector", "activations_lof"], ["unknown task 'nope'", "valid tasks: mad, poser"]),
    "unknown detector": (QUICK + ["--detector", "nope"], ["unknown detector 'nope'", "activations_mahalanobis"]),
    "detector of another task kind": (QUICK + ["--detector", "activation_noise"], ["'activation_noise' scores ModelItems, not the TextItems of task 'mad'", "detectors for it: activations_lof"]),
    "unknown dataset": (QUICK + ["--detector", "activations_lof", "--dataset", "division"],
                        ["unknown mad dataset 'division'", "valid: addition, subtraction"]),
    "unknown hyperparameter": (QUICK + ["--detector", "activations_lof", "--param", "activations_lof.k=5"],
                               ["no hyperparameter 'k'", "valid: layers, n_neighbors"]),
    "hyperparameter of the wrong type": (QUICK + ["--detector", "activations_lof", "--param", "activations_lof.n_neighbors=many"],
                                         ["'n_neighbors' must be int", "got str 'many'"]),
    "hyperparameter list of the wrong type": (QUICK + ["--detector", "activations_mahalanobis", "--param",
                                                       'activations_mahalanobis.layers=["last"]'],
                                              ["'layers' must be list of int or null", "['last']"]),
    "hyperparameter out of range": (QUICK + ["--detector", "activations_lof", "--param", "activations_lof.n_neighbors=0"],
                                    ["'n_neighbors' must be a positive integer", "got 0"]),
    "hyperparameter not in its choices": (QUICK + ["--detector", "activations_mahalanobis", "--param",
                                                   "activations_mahalanobis.covariance=diagonal"],
                                          ["'covariance' must be one of", "'diagonal'"]),
    "malformed --param": (QUICK + ["--detector", "activations_lof", "--param", "n_neighbors=5"],
                          ["--param expects DETECTOR.FIELD=VALUE"]),
    "unknown task option": (QUICK + ["--detector", "activations_lof", "--option", "epochs=3"], ["'epochs'", "valid"]),
    "task option of the wrong type": (QUICK + ["--detector", "activations_lof", "--option", "min_accuracy=high"],
                                      ["min_accuracy", "high"]),
    "task option out of range": (QUICK + ["--detector", "activations_lof", "--option", "min_accuracy=2"],
                                 ["'min_accuracy' must be in [0, 1]", "got 2"]),
    "layer index out of range": (QUICK + ["--detector", "activations_mahalanobis", "--param", "activations_mahalanobis.layers=[1, 99]"],
                                 ["layer 99 out of range", "this model has hidden states 0..1"]),
    "single layer out of range": (QUICK + ["--detector", "flow_mahalanobis", "--param", "flow_mahalanobis.layer=-7"],
                                  ["layer -7 out of range"]),
    "basin layer out of range": (QUICK + ["--detector", "basin_mahalanobis", "--param", "basin_mahalanobis.layer=5"],
                                 ["'layer'", "layer 5 out of range", "this model has blocks 1..1"]),
    "basin layer name that does not exist": (QUICK + ["--detector", "basin_mahalanobis", "--param", "basin_mahalanobis.layer=\"model.nope\""],
                                             ["no submodule named 'model.nope'"]),
    "empty dataset file": (QUICK + ["--detector", "activations_lof", "--option", "model={no_weights}", "--option", "dataset={empty}"],
                           ["empty.jsonl: the dataset is empty"]),
    "malformed dataset file": (QUICK + ["--detector", "activations_lof", "--option", "model={no_weights}", "--option", "dataset={malformed}"],
                               ["malformed.jsonl", "line 1"]),
    "model directory without weights": (QUICK + ["--detector", "activations_lof", "--option", "model={no_weights}",
                                                 "--option", "dataset={dataset}"],
                                        ["has no weights", "save_pretrained"]),
    "model directory that does not exist": (QUICK + ["--detector", "activations_lof", "--option", "model=/nonexistent/model",
                                                     "--option", "dataset={dataset}"],
                                            ["'/nonexistent/model' does not exist"]),
    "bad --jobs": (QUICK + ["--detector", "activations_lof", "--jobs", "0"], ["--jobs must be >= 1, got 0"]),
    "--jobs with the ray executor": (QUICK + ["--detector", "activations_lof", "--executor", "ray", "--jobs", "2"],
                                     ["--jobs 2 sizes the process pool of --executor process"]),
    "--ray-address without ray": (QUICK + ["--detector", "activations_lof", "--ray-address", "127.0.0.1:1"],
                                  ["--ray-address needs --executor ray"]),
}


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return files(tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid quirky dataset file (so only the model is wrong in the model cases)."""
    import json

    from harness.tasks.mad.arithmetic import generate_examples, to_records

    records = to_records(generate_examples("addition", 40, seed=0, max_digits=2), "addition", seed=0)
    path = tmp_path_factory.mktemp("good") / "addition.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_actionable_line_and_writes_nothing(
    case: str, broken_files, good_dataset, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv, expected = CASES[case]
    paths = {**{k: str(v) for k, v in broken_files.items()}, "dataset": str(good_dataset)}
    argv = [arg.format(**paths) for arg in argv] + ["--results-dir", str(tmp_path / "records")]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ")
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert not (tmp_path / "records").exists() or not any((tmp_path / "records").rglob("*.json"))
    print(f"\n| {case} | `{message}` |")  # the table, with -s
