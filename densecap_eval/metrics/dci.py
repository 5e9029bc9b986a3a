"""The DCI reference's SCM and Neg, and the per-photo SCM variant, on plain score arrays.

Layout of a *block* (what the reference calls ``logits_per_image``): rows are the entries'
images, columns their bag texts entry-major, so for ``B`` entries with bags of ``N`` texts the
block is ``(B, B * N)`` and column ``j * N + k`` is text ``k`` of entry ``j``'s bag.

SCM of a block: reshape to ``(B, B, N)``; an off-diagonal cell ``(i, j)`` is the MAX over entry
``j``'s bag, the diagonal cell ``(i, i)`` the MIN over entry ``i``'s own bag; entry ``i`` is
correct when the FIRST index of its row maximum is ``i`` (``torch.max(dim=1)`` / ``np.argmax``
on ties). The reference cuts the entry list into consecutive groups of 8 (DataLoader batches
without shuffling), so a group can span two photos and the last group can be shorter.

Neg: an entry is correct when the MIN of its own bag's scores is strictly greater than its
negative's score (equal scores count as wrong).

Per-photo SCM (``scm_per_image``): the same pooling, but the group is every entry of one photo,
so the result no longer depends on batching. A photo with a single entry has no competitor;
its entry is *undefined* (excluded from the accuracy and counted as excluded), never a free
"correct".
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

REFERENCE_GROUP_SIZE = 8


@dataclass(frozen=True)
class Outcome:
    """Per-example results of one metric.

    ``correct`` and ``tie`` are False where ``defined`` is False. ``tie`` marks decisions taken
    on equal scores (the row maximum reached by several columns, or positive == negative).
    """

    correct: np.ndarray  # bool (n,)
    tie: np.ndarray  # bool (n,)
    defined: np.ndarray  # bool (n,)

    @property
    def n(self) -> int:
        return int(self.defined.sum())


def reference_groups(n: int, *, group_size: int = REFERENCE_GROUP_SIZE) -> list[range]:
    """Consecutive groups of ``group_size`` entries (the last may be shorter)."""
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    return [range(start, min(n, start + group_size)) for start in range(0, n, group_size)]


def photo_groups(images: Sequence[Hashable]) -> list[np.ndarray]:
    """Indices of the entries of each photo, photos in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image, []).append(i)
    return [np.asarray(idx, dtype=np.int64) for idx in groups.values()]


def pooled_matrix(block: np.ndarray) -> np.ndarray:
    """(B, B*N) block -> (B, B): MAX over the other entry's bag, MIN over the own bag on the diagonal."""
    block = np.asarray(block, dtype=np.float64)
    if block.ndim != 2:
        raise ValueError(f"a block must be 2-D (B, B*N), got shape {block.shape}")
    b = block.shape[0]
    if b == 0:
        return np.zeros((0, 0), dtype=np.float64)
    if block.shape[1] % b:
        raise ValueError(f"block of shape {block.shape}: columns are not a multiple of rows")
    grouped = block.reshape(b, b, block.shape[1] // b)  # [image i, entry j, bag text k]
    pooled = grouped.max(axis=2)
    diag = np.arange(b)
    pooled[diag, diag] = grouped[diag, diag].min(axis=1)
    return pooled


def scm_block(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct, tie) of each row of one group's (B, B*N) block."""
    pooled = pooled_matrix(block)
    b = pooled.shape[0]
    if b == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    row_max = pooled.max(axis=1)
    correct = pooled.argmax(axis=1) == np.arange(b)  # argmax: first index on ties
    tie = (pooled == row_max[:, None]).sum(axis=1) > 1
    return correct, tie


def neg_outcome(pos_scores: np.ndarray, neg_scores: np.ndarray) -> Outcome:
    """Neg from (n, N) positive-bag scores and (n,) negative scores: min(bag) > negative, strictly."""
    pos = np.asarray(pos_scores, dtype=np.float64)
    neg = np.asarray(neg_scores, dtype=np.float64).reshape(-1)
    if pos.ndim == 1:
        pos = pos[:, None]
    if pos.shape[0] != neg.shape[0]:
        raise ValueError(f"{pos.shape[0]} positive bags but {neg.shape[0]} negative scores")
    if pos.shape[0] and pos.shape[1] == 0:
        raise ValueError("every example needs at least one positive score")
    low = pos.min(axis=1) if pos.shape[0] else np.zeros(0)
    return Outcome(correct=low > neg, tie=low == neg, defined=np.ones(len(neg), dtype=bool))


def _blocks_from_dense(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    sub = scores[np.ix_(idx, idx)]  # (B, B, N)
    return sub.reshape(len(idx), -1)


def _dense(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2:
        scores = scores[:, :, None]
    if scores.ndim != 3 or scores.shape[0] != scores.shape[1]:
        raise ValueError(
            f"dense scores must be (n, n) or (n, n, N): image of entry i x text k of entry j's bag; "
            f"got shape {scores.shape}"
        )
    return scores


def scm_groups(
    groups: Iterable[np.ndarray], n: int, block: Callable[[np.ndarray], np.ndarray]
) -> Outcome:
    """SCM of ``n`` entries over ``groups`` of entry indices; entries in no group are undefined.

    ``block(idx)`` returns the (B, B*N) scores of a group: its B images against the bags of its
    B entries, entry-major (the reference's matrix). Tasks pass a block read from the score
    table; `scm_reference` / `scm_per_image` pass one cut from a dense matrix.
    """
    correct = np.zeros(n, dtype=bool)
    tie = np.zeros(n, dtype=bool)
    defined = np.zeros(n, dtype=bool)
    for idx in groups:
        correct[idx], tie[idx] = scm_block(block(idx))
        defined[idx] = True
    return Outcome(correct=correct, tie=tie, defined=defined)


def reference_group_indices(n: int, *, group_size: int = REFERENCE_GROUP_SIZE) -> list[np.ndarray]:
    """`reference_groups` as index arrays (what `scm_groups` takes)."""
    return [np.arange(g.start, g.stop) for g in reference_groups(n, group_size=group_size)]


def photo_group_indices(images: Sequence[Hashable]) -> list[np.ndarray]:
    """Each photo's entries, for photos with at least two (SCM of one entry is undefined)."""
    return [idx for idx in photo_groups(images) if len(idx) >= 2]


def scm_reference(scores: np.ndarray, *, group_size: int = REFERENCE_GROUP_SIZE) -> Outcome:
    """Reference SCM over all entries from dense ``scores[i, j, k]`` (image i, entry j's bag text k).

    Only the cells inside each group of ``group_size`` consecutive entries are read.
    """
    scores = _dense(scores)
    n = scores.shape[0]
    groups = reference_group_indices(n, group_size=group_size)
    return scm_groups(groups, n, lambda idx: _blocks_from_dense(scores, idx))


def scm_per_image(scores: np.ndarray, images: Sequence[Hashable]) -> Outcome:
    """Per-photo SCM from dense scores (as `scm_reference`); single-entry photos are undefined."""
    scores = _dense(scores)
    n = scores.shape[0]
    if len(images) != n:
        raise ValueError(f"{n} entries but {len(images)} image names")
    groups = photo_group_indices(images)
    return scm_groups(groups, n, lambda idx: _blocks_from_dense(scores, idx))
