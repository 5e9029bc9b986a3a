"""Long-caption retrieval over a fixed gallery (never in-batch candidates), for any dataset.

A `RetrievalTask` is declared data: which dataset, which description of each record
(``text_kind``), the peer's text rule (``text_rule``, see `TEXT_RULES`), which split and how
many records (``limit``: "the first 1,000"). Its ``protocol`` names the peer protocol it
reproduces, recorded in the run config and the examples. One text per image; text i belongs to
image i. DCI's two:

- ``dci/retrieval`` = ``lotlip``, as LoTLIP's ``dci_retrieval_dataset`` builds it: every photo of
  every split (splits.json order; ``split`` narrows), one text per photo:
  ``short_caption + "\\n" + extra_caption`` split at newlines, ``</s>`` and periods, pieces
  stripped, empty ones dropped, rejoined with ``". "``. The model's text policy then applies
  (``truncate`` reproduces what CLIP users get).
- ``dci/retrieval-full`` = ``dci-full``: the base entry's full DCI description (short and
  extra caption plus every usable mask's text), same gallery.

Image-to-text and text-to-image R@1/5/10 under the run's tie rule (``ties``: ``pessimistic``
by default, or ``first``; see metrics/retrieval.py), named in the metrics (``tie_rule``) with
the number of queries whose rank depended on it (``i2t_tied``, ``t2i_tied``). ``by_length``
buckets photos by the CLIP BPE reference count of their text (metrics/length.py).
Photos whose record or image the reference could not use are skipped loudly.

A pair scorer (a VLM) cannot score the whole gallery, so it re-ranks the top ``K`` candidates
of a first-stage embedding scorer (``--rerank-from SPEC --rerank-k K``), in both directions.
The metrics keep their names and meaning: a query whose right answer is among its top ``K``
gets its rank among them under the pair scores (same tie rule); one whose right answer is
outside the top ``K`` keeps its first-stage rank (> K), so it is a miss at R@k for every
k <= K. For k > K, R@k is the two-stage pipeline's (re-ranked top K, then first-stage
order); with K >= 10 every reported recall is the re-ranker's own. ``metrics["first_stage"]``
holds the first stage's recalls on the same gallery.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from densecap_eval.core.errors import BadRecordError, DensecapError
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.metrics.retrieval import RECALL_KS, GalleryRanks, check_ties, recalls
from densecap_eval.metrics.retrieval_stream import StreamedGallery, stream_gallery
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.blocks import LengthBreakdown, bootstrap_ci, planned
from densecap_eval.tasks.context import ComputeContext

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

_LOTLIP_SPLIT = re.compile(r"\n|</s>|[.]")


def lotlip_rejoin(text: str) -> str:
    """LoTLIP's (and FLAIR's) split/rejoin: split at newlines, ``</s>`` and periods, strip the
    pieces, drop empty ones, join with ``". "`` (no final period; ``"1.5"`` becomes ``"1. 5"``)."""
    return ". ".join(p.strip() for p in _LOTLIP_SPLIT.split(text) if p.strip())


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def first_line(text: str) -> str:
    """The first line as Long-CLIP's ``readlines()[0]`` cuts it: at ``\\n``, ``\\r`` or
    ``\\r\\n`` only (not at the other breaks `str.splitlines` knows). Its line ending is dropped,
    which every CLIP tokenizer's whitespace cleaning drops too."""
    return _LINE_BREAK.split(text, maxsplit=1)[0]


# Text rules of the peers' protocols: name -> function of the record's description.
TEXT_RULES: dict[str, Callable[[str], str]] = {
    "raw": lambda text: text,
    "lotlip": lotlip_rejoin,
    "first-line": first_line,
    "first-line-lotlip": lambda text: lotlip_rejoin(first_line(text)),
    "newline-to-space": lambda text: text.replace("\n", " "),
}


