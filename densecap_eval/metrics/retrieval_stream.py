"""Gallery ranks and top-k candidates from row strips of the score matrix, never N x N.

`stream_gallery` reads the (images, columns) scores one strip of rows at a time, twice:

1. each image's own score (from its own strip, the same matmul as every column it competes
   with), its image-to-text counts (columns scoring more, as much, as much with a lower index),
   the best owner score of every column and its first owner, and each image's top-k columns;
2. with every column's best owner score known, its text-to-image counts (images scoring more,
   as much, as much above the first owner) and its top-k images.

The counts are those of `densecap_eval.metrics.retrieval.ranks_by_rule` (the dense reference,
same tie rules), so given the same strips the ranks are identical bit for bit: a strip is
recomputed in pass 2 exactly as in pass 1 (same rows, same columns, same kernel). Memory is
one strip and its comparison masks, whatever the gallery size; time is two passes of matmuls.

Top-k order is `densecap_eval.tasks.rerank.first_stage_order`'s: score descending, ties to the
lower index. Each (score, index) is packed into one int64 whose order is exactly that, so
``torch.topk`` (which breaks ties arbitrarily) can select without ambiguity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from densecap_eval.core.heap import give_back_freed
from densecap_eval.metrics.retrieval import GalleryRanks, ranks_from_counts

Strip = Callable[[int, int], np.ndarray]  # (start, stop) -> (stop - start, columns) float32

_STRIP_CELLS = 1 << 25  # cells per strip: 128 MB of float32 at most
_MAX_STRIP_ROWS = 1024
_TOPK_CELLS = 1 << 23  # cells packed into int64 keys at once (64 MB)
_LOW = np.int64(0xFFFFFFFF)


def strip_rows(n_columns: int) -> int:
    """Rows per strip: 1024 (what the dense path always used) up to 32,768 columns, fewer
    beyond, so one strip stays under 128 MB."""
    return max(1, min(_MAX_STRIP_ROWS, _STRIP_CELLS // max(n_columns, 1)))


class StreamedGallery(NamedTuple):
    ranks: dict[str, GalleryRanks]  # per tie rule, as `ranks_by_rule` returns them
    cand_i2t: np.ndarray  # (images, min(k, columns)) columns, best first
    cand_t2i: np.ndarray  # (columns, min(k, images)) images, best first


def stream_gallery(
    strip: Strip,
    n_images: int,
    n_columns: int,
    image_text: Sequence[int] | np.ndarray,
    *,
    rows: int | None = None,
    k: int = 0,
) -> StreamedGallery:
    """Ranks under every tie rule and each query's top ``k`` candidates (module doc).

    ``strip(a, b)`` gives rows ``a:b`` of the (images, columns) scores and must give the same
    floats when asked twice; ``image_text[i]`` is image i's own column; ``rows`` is the strip
    height (default `strip_rows`).
    """
    gt = np.asarray(image_text, dtype=np.int64).reshape(-1)
    if gt.shape != (n_images,):
        raise ValueError(f"{n_images} images but {gt.shape[0]} ground-truth text columns")
    if n_images and (gt.min() < 0 or gt.max() >= n_columns):
        raise ValueError(f"ground-truth text columns must lie in [0, {n_columns})")
    step = rows or strip_rows(n_columns)
    k_i2t, k_t2i = min(k, n_columns), min(k, n_images)

    # Two comparison masks the size of a strip, allocated once and written in place: masks
    # and strips allocated afresh for every strip fragment the heap (glibc keeps the freed
    # blocks), and the process grew by several strips' worth with the gallery.
    masks = np.empty((2, min(step, n_images), n_columns), dtype=bool)
    i2t = _image_pass(strip, gt, n_columns, step=step, k=k_i2t, masks=masks)
    i2t_above, i2t_equal, i2t_equal_before, cand_i2t, own = i2t

    # Best owner score of each column and its first owner at that score.
    best = np.full(n_columns, -np.inf, dtype=np.float32)
    np.maximum.at(best, gt, own)
    at_best = own >= best[gt]
    owners_at_best = np.bincount(gt[at_best], minlength=n_columns)
    first_owner = np.full(n_columns, n_images, dtype=np.int64)
    np.minimum.at(first_owner, gt[at_best], np.flatnonzero(at_best))

    t2i = _column_pass(strip, n_images, best, first_owner, step=step, k=k_t2i, masks=masks)
    t2i_above, t2i_equal, t2i_equal_before, top_keys = t2i
    del masks
    give_back_freed()  # the last strip and the masks, before the caller builds its rows

    pessimistic, first = ranks_from_counts(
        i2t_above, i2t_equal, i2t_equal_before,
        t2i_above, t2i_equal, t2i_equal_before, owners_at_best, gt,
    )  # fmt: skip
    cand_t2i = (
        _unpack(top_keys).T.copy()
        if top_keys is not None
        else np.empty((n_columns, k_t2i), dtype=np.int64)
    )
    return StreamedGallery({"pessimistic": pessimistic, "first": first}, cand_i2t, cand_t2i)


def _image_pass(
    strip: Strip, gt: np.ndarray, n_columns: int, *, step: int, k: int, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first pass, strip by strip: each image's counts against its own column's score
    (above, equal, equal and earlier), its top ``k`` columns, and its own score."""
    n_images = len(gt)
    cols = np.arange(n_columns)
    own = np.empty(n_images, dtype=np.float32)
    above = np.empty(n_images, dtype=np.int64)
    equal_all = np.empty(n_images, dtype=np.int64)
    equal_before = np.empty(n_images, dtype=np.int64)
    cand = np.empty((n_images, k), dtype=np.int64)
    for start in range(0, n_images, step):
        s = _scores(strip, start, min(n_images, start + step), n_columns)
        part = slice(start, start + len(s))
        mask, equal = masks[0, : len(s)], masks[1, : len(s)]
        mine = s[np.arange(len(s)), gt[part]][:, None]
        own[part] = mine[:, 0]
        above[part] = np.count_nonzero(np.greater(s, mine, out=mask), axis=1)
        equal_all[part] = np.count_nonzero(np.equal(s, mine, out=equal), axis=1)
        equal &= np.less(cols[None, :], gt[part, None], out=mask)
        equal_before[part] = np.count_nonzero(equal, axis=1)
        if k:
            cand[part] = _topk_rows(s, k)
        del s  # before the next strip is computed: one strip alive at a time
    return above, equal_all, equal_before, cand, own


