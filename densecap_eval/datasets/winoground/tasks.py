"""Winoground: two images, two captions, and three ways to be right (Thrush et al., 2022).

Per example four scores are planned (`ScoringPlan.need`, so a pair scorer scores exactly
these): ``c0_i0, c1_i0, c0_i1, c1_i1`` (caption j on image k: ``cj_ik``). As DCI and the
paper decide them, strictly (a tie is wrong):

- ``text``: each image prefers its own caption: ``c0_i0 > c1_i0 and c1_i1 > c0_i1``;
- ``image``: each caption prefers its own image: ``c0_i0 > c0_i1 and c1_i1 > c1_i0``;
- ``group``: both.

Metrics: ``text``, ``image``, ``group`` (fractions over all examples), ``n``, ``ties`` (per
metric, the examples where an equal pair of scores decided it), ``by_tag`` /
``by_collapsed_tag`` / ``by_secondary_tag`` (per tag value: ``text``, ``image``, ``group``,
``n``; only for the fields some example has), bootstrap intervals with the example as the
cluster, ``cut_share`` (examples with a caption the text policy cut). The examples table holds
one row per example: ``image`` is the example (``ex_<id>``, the cluster identity, as
`densecap-eval compare` needs), ``entry_key`` its id, the tags, the captions, the four
``scores`` in the order above, ``text_correct`` / ``image_correct`` / ``group_correct`` and
``..._tie``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import breakdown, outcome_metric
from densecap_eval.tasks.blocks import bootstrap_ci, planned
from densecap_eval.tasks.context import ComputeContext

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.datasets.winoground.loader import WinogroundExample
    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

METRICS: tuple[str, ...] = ("text", "image", "group")
SCORE_ORDER: tuple[str, ...] = ("c0_i0", "c1_i0", "c0_i1", "c1_i1")
# (image k, caption j) of each score in SCORE_ORDER.
_PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))
BREAKDOWNS: tuple[tuple[str, str], ...] = (
    ("tag", "by_tag"),
    ("collapsed_tag", "by_collapsed_tag"),
    ("secondary_tag", "by_secondary_tag"),
)


def winoground_outcomes(scores: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (correct, tie)}`` for an (examples x 4) array in `SCORE_ORDER` (module doc).

    ``tie`` marks examples where one of the metric's comparisons was between equal scores
    (so the strict rule made it wrong).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    c0_i0, c1_i0, c0_i1, c1_i1 = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
    text = (c0_i0 > c1_i0) & (c1_i1 > c0_i1)
    image = (c0_i0 > c0_i1) & (c1_i1 > c1_i0)
    text_tie = (c0_i0 == c1_i0) | (c1_i1 == c0_i1)
    image_tie = (c0_i0 == c0_i1) | (c1_i1 == c1_i0)
    return {
        "text": (text, text_tie),
        "image": (image, image_tie),
        "group": (text & image, text_tie | image_tie),
    }


@dataclass(frozen=True)
class WinogroundTask:
    name: str = "winoground"
    dataset: str = "winoground"
    protocol: str = "winoground-strict"
    description: str = (
        "Winoground: text, image and group scores over two images and two captions (strict)"
    )
    metrics: tuple[MetricSpec, ...] = tuple(outcome_metric(m) for m in METRICS)

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(
        self, dataset: Any, *, split: str | None = None, seed: int = 0
    ) -> WinogroundInstance:
        del seed  # nothing random
        split = None if split in (None, "all") else split
        examples = dataset.examples(split)
        return WinogroundInstance(self.name, "test", examples)


WINOGROUND = WinogroundTask()


@dataclass
class WinogroundInstance:
    task: str
    split: str
    examples: Sequence[WinogroundExample]
    skipped: list[SkippedImage] = field(default_factory=list)  # the loader lists bad examples
    needs_embedding: bool = False
    _r: np.ndarray | None = field(default=None, repr=False)  # (n, 4) region of each score
    _t: np.ndarray | None = field(default=None, repr=False)  # (n, 4) text of each score

    def add_to_plan(self, plan: ScoringPlan) -> None:
        n = len(self.examples)
        self._r = np.zeros((n, 4), dtype=np.int64)
        self._t = np.zeros((n, 4), dtype=np.int64)
        for i, ex in enumerate(self.examples):
            regions = [plan.add_region(Region(str(path))) for path in ex.images]
            texts = [plan.add_text(c) for c in ex.captions]
            for j, (k, c) in enumerate(_PAIRS):
                self._r[i, j], self._t[i, j] = regions[k], texts[c]
                plan.need(regions[k], texts[c])

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """The module doc's metrics (`TaskInstance.compute`); the retrieval tie rule, positions
        and the text policy do not apply (the rule is strict)."""
        region_pos, text_pos = planned(self.task, self._r, self._t)
        n = len(self.examples)
        scores = table.scores(region_pos, text_pos) if n else np.zeros((0, 4))
        outcomes = winoground_outcomes(scores)
        flags = {m: outcomes[m][0].astype(np.float64) for m in METRICS}
        cut = table.text_cut[text_pos].any(axis=1) if n else np.zeros(0, dtype=bool)
        metrics: dict[str, Any] = {m: float(flags[m].mean()) if n else None for m in METRICS}
        metrics["n"] = n
        metrics["ties"] = {m: int(outcomes[m][1].sum()) for m in METRICS}
        for tag_field, key in BREAKDOWNS:
            labels = [getattr(ex, tag_field) for ex in self.examples]
            buckets = sorted({lab for lab in labels if lab is not None})
            if buckets:
                metrics[key] = breakdown(flags, labels, buckets)
        metrics["ci"] = bootstrap_ci(flags, [ex.key for ex in self.examples], ctx)
        metrics["cut_share"] = float(np.mean(cut)) if n else None
        metrics["model_max_text_tokens"] = ctx.max_text_tokens
        return metrics, self._frame(scores, outcomes, cut)

    def _frame(
        self,
        scores: np.ndarray,
        outcomes: dict[str, tuple[np.ndarray, np.ndarray]],
        cut: np.ndarray,
    ) -> pd.DataFrame:
        import pandas as pd

        exs = self.examples
        n = len(exs)
        columns: dict[str, Any] = {
            "task": [self.task] * n,
            "split": [self.split] * n,
            "image": [ex.key for ex in exs],  # the example: the cluster identity
            "entry_key": [ex.id for ex in exs],
            "tag": [ex.tag for ex in exs],
            "secondary_tag": [ex.secondary_tag for ex in exs],
            "collapsed_tag": [ex.collapsed_tag for ex in exs],
            "caption_0": [ex.captions[0] for ex in exs],
            "caption_1": [ex.captions[1] for ex in exs],
            "image_0": [ex.image_names[0] for ex in exs],
            "image_1": [ex.image_names[1] for ex in exs],
            "scores": [row.astype(np.float64).tolist() for row in np.asarray(scores)],
        }
        for m in METRICS:
            columns[f"{m}_correct"] = outcomes[m][0].astype(bool)
        for m in METRICS:
            columns[f"{m}_tie"] = outcomes[m][1].astype(bool)
        columns["cut"] = np.asarray(cut, dtype=bool)
        return pd.DataFrame(columns)