# Recall@k both ways; each example holds ``<metric>_correct`` (its tie, ``i2t_tie`` /
# ``t2i_tie``, is the direction's, not the recall's).
RETRIEVAL_METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(f"{direction}_r{k}", column=f"{direction}_r{k}_correct")
    for direction in ("i2t", "t2i")
    for k in RECALL_KS
)


@dataclass(frozen=True)
class RetrievalTask:
    """A retrieval protocol on a dataset (module doc); ``limit`` keeps the first N records."""

    # Ranks every image against every text: a pair scorer needs a first stage (re-ranking).
    needs_gallery: ClassVar[bool] = True

    name: str
    protocol: str
    description: str
    dataset: str
    text_kind: str = "caption"
    text_rule: str = "raw"
    default_split: str | None = None  # None: every split, in the dataset's order
    limit: int | None = None

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return RETRIEVAL_METRICS

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(
        self, dataset: Any, *, split: str | None = None, seed: int = 0
    ) -> RetrievalInstance:
        from densecap_eval.datasets.photos import photo_size

        del seed  # nothing random
        split = split or self.default_split
        rule = TEXT_RULES[self.text_rule]
        images: list[str] = []
        regions: list[Region] = []
        texts: list[str] = []
        skipped: list[SkippedImage] = []
        # The first `limit` records the loader yields ("the first 1,000"); never one more, so a
        # bad record past the limit is neither read nor reported.
        for record in itertools.islice(dataset.records(split), self.limit):
            text = record.description(self.text_kind)
            try:
                if text is None:
                    raise BadRecordError(record.id, f"no {self.text_kind!r} description")
                photo_size(record.image, image=record.id)  # a photo the engine cannot decode
            except BadRecordError as exc:
                skipped.append(dataset.skip(exc))
                continue
            images.append(record.id)
            regions.append(Region(str(Path(record.image).absolute())))
            texts.append(rule(text))
        if len(set(images)) != len(images):
            raise DensecapError(f"{self.name}: an image is listed more than once ({dataset.root})")
        return RetrievalInstance(self, split or "all", images, regions, texts, skipped)


