"""Long-caption retrieval on DCI photos over a fixed gallery (never in-batch candidates).

Two protocols, named in every result (``protocol`` in the run config and the examples):

- ``dci/retrieval`` = ``lotlip``, as LoTLIP's ``dci_retrieval_dataset`` builds it: every photo of
  every split (splits.json order; ``split`` narrows), one text per photo:
  ``short_caption + "\\n" + extra_caption`` split at newlines, ``</s>`` and periods, pieces
  stripped, empty ones dropped, rejoined with ``". "``. The model's text policy then applies
  (``truncate`` reproduces what CLIP users get).
- ``dci/retrieval-full`` = ``dci-full``: the base entry's full DCI description (short and
  extra caption plus every usable mask's text), same gallery.

Image-to-text and text-to-image R@1/5/10 with pessimistic ties (see metrics/retrieval.py).
Photos whose record or image the reference could not use are skipped loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from densecap_eval.datasets.dci.records import DCIRecord, SkippedImage
from densecap_eval.errors import BadRecordError, DensecapError
from densecap_eval.metrics.bootstrap import cluster_bootstrap_cis
from densecap_eval.metrics.length import LENGTH_BUCKETS, length_bucket
from densecap_eval.metrics.retrieval import RECALL_KS, recalls, retrieval_ranks
from densecap_eval.regions import Region
from densecap_eval.tasks.base import DiffPositionFn, breakdown, ci_lists

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

TextSource = Literal["lotlip", "dci-full"]
_ROW_CHUNK = 1024  # gallery rows scored per matrix() call
_LOTLIP_SPLIT = re.compile(r"\n|</s>|[.]")


def lotlip_text(short_caption: str, extra_caption: str) -> str:
    """LoTLIP's DCI retrieval text (see the module doc)."""
    pieces = _LOTLIP_SPLIT.split(f"{short_caption}\n{extra_caption}")
    return ". ".join(p.strip() for p in pieces if p.strip())


def retrieval_text(record: DCIRecord, source: TextSource) -> str:
    if source == "lotlip":
        return lotlip_text(record.short_caption, record.extra_caption)
    from densecap_eval.datasets.dci.entries import long_caption_base

    return long_caption_base(record)


@dataclass(frozen=True)
class DCIRetrievalTask:
    name: str
    protocol: TextSource
    description: str
    dataset: str = "dci"
    default_split: str | None = None  # all splits

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(
        self, dataset: Any, *, split: str | None = None, seed: int = 0
    ) -> DCIRetrievalInstance:
        from densecap_eval.datasets.dci.entries import photo_size

        del seed  # nothing random
        splits = [split] if split else list(dataset.splits())
        images: list[str] = []
        regions: list[Region] = []
        texts: list[str] = []
        skipped: list[SkippedImage] = []
        for name in splits:
            for record in dataset.iter_records(name):
                path = dataset.photo_path(record)
                try:
                    photo_size(path, image=record.name)  # a photo the engine could not decode
                except BadRecordError as exc:
                    skipped.append(dataset.skip(exc))
                    continue
                images.append(record.name)
                regions.append(Region(str(path.absolute())))  # same key as the DCI base entries
                texts.append(retrieval_text(record, self.protocol))
        if len(set(images)) != len(images):
            raise DensecapError(f"{self.name}: a photo record is listed in more than one split")
        label = split or "all"
        return DCIRetrievalInstance(self, label, images, regions, texts, skipped)


@dataclass
class DCIRetrievalInstance:
    spec: DCIRetrievalTask
    split: str
    images: list[str]
    regions: list[Region]
    texts: list[str]
    skipped: list[SkippedImage] = field(default_factory=list)
    needs_embedding: bool = True  # the gallery needs every (image, text) score
    _r: np.ndarray | None = field(default=None, repr=False)
    _t: np.ndarray | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.spec.name

    def add_to_plan(self, plan: ScoringPlan) -> None:
        # No pairs are declared: only embedding scorers run this task (every pair is free for them).
        self._r = np.array([plan.add_region(r) for r in self.regions], dtype=np.int64)
        self._t = np.array([plan.add_text(t) for t in self.texts], dtype=np.int64)

    def compute(
        self,
        table: ScoreTable,
        *,
        bootstrap_seed: int,
        n_boot: int,
        diff_positions: DiffPositionFn | None = None,
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        del diff_positions  # no negatives
        if self._r is None or self._t is None:
            raise DensecapError(f"{self.task}: compute() before add_to_plan()")
        if table.kind != "embedding":
            raise DensecapError(f"{self.task} needs an embedding scorer (a full gallery of pairs)")
        # Identical texts are one gallery column; every photo owning it is a right answer.
        columns, image_text = np.unique(self._t, return_inverse=True)
        n = len(self._r)
        scores = np.empty((n, len(columns)), dtype=np.float32)  # float32: lossless for logits
        for start in range(0, n, _ROW_CHUNK):
            rows = self._r[start : start + _ROW_CHUNK]
            scores[start : start + len(rows)] = table.matrix(rows.tolist(), columns.tolist())
        i2t, t2i = retrieval_ranks(scores, image_text)
        tokens = table.text_tokens[self._t]
        cut = table.text_cut[self._t]

        flags: dict[str, np.ndarray] = {}
        for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
            for k in RECALL_KS:
                flags[f"{direction}_r{k}"] = (ranks <= k).astype(np.float64)
        len_labels = [length_bucket(int(t)) for t in tokens]
        metrics: dict[str, Any] = {
            **recalls(i2t, t2i),
            "n": n,
            "gallery": len(columns),
            "ci": ci_lists(
                cluster_bootstrap_cis(flags, self.images, n_boot=n_boot, seed=bootstrap_seed)
            ),
            "by_length": breakdown(flags, len_labels, LENGTH_BUCKETS),
            "cut_share": float(cut.mean()) if n else None,
        }
        frame = self._frame(i2t, t2i, tokens, cut, flags, len_labels)
        return metrics, frame

    def _frame(
        self,
        i2t: np.ndarray,
        t2i: np.ndarray,
        tokens: np.ndarray,
        cut: np.ndarray,
        flags: dict[str, np.ndarray],
        len_labels: list[str],
    ) -> pd.DataFrame:
        import pandas as pd

        n = len(self.images)
        data: dict[str, Any] = {
            "task": [self.task] * n,
            "split": [self.split] * n,
            "protocol": [self.spec.protocol] * n,
            "image": self.images,
            "text": self.texts,
            "tokens": tokens.astype(np.int64),
            "cut": cut.astype(bool),
            "rank_i2t": i2t.astype(np.int64),
            "rank_t2i": t2i.astype(np.int64),
        }
        for name, values in flags.items():
            data[f"{name}_correct"] = values.astype(bool)
        data["length_bucket"] = len_labels
        return pd.DataFrame(data)


DCI_RETRIEVAL = DCIRetrievalTask(
    "dci/retrieval",
    "lotlip",
    "LoTLIP long-caption retrieval: every photo, short + extra caption, R@1/5/10 both ways",
)
DCI_RETRIEVAL_FULL = DCIRetrievalTask(
    "dci/retrieval-full",
    "dci-full",
    "retrieval with the full DCI description (captions of every mask included)",
)
