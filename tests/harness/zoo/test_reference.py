"""reference_differences: one line per episode whose models are not the leaderboard's."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.interfaces import ConfigError
from harness.zoo.reference import load_reference, reference_differences

REFERENCE = [
    {"task": "mad", "source": "generated", "dataset": "addition", "seed": 0, "episode_fingerprint": "ep-add-0",
     "model_fingerprints": {"model": "5e6f7a8b00000000"}},
    {"task": "mad", "source": "generated", "dataset": "subtraction", "seed": 0, "episode_fingerprint": "ep-sub-0",
     "model_fingerprints": {"model": "99990000aaaabbbb"}},
    {"task": "poser", "source": "generated", "dataset": "generated", "seed": 0, "episode_fingerprint": "ep-poser",
     "model_fingerprints": {"genie-0": "aaaa000011112222", "saint-0": "bbbb000011112222",
                            "fitness_maximizer-0": "cccc000011112222"}},
]


def episode(name, fingerprint="ep", models=None, source="generated"):
    """An episode as the runner sees it: its name, fingerprint, models and source."""
    return SimpleNamespace(name=name, fingerprint=fingerprint, models=models or {}, source=source)


def test_a_differing_model_gives_one_actionable_line():
    lines = reference_differences("mad", [episode("addition", "ep-x", {"model": "1a2b3c4d99999999"}, "generated")],
                                  0, REFERENCE)
    assert lines == [
        "your addition model differs from the leaderboard's (model 1a2b3c4d, leaderboard 5e6f7a8b): numbers will go "
        "in their own leaderboard section; to score the leaderboard's own models, run in the repository "
        "(leaderboard/zoo/ ships them) with a cache that holds no model trained here under the same recipe "
        "(a fresh HARNESS_CACHE): the run then imports them"
    ]


def test_same_models_and_episode_give_no_line():
    same = episode("addition", "ep-add-0", {"model": "5e6f7a8b00000000"}, "generated")
    assert reference_differences("mad", [same], 0, REFERENCE) == []


def test_no_entry_no_line_other_seed_source_task_or_quick():
    mine = {"model": "1a2b3c4d99999999"}
    assert reference_differences("mad", [episode("addition", "e", mine)], 1, REFERENCE) == []  # other seed
    assert reference_differences("mad", [episode("addition", "e", mine, "llama on addition.jsonl")], 0, REFERENCE) == []
    assert reference_differences("mad", [episode("squaring", "e", mine)], 0, REFERENCE) == []  # not in the leaderboard
    assert reference_differences("other", [episode("addition", "e", mine)], 0, REFERENCE) == []
    assert reference_differences("mad", [episode("addition", "e", mine)], 0, REFERENCE, quick=True) == []
    assert reference_differences("mad", [episode("addition", "e", mine)], 0, []) == []


def test_same_models_but_other_episode_fingerprint_is_reported():
    lines = reference_differences("mad", [episode("addition", "ep-other", {"model": "5e6f7a8b00000000"})], 0, REFERENCE)
    assert len(lines) == 1 and "although its models are the same" in lines[0] and "leaderboard ep-add-0" in lines[0]


def test_several_models_are_counted_and_named():
    models = {"genie-0": "aaaa000011112222", "saint-0": "dddd000011112222", "fitness_maximizer-0": "eeee000011112222"}
    (line,) = reference_differences("poser", [episode("generated", "ep-x", models)], 0, REFERENCE)
    assert line.startswith("your poser generated models differ from the leaderboard's (2 of 3: ")
    assert "fitness_maximizer-0 eeee0000 vs cccc0000" in line and "saint-0 dddd0000 vs bbbb0000" in line
    assert "genie-0" not in line and "fresh HARNESS_CACHE" in line


def test_one_line_per_differing_episode_in_order():
    episodes = [episode("addition", "e1", {"model": "x" * 16}), episode("subtraction", "e2", {"model": "y" * 16})]
    lines = reference_differences("mad", episodes, 0, REFERENCE)
    assert [line.split()[1] for line in lines] == ["addition", "subtraction"]


def test_load_reference(tmp_path):
    assert load_reference(tmp_path / "missing.json") == []
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": REFERENCE}))
    assert load_reference(path) == REFERENCE
    path.write_text(json.dumps({"models": [{"task": "mad", "dataset": "addition", "seed": 0}]}))
    with pytest.raises(ConfigError, match=r"models.json.*model_fingerprints"):
        load_reference(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="is malformed"):
        load_reference(path)
