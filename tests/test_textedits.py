"""The rule-based negatives generator: each kind, determinism, spans, spread over the caption."""

from __future__ import annotations

import hashlib
import re

import pytest

from densecap_eval.tasks.textedits import (
    COLORS,
    EDIT_KINDS,
    NUMBER_WORDS,
    OBJECT_NOUNS,
    SPATIAL_FLIPS,
    Edit,
    edit_candidates,
    generate_negatives,
    plural,
    stable_seed,
)

CAPTION = (
    "A drawing of a gray box, a red flag and a white tree under a pink sky.\n"
    "The white tree is in front of the gray box. The box is on the left and has two black "
    "wheels and 3 small lids. A large kite flies above the wooden fence."
)


def _only(text: str, kind: str, seed: int = 0) -> Edit:
    edits = generate_negatives(text, seed=seed, kinds=(kind,))
    assert len(edits) == 1, edits
    return edits[0]


def _check(edit: Edit) -> None:
    """The span tells exactly where source and negative differ."""
    src, neg = edit.source, edit.text
    assert neg != src
    assert src[edit.start : edit.end] == edit.before
    assert neg == src[: edit.start] + edit.after + src[edit.end :]
    assert edit.before[0] != edit.after[0] or edit.before != edit.after
    assert edit.word_index == len(src[: edit.start].split())


def test_color() -> None:
    edit = _only("a red car parked", "color")
    _check(edit)
    assert (edit.kind, edit.before, edit.start, edit.end, edit.word_index) == (
        "color",
        "red",
        2,
        5,
        1,
    )
    assert edit.after in COLORS and edit.after != "red"
    assert edit.text == f"a {edit.after} car parked"
    # case follows the replaced word; grey is never "changed" to gray
    for seed in range(30):
        e = _only("Grey walls.", "color", seed)
        assert e.after[0].isupper() and e.after.lower() not in ("grey", "gray")


def test_number_words_and_digits() -> None:
    edit = _only("there are two black wheels", "number")
    _check(edit)
    assert edit.before == "two" and edit.after in NUMBER_WORDS and edit.after != "two"
    assert abs(NUMBER_WORDS.index(edit.after) - NUMBER_WORDS.index("two")) <= 3
    digit = _only("it has 3 lids, 1.5 metres", "number")  # "1.5" is not a count
    _check(digit)
    assert digit.before == "3" and int(digit.after) != 3 and int(digit.after) >= 2
    assert edit_candidates("one car, no bus, 1.5 m, 2nd row", "number") == 0


@pytest.mark.parametrize(
    ("text", "before", "after"),
    [
        ("the box is on the left", "left", "right"),
        ("a tree in front of a house", "in front of", "behind"),
        ("the lamp Above the bed", "Above", "Below"),
        ("the top shelf", "top", "bottom"),
    ],
)
def test_spatial(text: str, before: str, after: str) -> None:
    edit = _only(text, "spatial")
    _check(edit)
    assert (edit.before, edit.after) == (before, after)
    assert edit_candidates("a bright light", "spatial") == 0  # word boundaries


def test_object_keeps_number() -> None:
    one = _only("a dog sleeps", "object")
    _check(one)
    assert one.before == "dog" and one.after != "dog" and not one.after.endswith("s")
    many = _only("two black wheels", "object")
    _check(many)
    assert many.before == "wheels" and many.after != "wheels"
    assert many.after in {plural(n) for n in OBJECT_NOUNS}
    assert plural("bus") == "buses" and plural("person") == "people" and plural("sky") == "skies"


def test_binding_swaps_two_attributes_of_one_sentence() -> None:
    edit = _only("a red car and a blue bus. A green tree.", "binding")
    _check(edit)
    assert edit.text == "a blue car and a red bus. A green tree."
    assert (edit.start, edit.before, edit.after) == (2, "red car and a blue", "blue car and a red")
    # attributes of different classes, same value, or the same head never swap
    for text in ("a red car and a big bus", "a red car and a red bus", "a red car and a blue car"):
        assert edit_candidates(text, "binding") == 0, text
    # nor across sentences, nor onto function words
    assert edit_candidates("a red car. A blue bus.", "binding") == 0
    assert edit_candidates("red and blue", "binding") == 0
    assert edit_candidates("a small box and a large house", "binding") == 1


def test_every_kind_on_a_long_caption() -> None:
    edits = generate_negatives(CAPTION, seed=7)
    assert [e.kind for e in edits] == list(EDIT_KINDS)
    for e in edits:
        _check(e)


def test_deterministic_for_a_seed_and_seeds_differ() -> None:
    a = generate_negatives(CAPTION, seed=3, per_kind=3)
    b = generate_negatives(CAPTION, seed=3, per_kind=3)
    assert a == b
    outs = {
        tuple(e.text for e in generate_negatives(CAPTION, seed=s, per_kind=2)) for s in range(8)
    }
    assert len(outs) > 1
    # a kind's edits do not depend on which other kinds are asked for
    alone = generate_negatives(CAPTION, seed=3, kinds=("spatial",), per_kind=3)
    assert alone == [e for e in a if e.kind == "spatial"]


def test_stable_seed_is_fixed_across_runs() -> None:
    # sha256-based: this number is the same on every machine and Python version
    assert stable_seed(0, "img-1") == stable_seed(0, "img-1")
    assert stable_seed(0, "img-1") != stable_seed(1, "img-1") != stable_seed(0, "img-2")
    want = int.from_bytes(hashlib.sha256(b"0\x1fa").digest()[:8], "little")
    assert stable_seed(0, "a") == want == 17035932339863366895


def test_per_kind_edits_distinct_places_in_text_order() -> None:
    edits = generate_negatives(CAPTION, seed=1, kinds=("color",), per_kind=4)
    assert len(edits) == 4
    starts = [e.start for e in edits]
    assert starts == sorted(set(starts))
    n = edit_candidates(CAPTION, "color")
    assert len(generate_negatives(CAPTION, seed=1, kinds=("color",), per_kind=99)) == n


def test_edits_spread_over_a_long_caption() -> None:
    text = " ".join(f"Sentence {i} has a red ball." for i in range(40))
    starts = [_only(text, "color", seed).start for seed in range(200)]
    half = len(text) // 2
    late = sum(s > half for s in starts)
    assert 60 < late < 140  # uniform over occurrences, not the first one


def test_nothing_to_edit_and_unknown_kind() -> None:
    assert generate_negatives("nothing here at all", seed=0) == []
    with pytest.raises(ValueError, match="unknown edit kind"):
        generate_negatives("a red car", seed=0, kinds=("colour",))
    with pytest.raises(ValueError, match="per_kind"):
        generate_negatives("a red car", seed=0, per_kind=0)


def test_an_edit_that_changes_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="unchanged"):
        Edit("color", "a red car", "a red car", 2, 5, "red", "red", 1)
    with pytest.raises(ValueError, match="outside"):
        Edit("color", "a red car", "a blue bus", 2, 5, "red", "blue", 1)


def test_lexicons_are_lower_case_words() -> None:
    for word in (*COLORS, *NUMBER_WORDS, *SPATIAL_FLIPS, *SPATIAL_FLIPS.values()):
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", word), word
