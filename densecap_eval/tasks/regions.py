"""Region-caption matching for any dataset whose records have boxed regions (``<ds>/regions``).

A `RegionsTask` is declared data: which dataset, which description of each region
(``text_kind``: the region's first ``role="description"`` text of that kind), which split and
how many records (``limit``: the first N). For every image with at least two such regions, each
region's crop must score its OWN caption highest among the captions of that image's regions.
This is DCI's per-photo SCM (``scm_per_image``, metrics/dci.py) with a bag of one caption: the
group is every region of one image, the decision the FIRST index of the row maximum (so a tie
counts as right only when the own caption comes first; ties are counted in ``ties``), and an
image with a single region has no competitor, so its region is excluded, never a free
"correct" (``excluded_images`` / ``excluded_regions``).

Two regions of one image with the same caption cannot be told apart: the second always loses
the tie. Chance level differs per image (1/B for B regions); ``chance`` is its mean over the
scored regions. Intervals (``ci``) are percentile bootstraps clustered by image (all regions of
an image resample together). ``by_length`` buckets regions by the CLIP BPE reference count of
their caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.core.errors import BadRecordError
from densecap_eval.datasets.records import ImageRecord, SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.metrics import dci as dci_metrics
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import accuracy, outcome_metric
from densecap_eval.tasks.blocks import LengthBreakdown, bootstrap_ci, planned
from densecap_eval.tasks.context import ComputeContext

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

REGIONS_METRICS: tuple[MetricSpec, ...] = (outcome_metric("scm"),)
MIN_REGIONS = 2  # an image's regions compete only when there are at least two


@dataclass(frozen=True)
class RegionEntry:
    """One region of an image and its caption."""

    image: str  # record id: the group and the bootstrap cluster
    region: Region
    key: str  # the region's key within its image (e.g. ``row 7``)
    text: str


@dataclass(frozen=True)
class RegionsTask:
    """Per-image region-caption matching on a dataset (module doc)."""

    name: str
    description: str
    dataset: str
    text_kind: str = "caption"
    default_split: str | None = None  # None: every split, in the dataset's order
    limit: int | None = None

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return REGIONS_METRICS

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(self, dataset: Any, *, split: str | None = None, seed: int = 0) -> RegionsInstance:
        from densecap_eval.datasets.photos import photo_size

        del seed  # nothing random
        split = split or self.default_split
        entries: list[RegionEntry] = []
        skipped: list[SkippedImage] = []
        seen: set[str] = set()
        excluded_images = excluded_regions = 0
        for i, record in enumerate(dataset.records(split)):
            if self.limit is not None and i >= self.limit:
                break
            found = self._entries(record)
            if not found:
                continue
            if len(found) < MIN_REGIONS:
                excluded_images += 1
                excluded_regions += len(found)
                continue
            try:
                if record.id in seen:
                    raise BadRecordError(record.id, "listed more than once")
                photo_size(record.image, image=record.id)  # a photo the engine cannot decode
            except BadRecordError as exc:
                skipped.append(dataset.skip(exc))
                continue
            seen.add(record.id)
            entries.extend(found)
        return RegionsInstance(
            self, split or "all", entries, skipped, excluded_images, excluded_regions
        )

    def _entries(self, record: ImageRecord) -> list[RegionEntry]:
        photo = str(Path(record.image).absolute())
        out = []
        for number, region in enumerate(record.regions):
            texts = [
                t for t in region.texts if t.role == "description" and t.kind == self.text_kind
            ]
            if texts:
                key = region.key or f"region {number}"
                out.append(RegionEntry(record.id, Region(photo, region.box), key, texts[0].text))
        return out


@dataclass
class RegionsInstance:
    """A regions task's entries (image-major), with their plan indices once planned."""

    spec: RegionsTask
    split: str
    entries: list[RegionEntry]
    skipped: list[SkippedImage] = field(default_factory=list)
    excluded_images: int = 0
    excluded_regions: int = 0
    needs_embedding: bool = False
    _r: np.ndarray | None = field(default=None, repr=False)
    _t: np.ndarray | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def images(self) -> list[str]:
        return [e.image for e in self.entries]

    def add_to_plan(self, plan: ScoringPlan) -> None:
        self._r = np.array([plan.add_region(e.region) for e in self.entries], dtype=np.int64)
        self._t = np.array([plan.add_text(e.text) for e in self.entries], dtype=np.int64)
        for idx in dci_metrics.photo_group_indices(self.images):
            plan.need_all(self._r[idx].tolist(), self._t[idx].tolist())

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """SCM per image and its breakdowns (module doc; `TaskInstance.compute`). The retrieval
        tie rule is unused: SCM keeps DCI's rule (first index of the maximum) and counts its
        ties; no negatives, so positions and the text policy are unused."""
        r, t = planned(self.task, self._r, self._t)
        n = len(self.entries)
        own = np.full(n, np.nan)
        best_other = np.full(n, np.nan)
        best_other_text: list[str | None] = [None] * n
        group_size = np.zeros(n, dtype=np.int64)

        def block(idx: np.ndarray) -> np.ndarray:
            """The image's (B, B) block: its regions against its regions' captions."""
            scores = table.matrix(r[idx].tolist(), t[idx].tolist())
            b = len(idx)
            diag = np.arange(b)
            own[idx] = scores[diag, diag]
            others = np.where(np.eye(b, dtype=bool), -np.inf, scores)
            best = others.argmax(axis=1)
            best_other[idx] = others[diag, best]
            for row, col in zip(idx.tolist(), best.tolist(), strict=True):
                best_other_text[row] = self.entries[int(idx[col])].text
            group_size[idx] = b
            return scores

        out = dci_metrics.scm_groups(dci_metrics.photo_group_indices(self.images), n, block)
        flags = {"scm": np.where(out.defined, out.correct, np.nan)}
        lengths = LengthBreakdown.of(e.text for e in self.entries)
        cut = table.text_cut[t] if n else np.zeros(0, dtype=bool)
        metrics: dict[str, Any] = {
            "scm": accuracy(flags["scm"]),
            "n": out.n,
            "n_images": len(set(self.images)),
            "chance": float(np.mean(1.0 / group_size[out.defined])) if out.n else None,
            "excluded_images": self.excluded_images,
            "excluded_regions": self.excluded_regions,
            "ties": {"scm": int(out.tie.sum())},
            "ci": bootstrap_ci(flags, self.images, ctx),
            **lengths.metrics(flags),
            "model_max_text_tokens": ctx.max_text_tokens,
            "cut_share": float(cut.mean()) if n else None,
        }
        frame = self._frame(
            own=own,
            best_other=(best_other, best_other_text),
            group_size=group_size,
            outcome=(out.correct, out.tie),
            tokens=(table.text_tokens[t] if n else np.zeros(0, dtype=np.int64), cut),
            lengths=(lengths.ref_tokens, lengths.labels),
        )
        return metrics, frame

    def _frame(
        self,
        *,
        own: np.ndarray,
        best_other: tuple[np.ndarray, list[str | None]],
        group_size: np.ndarray,
        outcome: tuple[np.ndarray, np.ndarray],
        tokens: tuple[np.ndarray, np.ndarray],
        lengths: tuple[list[int], list[str]],
    ) -> pd.DataFrame:
        import pandas as pd

        n = len(self.entries)
        data: dict[str, Any] = {
            "task": [self.task] * n,
            "split": [self.split] * n,
            "image": self.images,
            "region_key": [e.key for e in self.entries],
            "box": [list(e.region.box) if e.region.box is not None else None for e in self.entries],
            "text": [e.text for e in self.entries],
            "regions_in_image": group_size,
            "own_score": own.astype(np.float64),
            "best_other_score": best_other[0].astype(np.float64),
            "best_other_text": best_other[1],
            "scm_correct": outcome[0].astype(bool),
            "scm_tie": outcome[1].astype(bool),
            "tokens": tokens[0].astype(np.int64),  # the model's own count
            "cut": tokens[1].astype(bool),
            "ref_tokens": np.asarray(lengths[0], dtype=np.int64),  # CLIP BPE reference count
            "length_bucket": lengths[1],
        }
        return pd.DataFrame(data)
