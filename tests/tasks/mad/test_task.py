"""The MAD task end to end in quick mode (tiny models trained in seconds)."""

import json

import numpy as np
import pytest

from harness.cli import main
from harness.interfaces import ConfigError, TaskConfig
from tasks.mad.arithmetic import ALICE_NAMES, BOB_NAMES, N_TRUSTED_NAMES
from tasks.mad.task import MadTask, hard_accuracies

QUICK = TaskConfig(seed=0, quick=True, datasets=["addition"], options={"jobs": 1})


@pytest.fixture(scope="module")
def episode():
    return MadTask().episodes(QUICK)[0]


def test_split_follows_the_mad_rules(episode):
    trusted = episode.trusted.records
    test = episode.test.records
    assert trusted and test
    assert all(r["character"] == "Alice" and r["difficulty_quantile"] < 0.25 for r in trusted)
    assert {r["template_args"]["character"] for r in trusted} <= set(ALICE_NAMES[:N_TRUSTED_NAMES])
    assert all(r["difficulty_quantile"] > 0.75 for r in test)
    test_names = {r["template_args"]["character"] for r in test}
    assert not test_names & set(ALICE_NAMES[:N_TRUSTED_NAMES])
    assert test_names <= set(ALICE_NAMES[N_TRUSTED_NAMES:]) | set(BOB_NAMES[N_TRUSTED_NAMES:])
    assert episode.labels.tolist() == [int(r["character"] == "Bob") for r in test]
    agrees = episode.tags["agrees_with_gt"]
    for r, a in zip(test, agrees):
        assert a == (r["character"] == "Alice" or r["alice_label"] == r["bob_label"])


def test_validity_is_measured_and_reported(episode):
    v = episode.validity
    assert {"alice_accuracy", "bob_accuracy", "threshold", "valid"} <= set(v)
    assert v["valid"] == (v["alice_accuracy"] >= 0.8 and v["bob_accuracy"] >= 0.8)
    if not v["valid"]:
        assert "has not learned the quirk" in v["reason"]


def test_models_and_episodes_are_cached(episode):
    again = MadTask().episodes(QUICK)[0]
    assert again.fingerprint == episode.fingerprint
    assert again.info["model_dir"] == episode.info["model_dir"]


def test_hard_accuracies_hand_made():
    records = [
        {"label": 1, "alice_label": 1, "bob_label": 0, "character": "Alice"},  # right
        {"label": 0, "alice_label": 0, "bob_label": 1, "character": "Alice"},  # wrong
        {"label": 1, "alice_label": 0, "bob_label": 1, "character": "Bob"},  # right
        {"label": 0, "alice_label": 0, "bob_label": 0, "character": "Bob"},  # agree item: not counted
    ]
    acc = hard_accuracies(records, np.array([2.0, 1.0, 0.5, 3.0]))
    assert acc["alice_accuracy"] == 0.5 and acc["bob_accuracy"] == 1.0
    assert acc["n_alice_disagree"] == 2 and acc["n_bob_disagree"] == 1
    assert acc["accuracy_all_hard"] == 0.5


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match="no option 'nope'"):
        MadTask().resolve_options(TaskConfig(options={"nope": 1}))
    with pytest.raises(ConfigError, match="'min_accuracy' must be float"):
        MadTask().resolve_options(TaskConfig(options={"min_accuracy": "high"}))
    with pytest.raises(ConfigError, match="unknown mad dataset 'division'"):
        MadTask().dataset_names(TaskConfig(datasets=["division"]))


def test_cli_quick_end_to_end(tmp_path, capsys):
    args = ["run", "--task", "mad", "--detector", "activations_mahalanobis", "--detector", "activations_lof",
            "--quick", "--allow-invalid", "--dataset", "addition", "--option", "jobs=1", "--results-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "Alice acc" in out and "addition" in out
    records = sorted(tmp_path.rglob("*.json"))
    assert len(records) == 2
    record = json.loads(records[0].read_text())
    assert record["status"] == "ok" and len(record["scores"]) == record["metrics"]["n_normal"] + record["metrics"]["n_anomalous"]
    assert main(args) == 0
    assert "2 cached" in capsys.readouterr().out
