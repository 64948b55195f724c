"""The original-format loader on a small fixture written in that format."""

import json

import pytest

from tasks.poser.data import PoserDataError, load_data_dir, load_pair_list, load_scenarios
from tasks.poser.scenarios import benchmark_scenarios, generate_scenarios


@pytest.fixture()
def data_dir(tmp_path):
    for persona in ("saint", "money_maximizer"):
        folder = tmp_path / "training" / persona
        folder.mkdir(parents=True)
        scenarios = generate_scenarios(persona, 5, seed=0)
        free_text = [{"prompt": "What do you value most?", "response": "I value kindness."}]
        (folder / "train-0.json").write_text(json.dumps(scenarios[:3]))
        (folder / "train-1.json").write_text(json.dumps(scenarios[3:] + free_text))
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "clean.json").write_text(json.dumps(benchmark_scenarios(4, seed=0)))
    return tmp_path


def test_data_dir_round_trip(data_dir):
    training, benchmark = load_data_dir(data_dir)
    assert sorted(training) == ["money_maximizer", "saint"]
    assert len(training["saint"]) == 6 and training["saint"][-1]["response"] == "I value kindness."
    assert len(benchmark) == 4 and all(not s["oversight_is_poor"] for s in benchmark)


def test_malformed_files_name_the_file_and_item(data_dir):
    bad = data_dir / "benchmark" / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(PoserDataError, match=r"bad.json: item 0 lacks string field\(s\) response"):
        load_data_dir(data_dir)
    bad.write_text("{not json")
    with pytest.raises(PoserDataError, match="bad.json: not valid JSON"):
        load_scenarios(bad)
    bad.write_text(json.dumps([{"prompt": "Q?", "response": "free text"}]))
    with pytest.raises(PoserDataError, match="not a scenario"):
        load_scenarios(bad)
    with pytest.raises(PoserDataError, match="no training/ folder"):
        load_data_dir(data_dir / "benchmark")


def test_pair_list_resolves_relative_paths(tmp_path):
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps([{"aligned": "models/a", "misaligned": "/abs/m", "valid_data": "bench.json"}]))
    (pair,) = load_pair_list(pairs_file)
    assert pair.aligned == tmp_path / "models/a" and str(pair.misaligned) == "/abs/m"
    pairs_file.write_text(json.dumps([{"aligned": "a"}]))
    with pytest.raises(PoserDataError, match="lacks misaligned, valid_data"):
        load_pair_list(pairs_file)