def _column_pass(
    strip: Strip,
    n_images: int,
    best: np.ndarray,
    first_owner: np.ndarray,
    *,
    step: int,
    k: int,
    masks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The second pass: each column's counts against its best owner's score (above, equal,
    equal and from an earlier image than its first owner at that score), and the packed keys
    of its top ``k`` images."""
    n_columns = len(best)
    above = np.zeros(n_columns, dtype=np.int64)
    equal_all = np.zeros(n_columns, dtype=np.int64)
    equal_before = np.zeros(n_columns, dtype=np.int64)
    top_keys: np.ndarray | None = None  # (k, columns) packed keys of the best images so far
    for start in range(0, n_images, step):
        s = _scores(strip, start, min(n_images, start + step), n_columns)
        image_idx = np.arange(start, start + len(s))
        mask, equal_best = masks[0, : len(s)], masks[1, : len(s)]
        above += np.count_nonzero(np.greater(s, best[None, :], out=mask), axis=0)
        equal_all += np.count_nonzero(np.equal(s, best[None, :], out=equal_best), axis=0)
        equal_best &= np.less(image_idx[:, None], first_owner[None, :], out=mask)
        equal_before += np.count_nonzero(equal_best, axis=0)
        if k:
            top_keys = _merge_top_columns(top_keys, s, image_idx, k)
        del s
    return above, equal_all, equal_before, top_keys


def _scores(strip: Strip, start: int, stop: int, n_columns: int) -> np.ndarray:
    # A strip under 32 MB comes from glibc's heap once a larger block has been freed, and the
    # small allocations between strips land in the freed strip's hole, so each new strip took
    # fresh pages: the process kept ~4 strips (x gallery width) it no longer used. Handing the
    # freed pages back first keeps the peak at one strip.
    give_back_freed()
    s = np.asarray(strip(start, stop))
    if s.shape != (stop - start, n_columns):
        raise ValueError(
            f"strip {start}:{stop} has shape {s.shape}, not {(stop - start, n_columns)}"
        )
    return s


def _pack(scores: np.ndarray, index: np.ndarray) -> np.ndarray:
    """int64 keys ordered as (score, then LOWER index) is: high 32 bits an order-preserving
    image of the float32 score, low 32 bits the complement of the index."""
    s = np.asarray(scores, dtype=np.float32) + np.float32(
        0
    )  # -0.0 -> 0.0: equal scores, equal keys
    bits = s.view(np.int32)
    ordered = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))  # float order as signed int order
    return (ordered.astype(np.int64) << 32) | (_LOW - np.asarray(index, dtype=np.int64))


def _unpack(keys: np.ndarray) -> np.ndarray:
    return _LOW - (keys & _LOW)


def _topk_rows(s: np.ndarray, k: int) -> np.ndarray:
    """Each row's k best column indices, best first (score descending, ties to lower index)."""
    import torch

    out = np.empty((len(s), k), dtype=np.int64)
    chunk = max(1, _TOPK_CELLS // max(s.shape[1], 1))
    cols = np.arange(s.shape[1])[None, :]
    for a in range(0, len(s), chunk):
        keys = torch.from_numpy(_pack(s[a : a + chunk], cols))
        out[a : a + chunk] = _unpack(torch.topk(keys, k, dim=1).values.numpy())
    return out


def _merge_top_columns(
    top: np.ndarray | None, s: np.ndarray, image_idx: np.ndarray, k: int
) -> np.ndarray:
    """The k best (packed) images of every column among ``top`` and the strip ``s``."""
    import torch

    n_columns = s.shape[1]
    chunk = max(1, _TOPK_CELLS // max(len(s), 1))
    parts = []
    for a in range(0, n_columns, chunk):
        keys = _pack(s[:, a : a + chunk], image_idx[:, None])
        if top is not None:
            keys = np.concatenate([top[:, a : a + chunk], keys])
        kk = min(k, len(keys))
        parts.append(torch.topk(torch.from_numpy(keys), kk, dim=0).values.numpy())
    return np.concatenate(parts, axis=1)
