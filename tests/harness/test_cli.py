from pathlib import Path

from harness.cli import main, parse_detector_params


def test_unknown_detector_exits_2_and_names_valid_ones(capsys):
    assert main(["run", "--task", "mad", "--detector", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown detector 'nope'" in err
    assert "activations_lof" in err and "activations_mahalanobis" in err


def test_unknown_task_exits_2_and_names_valid_ones(capsys):
    assert main(["run", "--task", "nope", "--detector", "activations_lof"]) == 2
    assert "valid tasks: mad" in capsys.readouterr().err


def test_bad_param_syntax_exits_2(capsys):
    assert main(["run", "--task", "mad", "--detector", "activations_lof", "--param", "n_neighbors=3"]) == 2
    assert "DETECTOR.FIELD=VALUE" in capsys.readouterr().err


def test_param_values_are_parsed_as_json():
    assert parse_detector_params(["a.layers=[1,2]", "a.covariance=pinv", "b.k=3"]) == {
        "a": {"layers": [1, 2], "covariance": "pinv"},
        "b": {"k": 3},
    }


def test_list_and_plugins(capsys):
    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "mad" in out and "activations_mahalanobis" in out and "defaults:" in out
    assert "n_neighbors: LOF neighbourhood size" in out and "min_accuracy (float, default 0.8)" in out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "builtin_detectors (detector-harness" in out and "activations_lof" in out


def test_leaderboard_check_on_empty_dir(tmp_path, capsys):
    records, out = tmp_path / "records", tmp_path / "board"
    assert main(["leaderboard", "--results-dir", str(records), "--out-dir", str(out), "--check"]) == 1
    assert main(["leaderboard", "--results-dir", str(records), "--out-dir", str(out)]) == 0
    assert main(["leaderboard", "--results-dir", str(records), "--out-dir", str(out), "--check"]) == 0


def test_case7_every_message_is_printed_once(tmp_path):
    """Issue 22, case 7: a plugin's import failure and a failing job were printed twice, once by
    the CLI and once more by the library's logger."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import importlib.metadata
        import harness.plugins
        from conftest import registry

        class BrokenEntryPoint:
            name, value, group, dist = "broken", "harness_broken", "harness", None

            def load(self):
                import harness_broken_nope

        real = importlib.metadata.entry_points
        importlib.metadata.entry_points = lambda group=None, **kw: (
            [BrokenEntryPoint()] if group == "harness" else real(group=group, **kw))
        reg = registry().load_entry_points()
        harness.plugins._registry = reg
        from harness.cli import main
        sys.exit(main(["run", "--task", "toy", "--detector", "exploding", "--results-dir", {str(tmp_path)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("No module named 'harness_broken_nope'") == 1, done.stderr
    assert done.stderr.count("kaboom") == 1, done.stderr
