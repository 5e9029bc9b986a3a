"""Retrieval ranks and recall@k on hand-made score matrices, under both tie rules (pessimistic:
ties counted against the model; first: the first index of the maximum), and re-ranking."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from densecap_eval.metrics import retrieval


def retrieval_ranks(scores: Any, image_text: Any, *, ties: str = "pessimistic") -> Any:
    """(i2t, t2i) ranks under one tie rule."""
    ranks = retrieval.ranks_by_rule(scores, image_text)[retrieval.check_ties(ties)]
    return ranks.i2t, ranks.t2i


def test_ranks_by_hand_with_ties() -> None:
    s = np.array([[0.9, 0.1, 0.5], [0.9, 0.8, 0.2], [0.3, 0.3, 0.3]])
    i2t, t2i = retrieval_ranks(s, [0, 1, 2])
    # image 0: only its own column >= 0.9; image 1: column 0 (0.9) beats 0.8;
    # image 2: all three columns tie at 0.3 -> last (pessimistic)
    assert i2t.tolist() == [1, 2, 3]
    # text 0: image 1 ties with the owner (0.9) -> 2; text 1: owner best; text 2: image 0 (0.5) beats 0.3
    assert t2i.tolist() == [2, 1, 2]
    r = retrieval.recalls(i2t, t2i)
    assert r["i2t_r1"] == pytest.approx(1 / 3)
    assert r["t2i_r1"] == pytest.approx(1 / 3)
    assert r["i2t_r5"] == 1.0 and r["t2i_r10"] == 1.0


@pytest.mark.parametrize(("intruder", "t2i_rank"), [(1.5, 1), (2.0, 2), (2.5, 2)])
def test_shared_text_column_counts_every_owner_as_correct(intruder: float, t2i_rank: int) -> None:
    # images 0 and 1 have the same text (one gallery column); image 2 owns column 1
    s = np.array([[1.0, 0.0], [2.0, 0.0], [intruder, 5.0]])
    i2t, t2i = retrieval_ranks(s, [0, 0, 1])
    assert i2t.tolist() == [1, 1, 1]
    # column 0's best owner scores 2.0; image 2 counts against it only when >= 2.0
    assert t2i.tolist() == [t2i_rank, t2i_rank, 1]


def test_constant_scorer_gets_worst_ranks() -> None:
    i2t, t2i = retrieval_ranks(np.zeros((4, 4)), [0, 1, 2, 3])
    assert i2t.tolist() == [4] * 4 and t2i.tolist() == [4] * 4
    assert retrieval.recall_at(i2t, 1) == 0.0


def test_chunked_ranks_match_a_direct_loop() -> None:
    rng = np.random.default_rng(0)
    n_img, n_txt = 2100, 40  # more rows than one chunk
    s = rng.integers(0, 6, size=(n_img, n_txt)).astype(np.float32)
    gt = rng.integers(0, n_txt, size=n_img)
    i2t, t2i = retrieval_ranks(s, gt)
    for i in range(0, n_img, 97):
        assert i2t[i] == int((s[i] >= s[i, gt[i]]).sum())
        owners = gt == gt[i]
        best = s[owners, gt[i]].max()
        assert t2i[i] == 1 + int((s[~owners, gt[i]] >= best).sum())


def test_recall_of_no_queries_is_none_and_bad_mapping_raises() -> None:
    assert retrieval.recall_at(np.array([], dtype=np.int64), 1) is None
    with pytest.raises(ValueError, match="ground-truth"):
        retrieval_ranks(np.zeros((2, 2)), [0, 2])


# -- tie rules: hand-computed ranks under both rules -------------------------------------------

TIE_CASES = [
    pytest.param(
        # image 2 ties all three columns; column 0: image 1 (index 1) ties the owner image 0
        [[0.9, 0.1, 0.5], [0.9, 0.8, 0.2], [0.3, 0.3, 0.3]],
        [0, 1, 2],
        {"pessimistic": ([1, 2, 3], [2, 1, 2]), "first": ([1, 2, 3], [1, 1, 2])},
        ([False, False, True], [True, False, False]),
        id="lower-owner-wins-under-first",
    ),
    pytest.param(
        # images 0 and 1 tie with a HIGHER column (first: they win), image 2 with lower ones
        [[0.5, 0.5, 0.1], [0.2, 0.7, 0.7], [0.4, 0.4, 0.4]],
        [0, 1, 2],
        {"pessimistic": ([2, 2, 3], [1, 1, 2]), "first": ([1, 1, 3], [1, 1, 2])},
        ([True, True, True], [False, False, False]),
        id="i2t-higher-index-ties",
    ),
    pytest.param(
        # column 0 is owned by images 0 and 2; image 1 (between them) ties their best 2.0:
        # first -> the first owner at the best score (image 0) ranks before image 1
        [[2.0, 0.0], [2.0, 5.0], [2.0, 0.0]],
        [0, 1, 0],
        {"pessimistic": ([1, 1, 1], [2, 1, 2]), "first": ([1, 1, 1], [1, 1, 1])},
        ([False, False, False], [True, False, True]),
        id="shared-column-first-owner",
    ),
    pytest.param(
        # column 0 owned by images 1 and 2 (best 2.0 at image 2); image 0 ties it from below
        [[2.0, 5.0], [1.0, 0.0], [2.0, 0.0]],
        [1, 0, 0],
        {"pessimistic": ([1, 1, 1], [1, 2, 2]), "first": ([1, 1, 1], [1, 2, 2])},
        ([False, False, False], [False, True, True]),
        id="shared-column-lower-intruder",
    ),
    pytest.param(
        np.zeros((4, 4)).tolist(),
        [0, 1, 2, 3],
        {"pessimistic": ([4, 4, 4, 4], [4, 4, 4, 4]), "first": ([1, 2, 3, 4], [1, 2, 3, 4])},
        ([True] * 4, [True] * 4),
        id="constant-scorer",
    ),
]


@pytest.mark.parametrize(("scores", "gt", "want", "tied"), TIE_CASES)
def test_tie_rules_by_hand(
    scores: list[list[float]],
    gt: list[int],
    want: dict[str, tuple[list[int], list[int]]],
    tied: tuple[list[bool], list[bool]],
) -> None:
    s = np.array(scores)
    by_rule = retrieval.ranks_by_rule(s, gt)
    for rule, (i2t, t2i) in want.items():
        got = retrieval_ranks(s, gt, ties=rule)
        assert (got[0].tolist(), got[1].tolist()) == (i2t, t2i), rule
        ranks = by_rule[rule]
        assert (ranks.i2t.tolist(), ranks.t2i.tolist()) == (i2t, t2i), rule
        assert (ranks.i2t_tied.tolist(), ranks.t2i_tied.tolist()) == tied, rule
    # the default is today's pessimistic rule
    default = retrieval_ranks(s, gt)
    assert (default[0].tolist(), default[1].tolist()) == want["pessimistic"]


def test_first_rule_is_a_stable_descending_sort() -> None:
    """``first`` = 1 + position in np.argsort(-scores, kind="stable") (np.argmax-style)."""
    rng = np.random.default_rng(1)
    n_img, n_txt = 2100, 30  # more rows than one chunk; few values, so many ties
    s = rng.integers(0, 4, size=(n_img, n_txt)).astype(np.float32)
    gt = rng.integers(0, n_txt, size=n_img)
    ranks = retrieval.ranks_by_rule(s, gt)
    first, pess = ranks["first"], ranks["pessimistic"]
    for i in range(0, n_img, 53):
        order = np.argsort(-s[i], kind="stable")
        assert first.i2t[i] == 1 + int(np.flatnonzero(order == gt[i])[0])
        owners = gt == gt[i]
        col = s[:, gt[i]]
        order_t = np.argsort(-col, kind="stable")
        assert first.t2i[i] == 1 + int(np.flatnonzero(owners[order_t])[0])  # best-ranked owner
        best = col[owners].max()
        assert pess.t2i[i] == 1 + int((col[~owners] >= best).sum())
        assert first.i2t_tied[i] == (int((s[i] == s[i, gt[i]]).sum()) > 1)
        assert first.t2i_tied[i] == bool((col[~owners] == best).any())
    # a tied query is exactly one whose rank depends on the rule
    assert ((pess.i2t != first.i2t) <= first.i2t_tied).all()
    assert (pess.i2t >= first.i2t).all() and (pess.t2i >= first.t2i).all()
    untied = ~first.i2t_tied
    assert (pess.i2t[untied] == first.i2t[untied]).all()


def test_unknown_tie_rule_raises() -> None:
    from densecap_eval.core.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"tie rule 'optimistic'.*pessimistic, first"):
        retrieval_ranks(np.zeros((2, 2)), [0, 1], ties="optimistic")


# -- re-ranking with a pair scorer honours the rule --------------------------------------------

RERANK_CASES = [
    # (first_rank, owner, pair_scores, pessimistic, first, tied); candidates in first-stage order
    pytest.param([2], [[0, 1, 0]], [[0.1, 0.9, 0.5]], 1, 1, False, id="clear-win"),
    pytest.param([1], [[1, 0, 0]], [[0.5, 0.5, 0.1]], 2, 1, True, id="tie-with-later"),
    pytest.param([2], [[0, 1, 0]], [[0.5, 0.5, 0.1]], 2, 2, True, id="tie-with-earlier"),
    pytest.param([1], [[1, 0, 1]], [[0.1, 0.4, 0.3]], 2, 2, False, id="two-owners"),
    pytest.param([1], [[1, 0, 1]], [[0.4, 0.4, 0.4]], 2, 1, True, id="two-owners-all-tie"),
    pytest.param([3], [[0, 0, 1]], [[0.4, 0.4, 0.4]], 3, 3, True, id="last-of-three-ties"),
    pytest.param([7], [[0, 0, 0]], [[0.9, 0.8, 0.7]], 7, 7, None, id="outside-top-k"),
]


@pytest.mark.parametrize(("first_rank", "owner", "ps", "pess", "first", "tied"), RERANK_CASES)
def test_rerank_ranks_both_rules(
    first_rank: list[int],
    owner: list[list[int]],
    ps: list[list[float]],
    pess: int,
    first: int,
    tied: bool | None,
) -> None:
    from densecap_eval.tasks.rerank import rerank_ranks, rerank_tied

    args = (np.array(first_rank), np.array(owner, dtype=bool), np.array(ps))
    assert rerank_ranks(*args).tolist() == [pess]  # default: pessimistic
    assert rerank_ranks(*args, ties="pessimistic").tolist() == [pess]
    assert rerank_ranks(*args, ties="first").tolist() == [first]
    for first_tied in (False, True):  # a query outside the top k keeps its first-stage flag
        got = rerank_tied(np.array([first_tied]), args[1], args[2]).tolist()
        assert got == [first_tied if tied is None else tied]