@dataclass
class RetrievalInstance:
    spec: RetrievalTask
    split: str
    images: list[str]
    regions: list[Region]
    texts: list[str]
    skipped: list[SkippedImage] = field(default_factory=list)
    needs_embedding: bool = True  # the gallery needs every (image, text) score
    _r: np.ndarray | None = field(default=None, repr=False)
    _t: np.ndarray | None = field(default=None, repr=False)
    _rerank: _RerankPlan | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.spec.name

    def add_to_plan(self, plan: ScoringPlan) -> None:
        # No pairs are declared: an embedding scorer gets every pair for free; a pair scorer
        # gets its pairs from `plan_rerank` (this plan is then the first stage's).
        self._r = np.array([plan.add_region(r) for r in self.regions], dtype=np.int64)
        self._t = np.array([plan.add_text(t) for t in self.texts], dtype=np.int64)

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """Recalls, tie counts and the length breakdown (`TaskInstance.compute`; no negatives,
        so positions and the text policy are unused)."""
        rule = check_ties(ctx.ties)
        region_pos, own_text_pos = planned(self.task, self._r, self._t)
        first: GalleryRanks | None = None
        if self._rerank is not None:
            if table.kind != "pair":
                raise DensecapError(f"{self.task}: re-ranking needs the pair scorer's table")
            ranks, text_pos = self._rerank.ranks(table, ties=rule)
            gallery = len(self._rerank.text_pos)
            first = self._rerank.first[rule]
        elif table.kind != "embedding":
            raise DensecapError(f"{self.task} needs an embedding scorer (a full gallery of pairs)")
        else:
            streamed, _ = self._gallery(table)
            ranks = streamed.ranks[rule]
            text_pos = own_text_pos
            gallery = len(streamed.cand_t2i)  # one row per gallery column
        n = len(region_pos)
        tokens = table.text_tokens[text_pos]
        cut = table.text_cut[text_pos]

        flags: dict[str, np.ndarray] = {}
        for direction, direction_ranks in (("i2t", ranks.i2t), ("t2i", ranks.t2i)):
            for k in RECALL_KS:
                flags[f"{direction}_r{k}"] = (direction_ranks <= k).astype(np.float64)
        lengths = LengthBreakdown.of(self.texts)
        metrics: dict[str, Any] = {
            **recalls(ranks.i2t, ranks.t2i),
            "n": n,
            "gallery": gallery,
            "tie_rule": rule,
            **_tie_counts(ranks),
            "ci": bootstrap_ci(flags, self.images, ctx),
            **lengths.metrics(flags),
            "model_max_text_tokens": ctx.max_text_tokens,
            "cut_share": float(cut.mean()) if n else None,
        }
        frame = self._frame(ranks, tokens, cut, flags, (lengths.ref_tokens, lengths.labels))
        if first is not None and self._rerank is not None:
            metrics["rerank_k"] = self._rerank.k
            metrics["first_stage"] = {**recalls(first.i2t, first.t2i), **_tie_counts(first)}
            frame["rank_i2t_first"] = first.i2t.astype(np.int64)
            frame["rank_t2i_first"] = first.t2i.astype(np.int64)
        return metrics, frame

    def _gallery(self, table: ScoreTable, *, k: int = 0) -> tuple[StreamedGallery, np.ndarray]:
        """Ranks under every rule and top-``k`` candidates over the gallery, from a streaming
        pass over row strips of its scores (never images x texts at once; see
        metrics/retrieval_stream.py), and each image's own column."""
        assert self._r is not None and self._t is not None  # checked by the callers
        # Identical texts are one gallery column; every photo owning it is a right answer.
        columns, image_text = np.unique(self._t, return_inverse=True)
        image_text = image_text.reshape(-1).astype(np.int64)
        strip = table.strips(self._r, columns)
        return stream_gallery(strip, len(self._r), len(columns), image_text, k=k), image_text

    def plan_rerank(self, first_table: ScoreTable, plan: ScoringPlan, *, k: int) -> None:
        """Rank the gallery with the first-stage table and ask ``plan`` for each top-k pair.

        Call after `add_to_plan` on the first stage's plan; ``plan`` is the pair scorer's. Both
        directions' pairs go into the one plan, so a pair needed twice is scored once.
        """
        if self._r is None or self._t is None:
            raise DensecapError(f"{self.task}: plan_rerank() before add_to_plan()")
        if first_table.kind != "embedding":
            raise DensecapError(f"{self.task}: the first stage must be an embedding scorer")
        if k < 1:
            raise DensecapError(f"--rerank-k must be at least 1, got {k}")
        streamed, image_text = self._gallery(first_table, k=k)
        first = streamed.ranks  # every rule: compute() picks one
        cand_i2t = streamed.cand_i2t  # (images, k) gallery columns
        cand_t2i = streamed.cand_t2i  # (columns, k) images
        column_text = {int(c): self.texts[i] for i, c in enumerate(image_text)}
        region_pos = np.array([plan.add_region(r) for r in self.regions], dtype=np.int64)
        text_pos = np.array(
            [plan.add_text(column_text[c]) for c in range(len(column_text))], dtype=np.int64
        )
        n_cols = len(column_text)
        rows = np.arange(len(region_pos))
        for r, t in zip(
            np.concatenate([np.repeat(rows, cand_i2t.shape[1]), cand_t2i.ravel()]).tolist(),
            np.concatenate(
                [cand_i2t.ravel(), np.repeat(np.arange(n_cols), cand_t2i.shape[1])]
            ).tolist(),
            strict=True,
        ):
            plan.need(int(region_pos[r]), int(text_pos[t]))
        self._rerank = _RerankPlan(
            k=k,
            image_text=image_text,
            region_pos=region_pos,
            text_pos=text_pos,
            cand_i2t=cand_i2t,
            cand_t2i=cand_t2i,
            first=first,
        )

    def _frame(
        self,
        ranks: GalleryRanks,
        tokens: np.ndarray,
        cut: np.ndarray,
        flags: dict[str, np.ndarray],
        lengths: tuple[list[int], list[str]],
    ) -> pd.DataFrame:
        import pandas as pd

        n = len(self.images)
        data: dict[str, Any] = {
            "task": [self.task] * n,
            "split": [self.split] * n,
            "protocol": [self.spec.protocol] * n,
            "image": self.images,
            "text": self.texts,
            "tokens": tokens.astype(np.int64),  # the model's own count
            "ref_tokens": np.asarray(lengths[0], dtype=np.int64),  # CLIP BPE reference count
            "cut": cut.astype(bool),
            "rank_i2t": ranks.i2t.astype(np.int64),
            "rank_t2i": ranks.t2i.astype(np.int64),
            "i2t_tie": ranks.i2t_tied.astype(bool),
            "t2i_tie": ranks.t2i_tied.astype(bool),
        }
        for name, values in flags.items():
            data[f"{name}_correct"] = values.astype(bool)
        data["length_bucket"] = lengths[1]  # by ref_tokens
        return pd.DataFrame(data)


