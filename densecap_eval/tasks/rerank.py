"""Retrieval with a pair scorer: re-rank the top-k candidates of a first-stage embedding scorer.

Scoring every (image, text) pair of a 7,805-image gallery with a VLM is out of reach, so the
embedding scorer ranks the whole gallery and the pair scorer re-scores only each query's top
``k``. Ties in the first stage go to the lower gallery index; ties in the pair scores keep the
first-stage order. Items outside the top ``k`` keep their first-stage order after the re-ranked
ones, so recall at any cutoff is defined.

The pairs are scored through the engine (``score_plan``): one plan holds every needed
(region, text) pair, each scored once even when several queries share it, batched by text
length with each photo decoded once per batch and the engine's OOM back-off.

The retrieval tasks pick each query's candidates with `topk_candidates`, then rank them with
`rerank_ranks`, so both directions and every other task share one pair plan and report ranks
under the run's tie rule (metrics/retrieval.py):

- ``pessimistic``: a wrong candidate whose pair score equals the best right one's ranks before
  it.
- ``first``: ties in the pair scores keep the first-stage order (the candidates' order, itself
  first-stage score, then lower gallery index).

A re-ranked query is *tied* when a wrong candidate's pair score equals its best right
candidate's; a query whose right answer is outside the top ``k`` keeps its first-stage rank and
its first-stage tie flag (`rerank_tied`).
"""

from __future__ import annotations

import numpy as np


def first_stage_order(scores: np.ndarray) -> np.ndarray:
    """Gallery order per query row, best first; ties go to the lower gallery index."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")


def topk_candidates(scores: np.ndarray, k: int, *, chunk: int = 1024) -> np.ndarray:
    """Each row's ``k`` best columns (``min(k, columns)``), best first; ties to the lower index.

    Rows are sorted in chunks so a 7,805 x 7,805 gallery never needs a full index matrix.
    """
    s = np.asarray(scores)
    k = min(k, s.shape[1])
    out = np.empty((s.shape[0], k), dtype=np.int64)
    for start in range(0, s.shape[0], chunk):
        out[start : start + chunk] = first_stage_order(s[start : start + chunk])[:, :k]
    return out


def rerank_ranks(
    first_rank: np.ndarray,
    owner: np.ndarray,
    pair_scores: np.ndarray,
    *,
    ties: str = "pessimistic",
) -> np.ndarray:
    """1-based ranks after re-ranking, under tie rule ``ties`` of metrics/retrieval.py.

    ``first_rank`` (queries,) is each query's first-stage rank (under the same rule); ``owner``
    (queries, k) marks the candidates that are a right answer; ``pair_scores`` (queries, k)
    their pair scores, columns in first-stage order. A query with a right answer among its
    candidates gets ``1 +`` the number of wrong candidates ranked before its best right one
    (so at most k): with ``pessimistic`` those whose pair score is >= the best right one's,
    with ``first`` those scoring more, plus those scoring the same that come earlier in
    first-stage order than the first right candidate at that score. One without keeps its
    first-stage rank, which is > k: every candidate ranked before its right answers.
    """
    from densecap_eval.metrics.retrieval import check_ties

    rule = check_ties(ties)
    own = np.asarray(owner, dtype=bool)
    ps = np.asarray(pair_scores, dtype=np.float64)
    ranks = np.asarray(first_rank, dtype=np.int64).copy()
    hit = own.any(axis=1)
    if hit.any():
        best = np.where(own, ps, -np.inf).max(axis=1, keepdims=True)
        if rule == "pessimistic":
            before = ((ps >= best) & ~own).sum(axis=1)
        else:
            at_best = own & (ps == best)
            first_right = np.argmax(at_best, axis=1)[:, None]  # first right candidate at best
            earlier = np.arange(ps.shape[1])[None, :] < first_right
            before = ((ps > best) | ((ps == best) & earlier)).sum(axis=1)
        ranks[hit] = 1 + before[hit]
    return ranks


def rerank_tied(first_tied: np.ndarray, owner: np.ndarray, pair_scores: np.ndarray) -> np.ndarray:
    """Per query: a wrong candidate's pair score equals the best right one's (re-ranked
    queries), else the first-stage tie flag ``first_tied`` (right answer outside the top k)."""
    own = np.asarray(owner, dtype=bool)
    ps = np.asarray(pair_scores, dtype=np.float64)
    tied = np.asarray(first_tied, dtype=bool).copy()
    hit = own.any(axis=1)
    if hit.any():
        best = np.where(own, ps, -np.inf).max(axis=1, keepdims=True)
        tied[hit] = ((ps == best) & ~own).any(axis=1)[hit]
    return tied
