"""Retrieval with a pair scorer: re-rank the top-k candidates of a first-stage embedding scorer.

Scoring every (image, text) pair of a 7,805-image gallery with a VLM is out of reach, so the
embedding scorer ranks the whole gallery and the pair scorer re-scores only each query's top
``k``. Ties in the first stage go to the lower gallery index; ties in the pair scores keep the
first-stage order. Items outside the top ``k`` keep their first-stage order after the re-ranked
ones, so recall at any cutoff is defined.

The pairs are scored through the engine (``score_plan``): one plan holds every needed
(region, text) pair, each scored once even when several queries share it, batched by text
length with each photo decoded once per batch and the engine's OOM back-off.

`rerank_topk` does one direction on its own. The retrieval tasks use the pieces instead
(`topk_candidates`, then `rerank_ranks`), so both directions and every other task share one
pair plan and report ranks with the pessimistic ties of metrics/retrieval.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from densecap_eval.errors import DensecapError
from densecap_eval.regions import Region

if TYPE_CHECKING:
    from densecap_eval.engine.plan import ScoreTable
    from densecap_eval.scorers.base import PairScorer, TextPolicy

Direction = Literal["image_to_text", "text_to_image"]
ScoreFn = Callable[..., "ScoreTable"]


@dataclass(frozen=True)
class Reranked:
    """Re-ranked retrieval lists. Rows are queries; columns index the gallery list.

    ``ranking[q]`` is the full gallery order for query q: its top ``k`` re-ranked by the pair
    scorer, then the rest in first-stage order. ``candidates``/``pair_scores`` hold the top-k in
    first-stage order with their pair scores.
    """

    ranking: np.ndarray  # (n_queries, n_gallery) int64
    candidates: np.ndarray  # (n_queries, k) int64, first-stage order
    pair_scores: np.ndarray  # (n_queries, k) float64, aligned with candidates
    k: int

    def recall_at(
        self, gold: Sequence[int] | np.ndarray, ks: Sequence[int] = (1, 5, 10)
    ) -> dict[str, float]:
        """R@K for one gold gallery index per query."""
        g = np.asarray(gold, dtype=np.int64).reshape(-1, 1)
        if len(g) != len(self.ranking):
            raise DensecapError(f"{len(g)} gold items for {len(self.ranking)} queries")
        hit_rank = np.argmax(self.ranking == g, axis=1)
        return {f"R@{k}": float(np.mean(hit_rank < k)) if len(g) else 0.0 for k in ks}


def first_stage_order(scores: np.ndarray) -> np.ndarray:
    """Gallery order per query row, best first; ties go to the lower gallery index."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")


def rerank_topk(
    first_stage_table: ScoreTable,
    pair_scorer: PairScorer,
    *,
    regions: Sequence[Region],
    texts: Sequence[str],
    k: int,
    direction: Direction = "image_to_text",
    region_idx: Sequence[int] | None = None,
    text_idx: Sequence[int] | None = None,
    text_policy: TextPolicy = "truncate",
    batch_size: int | None = None,
    score_fn: ScoreFn | None = None,
    **engine_options: Any,
) -> Reranked:
    """Re-rank each query's top ``k`` gallery items of ``first_stage_table`` with ``pair_scorer``.

    ``regions``/``texts`` are the retrieval task's images and texts; ``region_idx``/``text_idx``
    are their indices in the first-stage table (default: 0..n-1). ``direction`` says which side
    queries: ``image_to_text`` ranks texts for each image, ``text_to_image`` images for each
    text. ``score_fn`` defaults to the engine's ``score_plan`` (tests pass a fake).
    """
    from densecap_eval.engine.plan import ScoringPlan

    if k < 1:
        raise DensecapError(f"--rerank-k must be at least 1, got {k}")
    if direction not in ("image_to_text", "text_to_image"):
        raise DensecapError(f"unknown retrieval direction {direction!r}")
    if getattr(pair_scorer, "kind", None) != "pair":
        raise DensecapError(
            f"{getattr(pair_scorer, 'spec', pair_scorer)!r} is not a pair scorer; re-ranking "
            "needs one (vqascore:, captionlik:, itm:)"
        )
    ri = list(range(len(regions))) if region_idx is None else list(region_idx)
    ti = list(range(len(texts))) if text_idx is None else list(text_idx)
    first = first_stage_table.matrix(ri, ti)  # (n_images, n_texts)
    if direction == "text_to_image":
        first = first.T
    order = first_stage_order(first)
    k = min(k, order.shape[1])
    cand = order[:, :k]

    plan = ScoringPlan()
    region_pos = [plan.add_region(r) for r in regions]
    text_pos = [plan.add_text(t) for t in texts]
    q = np.repeat(np.arange(len(order)), k)
    c = cand.ravel()
    img, txt = (q, c) if direction == "image_to_text" else (c, q)
    for i, t in zip(img.tolist(), txt.tolist(), strict=True):
        plan.need(region_pos[i], text_pos[t])
    if score_fn is None:
        from densecap_eval.engine.engine import score_plan

        score_fn = score_plan
    table = score_fn(
        pair_scorer, plan, text_policy=text_policy, batch_size=batch_size, **engine_options
    )
    rp = np.asarray(region_pos, dtype=np.int64)[img]
    tp = np.asarray(text_pos, dtype=np.int64)[txt]
    pair_scores = table.scores(rp, tp).reshape(len(order), k)

    # Stable sort on -score keeps first-stage order among equal pair scores.
    within = np.argsort(-pair_scores, axis=1, kind="stable")
    reranked_top = np.take_along_axis(cand, within, axis=1)
    ranking = np.concatenate([reranked_top, order[:, k:]], axis=1)
    return Reranked(ranking=ranking, candidates=cand, pair_scores=pair_scores, k=k)


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


def rerank_ranks(first_rank: np.ndarray, owner: np.ndarray, pair_scores: np.ndarray) -> np.ndarray:
    """1-based ranks after re-ranking, with the pessimistic ties of metrics/retrieval.py.

    ``first_rank`` (queries,) is each query's first-stage rank; ``owner`` (queries, k) marks the
    candidates that are a right answer; ``pair_scores`` (queries, k) their pair scores. A query
    with a right answer among its candidates gets ``1 + `` the number of wrong candidates whose
    pair score is >= the best right one's (so at most k). One without keeps its first-stage
    rank, which is > k: every candidate scored at least as high as its right answers.
    """
    own = np.asarray(owner, dtype=bool)
    ps = np.asarray(pair_scores, dtype=np.float64)
    ranks = np.asarray(first_rank, dtype=np.int64).copy()
    hit = own.any(axis=1)
    if hit.any():
        best = np.where(own, ps, -np.inf).max(axis=1, keepdims=True)
        beaten = ((ps >= best) & ~own).sum(axis=1)
        ranks[hit] = 1 + beaten[hit]
    return ranks
