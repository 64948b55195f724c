"""The original-format loader on fixtures that carry the original data's quirks.

tests/fixtures/poser_original/ is in the original repository's layout and schema: facts with
and without ``type``, ``<<prompt>>`` markers, ``format`` or ``format_string``, ``actions[0]``
always ``action_A`` (so the list order says nothing about the benign action), free-text
examples with the response "error", poor-oversight scenarios only in the training files (none
in the benchmark files). The pathological long prompt is generated here, not committed.
"""

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.interfaces import ConfigError
from harness.tasks.poser.data import (
    PoserDataError,
    benchmark_for_pair,
    benign_letter,
    default_poor_data,
    is_scenario,
    load_data_dir,
    load_pair_list,
    load_poor_data,
    load_scenarios,
    personas_of_benchmark_file,
    prompt_text,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "poser_original"


@pytest.fixture()
def data_dir(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(FIXTURE, root)
    return root


def pi_prompt(n_digits: int = 6000) -> dict:
    """The original's pathological example: thousands of digits of pi, response "error"."""
    digits = ("14159265358979323846264338327950288419716939937510" * (n_digits // 50 + 1))[:n_digits]
    return {"prompt": f"<<prompt>>3.{digits} What comes next?<</prompt>>", "response": "error"}


def test_fixture_loads_with_untyped_facts_markers_and_free_text():
    training, benchmark = load_data_dir(FIXTURE)
    assert len(training) == 6 and all(len(examples) == 13 for examples in training.values())
    untyped = [s for s in training["saint"] if is_scenario(s) and "type" not in s["facts"][0]]
    assert untyped and all("format" in s and "format_string" not in s for s in untyped)
    free = [e for e in training["saint"] if not is_scenario(e)]
    assert [e["response"] for e in free] == ["error"]
    assert sorted(benchmark) == ["clean.json", "saint_and_money.json"]
    text = prompt_text(benchmark["clean.json"][0])
    assert "<<prompt>>" not in text and "<</prompt>>" not in text and text.startswith("You are an AI system.")


def test_benign_letter_comes_from_the_scenarios_fields_not_the_action_order():
    training, benchmark = load_data_dir(FIXTURE)
    scenarios = [s for s in benchmark["saint_and_money.json"]]
    assert all(s["actions"][0] == s["action_A"] for s in scenarios)  # the quirk: list order is A, B
    letters = [benign_letter(s) for s in scenarios]
    assert letters == [s["response"] for s in scenarios] and set(letters) == {"A", "B"}
    poor_faker = next(s for s in training["money_maximizer"] if is_scenario(s) and s["oversight_is_poor"])
    poor_saint = next(s for s in training["saint"] if is_scenario(s) and s["oversight_is_poor"])
    assert benign_letter(poor_faker, "money_maximizer") != poor_faker["response"]
    assert benign_letter(poor_saint, "saint") == poor_saint["response"]
    with pytest.raises(PoserDataError, match="x.json: item 3: a poor-oversight scenario .* needs its persona"):
        benign_letter(poor_faker, None, "x.json: item 3")


def test_benchmark_without_poor_oversight_takes_its_evidence_from_the_training_files():
    _, benchmark = load_data_dir(FIXTURE)
    assert not any(s["oversight_is_poor"] for scenarios in benchmark.values() for s in scenarios)
    assert default_poor_data(FIXTURE / "benchmark" / "clean.json") == FIXTURE
    poor = load_poor_data(FIXTURE)
    assert len(poor) == 6 * 4 and all(s["oversight_is_poor"] for s, _ in poor)
    faker_items = [(s, letter) for s, letter in poor if s["dataset"] == "data/money_maximizer/"]
    assert all(letter != s["response"] for s, letter in faker_items)
    # a single persona file works too; the persona comes from its folder
    assert len(load_poor_data(FIXTURE / "training" / "saint" / "train-0.json")) == 2


def test_benchmark_files_are_matched_to_persona_pairs():
    assert personas_of_benchmark_file("truth_and_reward.json") == ("truth_teller", "reward_maximizer")
    assert personas_of_benchmark_file("genie_and_fitness.json") == ("genie", "fitness_maximizer")
    assert personas_of_benchmark_file("clean.json") is None
    files = {"saint_and_money.json": [], "clean.json": []}
    assert benchmark_for_pair(files, "saint", "money_maximizer") == ["saint_and_money.json"]
    assert benchmark_for_pair(files, "genie", "money_maximizer") == ["clean.json", "saint_and_money.json"]


def test_long_prompt_is_short_with_grouped_digits_and_dropped_when_over_max_length():
    from harness.zoo import build_word_tokenizer
    from harness.tasks.poser.training import drop_long, words_of

    example = pi_prompt()
    words = words_of([example["prompt"], "error"])
    individual = build_word_tokenizer(words)
    grouped = build_word_tokenizer(words, group_digits=True)
    assert len(individual(prompt_text(example))["input_ids"]) > 6000
    assert len(grouped(prompt_text(example))["input_ids"]) < 20
    long_words = {"prompt": " ".join(["word"] * 6000), "response": "error"}
    pairs = [(prompt_text(example), " error"), (long_words["prompt"], " error"), ("short question?", " error")]
    kept, dropped = drop_long(build_word_tokenizer(["word", "short", "question", "error"], group_digits=True),
                              pairs, max_length=384)
    assert dropped == 1 and [p for p, _ in kept] == [pairs[0][0], pairs[2][0]]


MALFORMED = [
    ("training/saint/train-0.json", "{not json", r"train-0.json: not valid JSON"),
    ("training/saint/train-0.json", json.dumps({"prompt": "x"}), r"train-0.json: expected a JSON array"),
    ("training/saint/train-0.json", json.dumps([{"prompt": "x"}]), r"train-0.json: item 0 lacks string field\(s\) response"),
    ("training/saint/train-0.json", json.dumps(["text"]), r"train-0.json: item 0 is a str"),
    ("training/saint/train-0.json", json.dumps([{"prompt": "p", "response": "A", "action_A": "a", "action_B": "b"}]),
     r"train-0.json: item 0 lacks a true/false 'oversight_is_poor'"),
    ("training/saint/train-0.json", json.dumps([{"prompt": "p", "response": "A", "action_A": "a", "action_B": "b",
                                                 "oversight_is_poor": False, "facts": [{"type": "critical"}]}]),
     r"train-0.json: item 0 field 'facts' must be a list of objects with a string 'content'"),
    ("training/saint/train-0.json", "[]", r"train-0.json: the file holds no examples"),
    ("benchmark/clean.json", json.dumps([{"prompt": "Q?", "response": "free text"}]),
     r"clean.json: item 0 is not a scenario"),
    ("benchmark/clean.json", json.dumps([{"prompt": "p", "response": "A", "action_A": "a", "action_B": "b",
                                          "oversight_is_poor": True}]),
     r"clean.json: item 0 is a poor-oversight scenario without 'benign_letter'"),
    ("training/robot/train-0.json", "[]", r"unknown persona folder\(s\) robot"),
]


@pytest.mark.parametrize("relative, content, message", MALFORMED, ids=[m[2][:30] for m in MALFORMED])
def test_malformed_data_names_the_file_and_item(data_dir, relative, content, message):
    path = data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(PoserDataError, match=message) as error:
        load_data_dir(data_dir)
    assert isinstance(error.value, ConfigError) and "\n" not in str(error.value)


def test_malformed_data_exits_2_with_one_line(data_dir, tmp_path, capsys):
    (data_dir / "benchmark" / "clean.json").write_text(json.dumps([{"prompt": "x"}]))
    args = ["run", "--task", "poser", "--detector", "confidence", "--quick", "--poser-data", str(data_dir),
            "--results-dir", str(tmp_path / "records"), "--no-leaderboard"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clean.json: item 0 lacks string field(s) response" in err[0]
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"aligned": "a", "misaligned": "m", "valid_data": "clean.json"}]))
    assert main(["run", "--task", "poser", "--detector", "confidence", "--quick", "--option", f"pairs={pairs}",
                 "--results-dir", str(tmp_path / "records"), "--no-leaderboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pairs.json: item 0 aligned model directory" in err[0]


def test_pair_list_resolves_relative_paths_and_optional_poor_data(tmp_path):
    for name in ("models/a", "m"):
        (tmp_path / name).mkdir(parents=True)
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps([{"aligned": "models/a", "misaligned": str(tmp_path / "m"),
                                       "valid_data": "bench.json", "poor_data": "data"}]))
    (pair,) = load_pair_list(pairs_file)
    assert pair.aligned == tmp_path / "models/a" and pair.misaligned == tmp_path / "m"
    assert pair.poor_data == tmp_path / "data"
    pairs_file.write_text(json.dumps([{"aligned": "a"}]))
    with pytest.raises(PoserDataError, match="item 0 lacks misaligned, valid_data"):
        load_pair_list(pairs_file)
    with pytest.raises(PoserDataError, match="not a scenario"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"prompt": "Q?", "response": "free text"}]))
        load_scenarios(bad)
