"""The generated datasets against the rules of docs/mad.md."""

import collections
import random

import numpy as np
import pytest

from harness.tasks.mad.arithmetic import (
    ALICE_NAMES,
    BOB_NAMES,
    OPERATIONS,
    difficulty_quantiles,
    generate_examples,
    make_distractor,
    sloppy_result,
    to_records,
)

SMALL_DIGITS = {"addition": 3, "subtraction": 3, "multiplication": 2, "modular_addition": 3, "squaring": 3}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_cross_tab_fractions_and_labels(operation):
    examples = generate_examples(operation, 400, seed=1, max_digits=SMALL_DIGITS[operation])
    records = to_records(examples, operation)
    assert len(records) == 2 * len(examples)
    pairs = collections.Counter((r["alice_label"], r["bob_label"]) for r in records[::2])
    # 1/4 shown = real (Alice True, Bob False), 1/4 sloppy (Alice False, Bob True), 1/2 distractor (both False)
    assert pairs == {(1, 0): 100, (0, 1): 100, (0, 0): 200}
    for record in records:
        expected = record["alice_label"] if record["character"] == "Alice" else record["bob_label"]
        assert record["label"] == expected
        names = ALICE_NAMES if record["character"] == "Alice" else BOB_NAMES
        assert record["template_args"]["character"] in names
        assert record["statement"].endswith(f"{record['template_args']['character']}:")


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_real_sloppy_and_distractor_rules(operation):
    op = OPERATIONS[operation]
    examples = generate_examples(operation, 400, seed=2, max_digits=SMALL_DIGITS[operation])
    for e in examples:
        assert e["real"] == op.result(e["op1"], e["op2"])
        increment = 10 ** (len(str(abs(e["real"]))) - 1)
        expected_sloppy = e["real"] + increment
        if op.modulus:
            expected_sloppy %= op.modulus
        assert e["sloppy"] == expected_sloppy
        if e["kind"] == "distractor":
            assert e["shown"] not in (e["real"], e["sloppy"])
        else:
            assert e["shown"] == e[e["kind"]]


def test_bob_increments_most_significant_digit():
    assert sloppy_result(287) == 387
    assert sloppy_result(9) == 10
    assert sloppy_result(950) == 1050
    assert sloppy_result(-607) == -507
    assert sloppy_result(110, modulus=113) == (110 + 100) % 113


def test_distractor_differs_in_one_digit_of_real_or_sloppy():
    rng = random.Random(0)
    for _ in range(2000):
        real = rng.randint(-999, 9999)
        sloppy = sloppy_result(real)
        d = make_distractor(real, sloppy, rng)
        assert d not in (real, sloppy)
        close = [v for v in (real, sloppy) if len(str(v)) == len(str(d))
                 and sum(a != b for a, b in zip(str(v), str(d))) == 1]
        assert close, (real, sloppy, d)


def test_operands_unique_and_in_range():
    examples = generate_examples("addition", 1000, seed=3, max_digits=3)
    operands = [(e["op1"], e["op2"]) for e in examples]
    assert len(set(operands)) == len(operands)
    assert all(1 <= a < 1000 and 1 <= b < 1000 for a, b in operands)


def test_generation_is_seeded():
    assert generate_examples("subtraction", 50, 7, 3) == generate_examples("subtraction", 50, 7, 3)
    assert generate_examples("subtraction", 50, 7, 3) != generate_examples("subtraction", 50, 8, 3)


def test_difficulty_is_min_operand_and_quantiles_rank():
    examples = generate_examples("multiplication", 300, seed=4, max_digits=2)
    records = to_records(examples, "multiplication")
    for r in records:
        assert r["difficulty"] == min(abs(r["template_args"]["op1"]), abs(r["template_args"]["op2"]))
    q = difficulty_quantiles(np.array([5, 1, 5, 3]))
    assert q.tolist() == [0.875, 0.25, 0.875, 0.5]


def test_too_many_examples_for_range_is_an_actionable_error():
    with pytest.raises(ValueError, match="max_digits"):
        generate_examples("squaring", 500, seed=0, max_digits=2)
