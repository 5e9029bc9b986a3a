"""Negative selection (docs/protocols/dci.md): sources x strategies, hand-computed."""

from __future__ import annotations

import random

import pytest

from densecap_eval.datasets.dci.negatives import NegativeError, candidates, select_negative

NEGS = {
    "swaps": ["s0", "s1", "s2"],
    "layout": ["l0", "l1"],
    "basic": ["b0"],
}
# Ties: swaps_1 and layout_0 share the top score 9; layout_0 comes later in `any` order.
SCORES = {
    "sum": 30.0,
    "swaps_0": 1.0,
    "swaps_1": 9.0,
    "swaps_2": 3.0,
    "layout_0": 9.0,
    "layout_1": 2.0,
    "basic_0": 8.5,
}


def test_candidates_any_concatenates_in_record_key_order() -> None:
    reordered = {
        "basic": ["b0"],
        "swaps": ["s0", "s1"],
    }  # the record's order, not swaps/layout/basic
    assert candidates(reordered, "any") == [("b0", "basic_0"), ("s0", "swaps_0"), ("s1", "swaps_1")]
    assert candidates(NEGS, "layout") == [("l0", "layout_0"), ("l1", "layout_1")]


@pytest.mark.parametrize(
    ("source", "strategy", "expected"),
    [
        ("swaps", "first", ("s0", "swaps_0")),
        ("layout", "first", ("l0", "layout_0")),
        ("basic", "first", ("b0", "basic_0")),
        ("any", "first", ("s0", "swaps_0")),
        ("swaps", "hardest", ("s1", "swaps_1")),
        ("layout", "hardest", ("l0", "layout_0")),
        ("basic", "hardest", ("b0", "basic_0")),
        # swaps_1 and layout_0 tie at 9.0: the reference's stable ascending sort keeps the later one last.
        ("any", "hardest", ("l0", "layout_0")),
    ],
)
def test_first_and_hardest(source: str, strategy: str, expected: tuple[str, str]) -> None:
    assert select_negative(NEGS, source, strategy, clip_scores=SCORES, rng=None) == expected


def test_hardest_tie_within_one_kind_takes_the_last() -> None:
    negs = {"swaps": ["a", "b", "c", "d"]}
    scores = {"swaps_0": 5.0, "swaps_1": 7.0, "swaps_2": 7.0, "swaps_3": -1.0}
    assert select_negative(negs, "swaps", "hardest", clip_scores=scores, rng=None) == (
        "c",
        "swaps_2",
    )
    all_equal = dict.fromkeys(scores, 0.0)
    assert select_negative(negs, "swaps", "hardest", clip_scores=all_equal, rng=None) == (
        "d",
        "swaps_3",
    )


def test_hardest_ignores_the_summary_score() -> None:
    # "sum" is the positive's own score and is no candidate even when it is the highest.
    assert select_negative(
        {"basic": ["x", "y"]},
        "basic",
        "hardest",
        clip_scores={"sum": 99.0, "basic_0": 2.0, "basic_1": 1.0},
        rng=None,
    ) == ("x", "basic_0")


def test_rand_is_reproducible_for_a_seed_and_covers_the_candidates() -> None:
    picks = [
        select_negative(NEGS, "any", "rand", clip_scores=None, rng=random.Random(f"7/{i}"))
        for i in range(60)
    ]
    again = [
        select_negative(NEGS, "any", "rand", clip_scores=None, rng=random.Random(f"7/{i}"))
        for i in range(60)
    ]
    assert picks == again
    assert {key for _, key in picks} == {
        "swaps_0",
        "swaps_1",
        "swaps_2",
        "layout_0",
        "layout_1",
        "basic_0",
    }
    for text, key in picks:
        kind, i = key.rsplit("_", 1)
        assert NEGS[kind][int(i)] == text
    only_swaps = {
        key
        for _, key in (
            select_negative(NEGS, "swaps", "rand", clip_scores=None, rng=random.Random(i))
            for i in range(30)
        )
    }
    assert only_swaps == {"swaps_0", "swaps_1", "swaps_2"}


@pytest.mark.parametrize(
    ("negatives", "source", "strategy", "scores", "message"),
    [
        ({"swaps": []}, "swaps", "first", SCORES, "empty list"),
        ({"swaps": []}, "swaps", "rand", SCORES, "empty list"),
        ({"swaps": []}, "swaps", "hardest", SCORES, "empty list"),
        ({"layout": ["l0"]}, "swaps", "first", SCORES, "no 'swaps' negatives"),
        ({"swaps": [], "layout": []}, "any", "first", SCORES, "empty list"),
        (
            {"swaps": ["s0", "s1"]},
            "swaps",
            "hardest",
            {"swaps_0": 1.0},
            "no clip_scores for swaps_1",
        ),
        ({"swaps": ["s0"]}, "swaps", "hardest", None, "needs clip_scores"),
    ],
)
def test_no_usable_negative_raises(
    negatives: dict, source: str, strategy: str, scores: dict | None, message: str
) -> None:
    with pytest.raises(NegativeError, match=message):
        select_negative(negatives, source, strategy, clip_scores=scores, rng=random.Random(0))


def test_programming_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown negative source 'spacy'"):
        select_negative(NEGS, "spacy", "first", clip_scores=None, rng=None)
    with pytest.raises(ValueError, match="unknown negative strategy 'best'"):
        select_negative(NEGS, "swaps", "best", clip_scores=None, rng=None)
    with pytest.raises(ValueError, match=r"needs a seeded random\.Random"):
        select_negative(NEGS, "swaps", "rand", clip_scores=None, rng=None)
