"""Image-to-text and text-to-image recall@k over a fixed gallery of images and texts.

``scores`` is (images, texts); ``image_text[i]`` is the column of image ``i``'s own text. Two
images may share a column (identical texts are one gallery item): a text query then has every
image that owns it as a correct answer, and its rank is that of the best-ranked owner.

Ranks are 1-based. Two tie rules (``ties=``):

- ``pessimistic`` (default): ties count AGAINST the model. A wrong candidate that scores
  exactly as high as the true one is ranked before it. A constant scorer gets rank = gallery
  size, never a lucky R@1, and the result never depends on the order of the gallery.

  - image-to-text rank of image i = number of columns scoring >= its own column.
  - text-to-image rank of image i's text = 1 + number of images that do not own that text and
    score >= the best owner.
- ``first``: the first index of the maximum, as ``np.argmax`` / a stable descending sort rank
  (what published CLIP retrieval code computes). Among candidates that tie with the true one,
  those with a LOWER gallery index rank before it, those with a higher index after it.

  - image-to-text rank of image i = 1 + columns scoring > its own column + columns with a lower
    index scoring exactly as much.
  - text-to-image rank = 1 + non-owners scoring > the best owner + non-owners with a lower
    index than the first owner at that best score, scoring exactly as much.

A query is *tied* when at least one wrong candidate scores exactly its true candidate's score
(for a text query: its best owner's score). Those, and only those, are the queries whose rank
depends on the tie rule; `GalleryRanks` carries the flags and the task reports their number
(``i2t_tied``, ``t2i_tied``). A text-to-image query is counted once per image owning the text,
like its recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from densecap_eval.core.errors import UnknownNameError

TieRule = Literal["pessimistic", "first"]
TIE_RULES: tuple[str, ...] = ("pessimistic", "first")
RECALL_KS: tuple[int, ...] = (1, 5, 10)
_ROW_CHUNK = 1024  # rows compared at once, so memory stays ~ chunk x texts booleans


def check_ties(ties: str) -> TieRule:
    """``ties`` when it names a tie rule; `UnknownNameError` listing the rules otherwise."""
    if ties not in TIE_RULES:
        raise UnknownNameError(f"unknown tie rule {ties!r} (known: {', '.join(TIE_RULES)})")
    return ties  # type: ignore[return-value]


class GalleryRanks(NamedTuple):
    """Ranks under one tie rule, with the tie flags (all (images,), per image's queries)."""

    i2t: np.ndarray  # int64, 1-based
    t2i: np.ndarray  # int64, 1-based, rank of image i's text query
    i2t_tied: np.ndarray  # bool: a wrong column scores exactly the image's own column
    t2i_tied: np.ndarray  # bool: a non-owner scores exactly the best owner of image i's text


def ranks_by_rule(scores: np.ndarray, image_text: Sequence[int]) -> dict[str, GalleryRanks]:
    """Ranks under every tie rule (module doc) from ONE pass over ``scores``: ``{rule: ranks}``."""
    s = np.asarray(scores)
    gt = np.asarray(image_text, dtype=np.int64)
    n_img, n_txt = s.shape
    if gt.shape != (n_img,):
        raise ValueError(f"{n_img} images but {gt.shape[0]} ground-truth text columns")
    if n_img and (gt.min() < 0 or gt.max() >= n_txt):
        raise ValueError(f"ground-truth text columns must lie in [0, {n_txt})")
    rows = np.arange(n_img)
    cols = np.arange(n_txt)
    own = s[rows, gt]  # score of each image with its own text
    # Best score of each text column over the images that own it, and its first such owner.
    # In the scores' own dtype: comparing a float32 block with a float64 row would make float64
    # temporaries of the whole block (twice the memory, for nothing: the values are float32).
    best = np.full(n_txt, -np.inf, dtype=s.dtype if s.dtype.kind == "f" else np.float64)
    np.maximum.at(best, gt, own)
    at_best = own >= best[gt]
    owners_at_best = np.bincount(gt[at_best], minlength=n_txt)
    first_owner = np.full(n_txt, n_img, dtype=np.int64)
    np.minimum.at(first_owner, gt[at_best], rows[at_best])

    i2t_above = np.empty(n_img, dtype=np.int64)  # columns scoring > own
    i2t_equal = np.empty(n_img, dtype=np.int64)  # columns scoring == own (own included)
    i2t_equal_before = np.empty(n_img, dtype=np.int64)  # ... with a lower index than own
    t2i_above = np.zeros(n_txt, dtype=np.int64)  # images scoring > best (never an owner)
    t2i_equal = np.zeros(n_txt, dtype=np.int64)  # images scoring == best (owners included)
    t2i_equal_before = np.zeros(n_txt, dtype=np.int64)  # ... above the first owner at best
    for start in range(0, n_img, _ROW_CHUNK):
        block = s[start : start + _ROW_CHUNK]
        part = slice(start, start + len(block))
        mine = own[part, None]
        equal = block == mine
        i2t_above[part] = (block > mine).sum(axis=1)
        i2t_equal[part] = equal.sum(axis=1)
        i2t_equal_before[part] = (equal & (cols[None, :] < gt[part, None])).sum(axis=1)
        equal_best = block == best[None, :]
        t2i_above += (block > best[None, :]).sum(axis=0)
        t2i_equal += equal_best.sum(axis=0)
        t2i_equal_before += (equal_best & (rows[part, None] < first_owner[None, :])).sum(axis=0)

    pessimistic, first = ranks_from_counts(
        i2t_above, i2t_equal, i2t_equal_before,
        t2i_above, t2i_equal, t2i_equal_before, owners_at_best, gt,
    )  # fmt: skip
    return {"pessimistic": pessimistic, "first": first}


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


def ranks_from_counts(
    i2t_above: np.ndarray,
    i2t_equal: np.ndarray,
    i2t_equal_before: np.ndarray,
    t2i_above: np.ndarray,
    t2i_equal: np.ndarray,
    t2i_equal_before: np.ndarray,
    owners_at_best: np.ndarray,
    gt: np.ndarray,
) -> tuple[GalleryRanks, GalleryRanks]:
    """Both tie rules' ranks from the per-query counts of better, equal and equal-earlier scores
    (the dense path and the streaming one count the same things)."""
    i2t_tied = i2t_equal > 1
    t2i_tied_col = t2i_equal > owners_at_best
    pessimistic = GalleryRanks(
        i2t=i2t_above + i2t_equal,
        t2i=(t2i_above + t2i_equal - owners_at_best + 1)[gt],
        i2t_tied=i2t_tied,
        t2i_tied=t2i_tied_col[gt],
    )
    first = GalleryRanks(
        i2t=1 + i2t_above + i2t_equal_before,
        t2i=(1 + t2i_above + t2i_equal_before)[gt],
        i2t_tied=i2t_tied,
        t2i_tied=t2i_tied_col[gt],
    )
    return pessimistic, first