@dataclass(frozen=True)
class _RerankPlan:
    """A gallery's first-stage ranks and top-k candidates, and where they sit in the pair plan."""

    k: int
    image_text: np.ndarray  # (images,) each image's own gallery column
    region_pos: np.ndarray  # (images,) pair-plan region index
    text_pos: np.ndarray  # (columns,) pair-plan text index
    cand_i2t: np.ndarray  # (images, k) columns, first-stage order
    cand_t2i: np.ndarray  # (columns, k) images, first-stage order
    first: dict[str, GalleryRanks]  # first-stage ranks and ties, per tie rule

    def ranks(self, table: ScoreTable, *, ties: str) -> tuple[GalleryRanks, np.ndarray]:
        """(ranks and ties after re-ranking, pair-plan text index of each image's text)."""
        from densecap_eval.tasks.rerank import rerank_ranks, rerank_tied

        first = self.first[ties]
        gt = self.image_text
        n_cols = len(self.text_pos)
        ps_i2t = table.scores(self.region_pos[:, None], self.text_pos[self.cand_i2t])
        own_i2t = self.cand_i2t == gt[:, None]
        i2t = rerank_ranks(first.i2t, own_i2t, ps_i2t, ties=ties)
        i2t_tied = rerank_tied(first.i2t_tied, own_i2t, ps_i2t)
        ps_t2i = table.scores(self.region_pos[self.cand_t2i], self.text_pos[:, None])
        # Every owner of a column has the same t2i rank and tie flag.
        col_first = np.zeros(n_cols, dtype=np.int64)
        col_first[gt] = first.t2i
        col_tied = np.zeros(n_cols, dtype=bool)
        col_tied[gt] = first.t2i_tied
        owners = gt[self.cand_t2i] == np.arange(n_cols)[:, None]
        t2i_col = rerank_ranks(col_first, owners, ps_t2i, ties=ties)
        t2i_tied = rerank_tied(col_tied, owners, ps_t2i)
        ranks = GalleryRanks(i2t=i2t, t2i=t2i_col[gt], i2t_tied=i2t_tied, t2i_tied=t2i_tied[gt])
        return ranks, self.text_pos[gt]


def _tie_counts(ranks: GalleryRanks) -> dict[str, int]:
    """``i2t_tied`` / ``t2i_tied``: queries whose rank depends on the tie rule."""
    return {"i2t_tied": int(ranks.i2t_tied.sum()), "t2i_tied": int(ranks.t2i_tied.sum())}
