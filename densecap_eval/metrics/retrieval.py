"""Image-to-text and text-to-image recall@k over a fixed gallery of images and texts.

``scores`` is (images, texts); ``image_text[i]`` is the column of image ``i``'s own text. Two
images may share a column (identical texts are one gallery item): a text query then has every
image that owns it as a correct answer.

Ranks are 1-based and ties count AGAINST the model (pessimistic): a candidate that scores
exactly as high as the true one is ranked before it. So a constant scorer gets rank = gallery
size, never a lucky R@1, and the result never depends on the order of the gallery.

- image-to-text rank of image i = number of columns scoring >= its own column.
- text-to-image rank of image i's text = 1 + number of images that do not own that text and
  score >= the best owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RECALL_KS: tuple[int, ...] = (1, 5, 10)
_ROW_CHUNK = 2048  # rows compared at once, so memory stays ~ chunk x texts booleans


def retrieval_ranks(scores: np.ndarray, image_text: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(i2t_rank, t2i_rank), both (images,) int64, 1-based, ties pessimistic (module doc)."""
    s = np.asarray(scores)
    gt = np.asarray(image_text, dtype=np.int64)
    n_img, n_txt = s.shape
    if gt.shape != (n_img,):
        raise ValueError(f"{n_img} images but {gt.shape[0]} ground-truth text columns")
    if n_img and (gt.min() < 0 or gt.max() >= n_txt):
        raise ValueError(f"ground-truth text columns must lie in [0, {n_txt})")
    rows = np.arange(n_img)
    own = s[rows, gt]  # score of each image with its own text
    # Best score of each text column over the images that own it.
    best = np.full(n_txt, -np.inf)
    np.maximum.at(best, gt, own)
    i2t = np.empty(n_img, dtype=np.int64)
    at_least_best = np.zeros(n_txt, dtype=np.int64)  # images scoring >= best, per column
    for start in range(0, n_img, _ROW_CHUNK):
        block = s[start : start + _ROW_CHUNK]
        i2t[start : start + len(block)] = (block >= own[start : start + len(block), None]).sum(1)
        at_least_best += (block >= best[None, :]).sum(axis=0)
    owners_at_best = np.bincount(gt[own >= best[gt]], minlength=n_txt)
    t2i_col = at_least_best - owners_at_best + 1
    return i2t, t2i_col[gt]


def recall_at(ranks: np.ndarray, k: int) -> float | None:
    """Share of ranks <= k; None for no queries."""
    ranks = np.asarray(ranks)
    return float((ranks <= k).mean()) if ranks.size else None


def recalls(
    i2t_rank: np.ndarray, t2i_rank: np.ndarray, *, ks: Sequence[int] = RECALL_KS
) -> dict[str, float | None]:
    """``{"i2t_r1": ..., "i2t_r5": ..., "t2i_r1": ...}`` from ranks."""
    out: dict[str, float | None] = {}
    for direction, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        for k in ks:
            out[f"{direction}_r{k}"] = recall_at(ranks, k)
    return out
