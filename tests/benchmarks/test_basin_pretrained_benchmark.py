"""benchmarks/basin_pretrained.py runs end to end on a tiny local base and reports, per parameter
set, the cost both ways, that the prefix is reused where it may be, and that the KLs agree."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "basin_pretrained.py"


def test_tiny_base_both_ways_same_kls(tmp_path):
    from harness.tasks.mad.pretrained import ALICE_NAMES, BOB_NAMES
    from harness.zoo import TinyModelConfig, build_model, build_word_tokenizer

    folder = tmp_path / "base"
    tokenizer = build_word_tokenizer(["Name", "Is", "the", "statement", "factually", "correct", "Yes", "No",
                                      *ALICE_NAMES, *BOB_NAMES])
    model = build_model(TinyModelConfig(arch="llama", n_layers=3, d_model=32, n_heads=2, d_ff=64, max_position=128),
                        tokenizer, seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "report.json"
    subprocess.run([sys.executable, str(SCRIPT), "--model-dir", str(folder), "--rows", "6", "--directions", "2",
                    "--search-items", "4", "--layers", "all,-1", "--out", str(out)],
                   capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.read_text())
    every, last = report["sets"]
    assert every["reuse_prefix"]["prefix_block"] == 0  # every weight: nothing before them to reuse
    assert last["reuse_prefix"]["prefix_block"] == 2 and last["full"]["prefix_block"] == 0
    assert every["dim"] > last["dim"] > 0
    assert last["max_kl_difference"] < 1e-6
    assert report["search"]["items"] == 4 and report["search"]["evaluations_per_search"] > 0
