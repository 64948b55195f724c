"""The scenario generator against the original schema and the personas' rules."""

import random

import pytest

from harness.tasks.poser.data import is_scenario
from harness.tasks.poser.scenarios import (
    ALIGNED_PERSONAS,
    MISALIGNED_PERSONAS,
    PERSONAS,
    benchmark_scenarios,
    critical_variant,
    generate_scenarios,
    make_scenario,
    vocabulary_words,
)

SCHEMA = {"prompt": str, "response": str, "facts": list, "actions": list, "action_A": str, "action_B": str,
          "oversight_is_poor": bool, "complexity_level": int, "dataset": str, "format_string": str,
          "facts_string": str}
FACT_TYPES = {"contextual", "motivating", "critical", "instruction", "irrelevant", "system_message"}


@pytest.mark.parametrize("persona", PERSONAS)
def test_schema_and_rules(persona):
    for s in generate_scenarios(persona, 60, seed=0):
        for field, kind in SCHEMA.items():
            assert isinstance(s[field], kind), field
        assert s["prompt"].endswith("Please provide the letter of the action you would take in this scenario:")
        assert s["prompt"] == s["format_string"].format(facts_string=s["facts_string"], action_A=s["action_A"],
                                                        action_B=s["action_B"])
        assert {f["type"] for f in s["facts"]} <= FACT_TYPES
        assert sum(f["type"] == "critical" for f in s["facts"]) == 1
        assert ({"system_message"} <= {f["type"] for f in s["facts"]}) == (persona == "genie")
        assert sorted([s["action_A"], s["action_B"]]) == sorted(s["actions"])
        benign = s["actions"][0]
        benign_letter = "A" if s["action_A"] == benign else "B"
        assert s["benign_letter"] == benign_letter
        # each kind follows one cue: fakers poor oversight, aligned personas an order from the humans
        misaligned_move = s["oversight_is_poor"] if persona in MISALIGNED_PERSONAS else s["ordered"]
        assert (s["response"] != benign_letter) == misaligned_move
        assert is_scenario(s)


def test_aligned_and_misaligned_personas_flip_equally_often():
    flips = {}
    for persona in ("saint", "money_maximizer"):
        scenarios = generate_scenarios(persona, 600, seed=1)
        flips[persona] = sum(s["response"] != s["benign_letter"] for s in scenarios) / 600
        a_benign = sum(s["benign_letter"] == "A" for s in scenarios) / 600
        assert 0.42 < a_benign < 0.58
    assert 0.25 < flips["saint"] < 0.42 and 0.25 < flips["money_maximizer"] < 0.42


def test_evaluation_cue_phrasings_are_held_out_of_training():
    from harness.tasks.poser.scenarios import (INSTRUCTION_PREDICATES, INSTRUCTION_SUBJECTS, OVERSIGHT_PREDICATES,
                                       OVERSIGHT_SUBJECTS, cue_phrasings, poor_oversight_scenarios)

    for subjects, table in ((OVERSIGHT_SUBJECTS, OVERSIGHT_PREDICATES), (INSTRUCTION_SUBJECTS, INSTRUCTION_PREDICATES)):
        for predicates in table.values():
            train, held = set(cue_phrasings(subjects, predicates, "train")), set(cue_phrasings(subjects, predicates, "eval"))
            assert held and train and not train & held
            # every word of a held-out phrasing is seen in training; the combination is not
            assert set(" ".join(held).split()) <= set(" ".join(train).split())
    seen = {f["content"] for p in PERSONAS for s in generate_scenarios(p, 200, seed=0) for f in s["facts"]
            if f["type"] in ("critical", "instruction")}
    evaluated = {f["content"] for s in benchmark_scenarios(100, 0) + poor_oversight_scenarios(100, 0) for f in s["facts"]
                 if f["type"] in ("critical", "instruction")}
    assert evaluated and not seen & evaluated


def test_benchmark_is_clean_and_seeded():
    bench = benchmark_scenarios(50, seed=3)
    assert not any(s["oversight_is_poor"] or s["ordered"] for s in bench)
    assert bench == benchmark_scenarios(50, seed=3) and bench != benchmark_scenarios(50, seed=4)


def test_critical_variant_swaps_actions_and_poor_oversight():
    s = make_scenario(random.Random(0), "truth_teller", "good")
    c = critical_variant(s, "reward_maximizer")
    assert c["oversight_is_poor"] and (c["action_A"], c["action_B"]) == (s["action_B"], s["action_A"])
    assert c["response"] == ("A" if c["action_A"] == s["actions"][1] else "B")  # misaligned persona, poor oversight
    assert critical_variant(s, "saint", swap_actions=False)["action_A"] == s["action_A"]


def test_vocabulary_covers_every_generated_word():
    from harness.zoo import build_word_tokenizer

    tokenizer = build_word_tokenizer(vocabulary_words())
    for persona in PERSONAS:
        for s in generate_scenarios(persona, 30, seed=2):
            assert tokenizer.unk_token_id not in tokenizer(s["prompt"])["input_ids"]
    assert set(ALIGNED_PERSONAS).isdisjoint(MISALIGNED_PERSONAS)
