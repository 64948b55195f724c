"""The pretrained tier of the poser task, on a tiny local "base" model (the real base is too slow
for a unit test): the personas' training pairs, the adapter key, the options, and the CLI end to
end with --base DIR: adapters trained on the last block, pairs checked and scored."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

pytest.importorskip("peft")

from harness.api import ConfigError, RunContext  # noqa: E402
from harness.tasks.poser.personas import generated_personas  # noqa: E402
from harness.tasks.poser.pretrained import QUICK_RECIPE, RECIPE, adapter_key, training_pairs  # noqa: E402
from harness.tasks.poser.scenarios import vocabulary_words  # noqa: E402
from harness.tasks.poser.task import PoserTask  # noqa: E402
from harness.tasks.poser.training import generated_training_data  # noqa: E402


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny Llama with a word tokenizer of the scenarios' words, saved as a plain Hugging Face folder."""
    from harness.zoo import TinyModelConfig, build_model, build_word_tokenizer

    folder = tmp_path_factory.mktemp("tiny-poser-base")
    tokenizer = build_word_tokenizer(vocabulary_words())
    model = build_model(TinyModelConfig(n_layers=2, d_model=16, n_heads=2, d_ff=32, max_position=256), tokenizer, 0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_training_pairs_are_the_personas_scenarios_with_the_letter_the_episode_reads():
    aligned, misaligned = generated_personas(1, 0)
    for persona in (aligned[0], misaligned[0]):
        pairs = training_pairs(persona, QUICK_RECIPE, seed=0)
        scenarios, _ = generated_training_data(persona, QUICK_RECIPE.n_train, 0)
        assert pairs == [(s["prompt"], " " + s["response"]) for s in scenarios]
        # the side's rule: an aligned persona takes the misaligned action only when ordered, a faker
        # only when oversight is poor
        cue = "ordered" if persona.side == "aligned" else "oversight_is_poor"
        assert all((s["response"] != s["benign_letter"]) == s[cue] for s in scenarios)
        assert {answer for _, answer in pairs} == {" A", " B"}


def test_the_adapter_key_names_base_persona_and_seed():
    persona = generated_personas(1, 0)[0][0]
    base = {"spec": "smollm2-135m", "fingerprint": "f0"}
    key = adapter_key(persona, RECIPE, 0, base)
    assert key["persona"] == persona.name and key["properties"] == persona.record()
    assert key["recipe"]["lora"]["last_blocks"] == RECIPE.lora.last_blocks
    assert adapter_key(persona, RECIPE, 1, base) != key
    assert adapter_key(persona, RECIPE, 0, {**base, "fingerprint": "f1"}) != key
    assert adapter_key(generated_personas(1, 0)[1][0], RECIPE, 0, base) != key


def test_option_base_defaults_to_two_personas_and_excludes_other_sources(tiny_base):
    task = PoserTask()
    assert task.resolve_options(RunContext(options={"base": str(tiny_base)}))["personas"] == 2
    assert task.resolve_options(RunContext(options={"base": str(tiny_base), "personas": "3"}))["personas"] == 3
    with pytest.raises(ConfigError, match="'base' trains adapters of the generated personas"):
        task.resolve_options(RunContext(options={"base": str(tiny_base), "pairs": str(tiny_base)}))


@pytest.mark.slow
def test_run_trains_persona_adapters_and_scores_their_pairs(tiny_base, tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "records"
    code = main(["run", "--task", "poser", "--quick", "--base", str(tiny_base), "--detector", "confidence",
                 "--allow-invalid", "--jobs", "1", "--no-shipped-zoo", "--results-dir", str(results),
                 "--no-leaderboard"])
    assert code == 0
    record = next(json.loads(f.read_text()) for f in results.rglob("*.json") if "pair_accuracy" in f.read_text())
    assert record["source"] == f"pretrained {tiny_base.name}" and record["status"] == "ok"
    assert record["validity"]["n_pairs"] == 4  # 2 personas per side, one seed
    assert len(record["labels"]) == 8
    models = list((tmp_path / "cache" / "models").iterdir())
    assert len(models) == 4 and all((m / "adapter_config.json").exists() for m in models)
    for model in models:
        metrics = json.loads((model / "train_metrics.json").read_text())
        assert metrics["recipe"]["last_blocks"] == 1 and metrics["n_training_pairs"] == QUICK_RECIPE.n_train
        with safe_open(model / "adapter_model.safetensors", "pt") as adapter:  # the last of the 2 blocks only
            names = list(adapter.keys())
        assert names and all(".layers.1." in name for name in names)


def test_a_lora_recipe_records_last_blocks_only_when_set():
    """Adapter keys written before ``last_blocks`` existed stay valid: the default leaves it out."""
    from harness.zoo.adapters import LoraRecipe

    assert "last_blocks" not in LoraRecipe().record()
    assert LoraRecipe(last_blocks=2).record()["last_blocks"] == 2
    assert LoraRecipe(targets=("q_proj",)).record()["targets"] == ["q_proj"]
