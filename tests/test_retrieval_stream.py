"""Streaming gallery ranks equal the dense path's, bit for bit, ties included.

The dense reference is the path retrieval used before streaming: the full (images, columns)
matrix from 1,024-row ``matrix`` blocks, `ranks_by_rule` and `topk_candidates` on it. The
streaming pass must give the same ranks, tie flags and top-k candidates under both tie rules,
on random data with planted exact ties: duplicated image and text inputs, integer-valued
embeddings whose ties are exact in any summation order, a constant scorer, and a logit
function whose last bits depend on the block's shape (as a BLAS may).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densecap_eval.engine.plan import ScoreTable
from densecap_eval.metrics.retrieval import ranks_by_rule
from densecap_eval.metrics.retrieval_stream import stream_gallery, strip_rows
from densecap_eval.tasks.rerank import topk_candidates

K = 5


def _dot(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    return 4.0 * (img @ txt.T)


def _shape_dependent(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    return 4.0 * (img @ txt.T) + 1e-3 * img.shape[0]


def _constant(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    return torch.zeros((img.shape[0], txt.shape[0]))


def _table(img: np.ndarray, txt: np.ndarray, logit_fn, image_slot=None, text_slot=None):
    return ScoreTable(
        text_tokens=np.zeros(len(txt), dtype=np.int64),
        text_cut=np.zeros(len(txt), dtype=bool),
        image_embeddings=img,
        text_embeddings=txt,
        logit_fn=logit_fn,
        image_slot=image_slot,
        text_slot=text_slot,
    )


def _dense(table: ScoreTable, regions: np.ndarray, columns: np.ndarray, rows: int) -> np.ndarray:
    out = np.empty((len(regions), len(columns)), dtype=np.float32)
    for a in range(0, len(regions), rows):
        out[a : a + rows] = table.matrix(regions[a : a + rows].tolist(), columns.tolist())
    return out


def _check(table: ScoreTable, regions: np.ndarray, columns: np.ndarray, gt: np.ndarray, rows):
    dense = _dense(table, regions, columns, rows)
    want = ranks_by_rule(dense, gt.tolist())
    got = stream_gallery(
        table.strips(regions, columns), len(regions), len(columns), gt, rows=rows, k=K
    )
    for rule in ("pessimistic", "first"):
        for name in ("i2t", "t2i", "i2t_tied", "t2i_tied"):
            assert np.array_equal(getattr(got.ranks[rule], name), getattr(want[rule], name)), (
                rule,
                name,
            )
    assert np.array_equal(got.cand_i2t, topk_candidates(dense, K))
    assert np.array_equal(got.cand_t2i, topk_candidates(dense.T, K))
    return want


def _planted(rng: np.random.Generator, n: int, d: int, *, integer: bool):
    if integer:  # small integers: every dot product exact, ties exact in any order
        img = rng.integers(-2, 3, (n, d)).astype(np.float32)
        txt = rng.integers(-2, 3, (n + 7, d)).astype(np.float32)
    else:
        img = rng.standard_normal((n, d)).astype(np.float32)
        txt = rng.standard_normal((n + 7, d)).astype(np.float32)
    # planted duplicates: the same input under another index (slots say so, as the engine does)
    image_slot = np.arange(n)
    text_slot = np.arange(n + 7)
    for a, b in rng.integers(0, n, (n // 6, 2)):
        lo, hi = min(a, b), max(a, b)
        if lo != hi:
            img[hi] = img[lo]
            image_slot[hi] = image_slot[lo]
    for a, b in rng.integers(0, n + 7, (n // 6, 2)):
        lo, hi = min(a, b), max(a, b)
        if lo != hi:
            txt[hi] = txt[lo]
            text_slot[hi] = text_slot[lo]
    return img, txt, image_slot, text_slot


@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize("logit", [_dot, _shape_dependent])
@pytest.mark.parametrize("rows", [7, 64, 1024])
def test_streaming_equals_dense(integer: bool, logit, rows: int) -> None:
    rng = np.random.default_rng(rows + 10 * integer)
    n = 150
    img, txt, image_slot, text_slot = _planted(rng, n, 6 if integer else 16, integer=integer)
    table = _table(img, txt, logit, image_slot, text_slot)
    # a gallery as the task builds it: regions in any order, texts shared by some images
    regions = rng.permutation(n)
    own_text = rng.integers(0, n + 7, n)
    columns, gt = np.unique(own_text, return_inverse=True)
    want = _check(table, regions, columns, gt.astype(np.int64), rows)
    if integer:  # the planted data has ties the rules decide differently
        assert want["pessimistic"].i2t_tied.any() and want["pessimistic"].t2i_tied.any()
        assert not np.array_equal(want["pessimistic"].i2t, want["first"].i2t)


def test_constant_scorer_every_query_tied() -> None:
    rng = np.random.default_rng(1)
    img = rng.standard_normal((40, 4)).astype(np.float32)
    txt = rng.standard_normal((40, 4)).astype(np.float32)
    table = _table(img, txt, _constant)
    gt = np.arange(40)
    want = _check(table, np.arange(40), np.arange(40), gt, 16)
    assert (want["pessimistic"].i2t == 40).all() and (want["first"].i2t == gt + 1).all()


def test_strip_rows_bound_memory() -> None:
    assert strip_rows(10_000) == 1024 and strip_rows(32_768) == 1024
    assert strip_rows(100_000) * 100_000 <= 1 << 25


def test_strips_equal_matrix_blocks() -> None:
    rng = np.random.default_rng(3)
    img, txt, image_slot, text_slot = _planted(rng, 30, 8, integer=False)
    table = _table(img, txt, _shape_dependent, image_slot, text_slot)
    cols = np.arange(0, 37, 2)
    strip = table.strips(np.arange(30), cols)
    for a, b in ((0, 10), (10, 30), (5, 6)):
        assert np.array_equal(strip(a, b), table.block(np.arange(a, b), cols))
