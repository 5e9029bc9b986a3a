"""Text policies on hand-made counts: a fake tokenizer where a text costs its words + 2 tokens."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from densecap_eval.core.errors import TextTooLongError, UnknownNameError
from densecap_eval.scorers.text_policy import plan_texts, pool_pieces, split_chunks


def words_plus_two(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) + 2 for t in texts]


@pytest.mark.parametrize(
    ("text", "limit", "chunks", "cut"),
    [
        # sentences of 3, 2 and 6 words; the last alone is too long and splits between words
        ("A b c. D e. F g h i j k.", 6, ["A b c.", "D e.", "F g h i", "j k."], False),
        # with room for 5 words the first two sentences share a chunk
        ("A b c. D e. F g h i j k.", 7, ["A b c. D e.", "F g h i j", "k."], False),
        # line breaks end sentences too; question and exclamation marks as well
        ("One two\nthree four? Five!", 4, ["One two", "three four?", "Five!"], False),
        # a limit below one word's cost: every word is its own chunk and still cut
        ("alpha beta", 2, ["alpha", "beta"], True),
    ],
)
def test_split_chunks(text: str, limit: int, chunks: list[str], cut: bool) -> None:
    assert split_chunks(text, limit=limit, count=words_plus_two) == (chunks, cut)


def test_truncate_plan_marks_texts_over_the_limit() -> None:
    plan = plan_texts(
        ["a b c d", "a b c d e"], policy="truncate", limit=6, count=words_plus_two, model="m"
    )
    assert plan.pieces == ["a b c d", "a b c d e"]
    assert plan.owners == [0, 1]
    assert plan.n_tokens == [6, 7]
    assert plan.cut == [False, True]


def test_chunk_mean_keeps_short_texts_whole_and_splits_long_ones() -> None:
    plan = plan_texts(
        ["a b.", "c d e. f g h."], policy="chunk-mean", limit=5, count=words_plus_two, model="m"
    )
    assert plan.pieces == ["a b.", "c d e.", "f g h."]
    assert plan.owners == [0, 1, 1]
    assert plan.n_tokens == [4, 8]
    assert plan.cut == [False, False]


def test_error_policy_names_text_count_and_limit() -> None:
    long_text = "one two three four five six seven eight nine ten"
    with pytest.raises(TextTooLongError) as err:
        plan_texts(["ok", long_text], policy="error", limit=6, count=words_plus_two, model="m:x")
    message = str(err.value)
    assert "m:x" in message and "12 tokens" in message and "limit of 6" in message
    assert "one two three four five six seven eight ..." in message


def test_error_policy_accepts_texts_within_the_limit() -> None:
    plan = plan_texts(["a b c d"], policy="error", limit=6, count=words_plus_two, model="m")
    assert plan.cut == [False]


def test_unknown_policy() -> None:
    with pytest.raises(UnknownNameError, match="chunk-mean"):
        plan_texts(["a"], policy="chunk", limit=6, count=words_plus_two, model="m")  # type: ignore[arg-type]


def test_pool_pieces_averages_then_renormalises() -> None:
    pieces = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    out = pool_pieces(pieces, [0, 0, 1], 2)
    half = 2**-0.5
    assert torch.allclose(out[0], torch.tensor([half, half]), atol=1e-7)
    assert torch.equal(out[1], torch.tensor([0.6, 0.8]))  # a single piece is kept bit for bit


def test_pool_pieces_one_piece_per_text_is_identity() -> None:
    pieces = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    assert torch.equal(pool_pieces(pieces, [0, 1], 2), pieces)
