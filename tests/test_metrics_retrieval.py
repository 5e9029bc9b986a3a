"""Retrieval ranks and recall@k on hand-made score matrices (ties counted against the model)."""

from __future__ import annotations

import numpy as np
import pytest

from densecap_eval.metrics import retrieval


def test_ranks_by_hand_with_ties() -> None:
    s = np.array([[0.9, 0.1, 0.5], [0.9, 0.8, 0.2], [0.3, 0.3, 0.3]])
    i2t, t2i = retrieval.retrieval_ranks(s, [0, 1, 2])
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
    i2t, t2i = retrieval.retrieval_ranks(s, [0, 0, 1])
    assert i2t.tolist() == [1, 1, 1]
    # column 0's best owner scores 2.0; image 2 counts against it only when >= 2.0
    assert t2i.tolist() == [t2i_rank, t2i_rank, 1]


def test_constant_scorer_gets_worst_ranks() -> None:
    i2t, t2i = retrieval.retrieval_ranks(np.zeros((4, 4)), [0, 1, 2, 3])
    assert i2t.tolist() == [4] * 4 and t2i.tolist() == [4] * 4
    assert retrieval.recall_at(i2t, 1) == 0.0


def test_chunked_ranks_match_a_direct_loop() -> None:
    rng = np.random.default_rng(0)
    n_img, n_txt = 2100, 40  # more rows than one chunk
    s = rng.integers(0, 6, size=(n_img, n_txt)).astype(np.float32)
    gt = rng.integers(0, n_txt, size=n_img)
    i2t, t2i = retrieval.retrieval_ranks(s, gt)
    for i in range(0, n_img, 97):
        assert i2t[i] == int((s[i] >= s[i, gt[i]]).sum())
        owners = gt == gt[i]
        best = s[owners, gt[i]].max()
        assert t2i[i] == 1 + int((s[~owners, gt[i]] >= best).sum())


def test_recall_of_no_queries_is_none_and_bad_mapping_raises() -> None:
    assert retrieval.recall_at(np.array([], dtype=np.int64), 1) is None
    with pytest.raises(ValueError, match="ground-truth"):
        retrieval.retrieval_ranks(np.zeros((2, 2)), [0, 2])
