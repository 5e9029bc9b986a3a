"""Untruncated CLIP token counts and the statistics `inspect` reports over them."""

from __future__ import annotations

import pytest

from densecap_eval.metrics.tokens import clip_token_counts, token_stats

# Hand-counted: one token per common lower-cased word, one per run of punctuation, plus the
# start and end tokens; HTML entities are unescaped and whitespace collapsed first.
COUNT_CASES = [
    ("", 2),
    ("a dog", 4),
    ("A dog.", 5),
    ("  A   DOG  ", 4),
    ("hello, world!!", 6),
    ("a dog &amp; a cat", 7),
    ("This is an image of tree. a tall oak", 12),
    ("the following can also be seen in the image:", 12),
]


@pytest.mark.parametrize(("text", "expected"), COUNT_CASES)
def test_clip_token_counts_hand_counted(text: str, expected: int) -> None:
    assert clip_token_counts([text]) == [expected]


def test_counts_are_batched_in_order_and_never_truncated() -> None:
    long_text = " ".join(["dog"] * 100)
    assert clip_token_counts(["a dog", long_text, ""]) == [4, 102, 2]
    assert clip_token_counts([]) == []
    assert clip_token_counts(iter(["a dog"])) == [4]


ODD_TEXTS = [
    "a dog",
    "A photo of a red car parked next to a tree, at dusk.",
    "café au lait",
    "naïve façade &amp; the dog&#39;s bowl",
    "Ã© mojibake, \u201ccurly\u201d quotes, don't, it's, we'll",
    "日本語のテキスト and emoji 😀🐕",
    "line one\r\nline two\ttabbed    spaced",
    "numbers 12345 and 3.14, p90 vs. m-12-sc",
    "\x1b[31mred\x1b[0m terminal escapes",
]


def test_counts_match_open_clip_tokenize_below_the_context() -> None:
    import open_clip

    ids = open_clip.tokenize(ODD_TEXTS)  # padded to 77 with zeros after the end token
    assert clip_token_counts(ODD_TEXTS) == [int((row != 0).sum()) for row in ids]


def test_counts_match_open_clip_encode_on_long_texts() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    texts = [" ".join(ODD_TEXTS * k) for k in (1, 5, 20)]
    assert clip_token_counts(texts) == [len(tokenizer.encode(t)) + 2 for t in texts]
    assert clip_token_counts(texts)[-1] > 77 * 5


STATS_CASES = [
    # counts, mean, median, p90 (linear interpolation), max, over_77
    ([10], 10.0, 10.0, 10.0, 10, 0.0),
    ([4, 78], 41.0, 41.0, 70.6, 78, 0.5),
    ([77, 77, 78, 2], 58.5, 77.0, 77.7, 78, 0.25),
    ([5, 1, 3, 2, 4], 3.0, 3.0, 4.6, 5, 0.0),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], 14.5, 5.5, 18.1, 100, 0.1),
]


@pytest.mark.parametrize(("counts", "mean", "median", "p90", "maximum", "over"), STATS_CASES)
def test_token_stats_hand_computed(
    counts: list[int], mean: float, median: float, p90: float, maximum: int, over: float
) -> None:
    stats = token_stats(counts)
    assert stats == {
        "count": len(counts),
        "mean": pytest.approx(mean),
        "median": pytest.approx(median),
        "p90": pytest.approx(p90),
        "max": maximum,
        "over_77": pytest.approx(over),
    }


def test_token_stats_empty_and_other_limits() -> None:
    assert token_stats([]) == {
        "count": 0,
        "mean": None,
        "median": None,
        "p90": None,
        "max": None,
        "over_77": None,
    }
    assert token_stats([60, 70], limit=64)["over_64"] == 0.5


def test_p90_agrees_with_numpy() -> None:
    import numpy as np

    counts = [3, 17, 9, 77, 78, 120, 5, 5, 44]
    assert token_stats(counts)["p90"] == pytest.approx(float(np.percentile(counts, 90)))
