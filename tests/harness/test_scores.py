"""Scores: what a detector's score() returns, checked against the contract before any metric."""

import numpy as np
import pytest

from harness.interfaces import Scores


def test_an_array_becomes_scores_with_every_item_scored():
    scores = Scores.of([0.5, 1.0, 2.0], 3)
    np.testing.assert_array_equal(scores.values, [0.5, 1.0, 2.0])
    assert scores.kept().tolist() == [True, True, True]


def test_items_outside_the_mask_may_be_non_finite():
    scores = Scores.of(Scores(np.array([0.1, np.nan, 0.3]), np.array([True, False, True])), 3)
    assert scores.kept().tolist() == [True, False, True]


@pytest.mark.parametrize("result, problem", [
    (np.zeros(2), r"score\(\) returned shape \(2,\), expected \(3,\)"),
    (np.array([0.0, np.inf, 1.0]), "1 non-finite values on scored items"),
    (Scores(np.zeros(3), np.array([1, 0, 1])), "Scores.mask must be a bool array of shape"),
    (Scores(np.zeros(3), np.array([True, False])), "Scores.mask must be a bool array of shape"),
])
def test_a_broken_result_names_the_problem(result, problem):
    with pytest.raises(ValueError, match=problem):
        Scores.of(result, 3)
