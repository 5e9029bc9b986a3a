"""The four DCI reference subtests as tasks, and the ``dci`` suite (docs/protocols/dci.md).

Each subtest is data: a `SubtestSpec` (entries, negatives, bag) plus the metrics ``scm`` and
``neg`` computed exactly as the reference does (groups of 8 consecutive entries, bag pooling,
first index of the maximum, strict ``>``), and ``scm_per_image`` (every entry of a photo
competes; single-entry photos excluded and counted in ``scm_per_image_excluded``).

Scores come from the shared `ScoreTable`. To reproduce the reference's float32 values, a group's
SCM block is one ``matrix(group images, group bag texts)`` call (the reference's
``logits_per_image``) and, for embedding scorers, the negatives' scores are the diagonal of
``matrix(group images, group negatives)``, as in the reference (pair scorers score only each
entry's own negative).

Breakdowns (metrics/length.py): ``by_length`` buckets each entry by the CLIP BPE reference count
of its first positive (``ref_tokens``, the same count for every model); ``by_diff_position``
buckets Neg by where the negative first differs, relative to the model's own window
(``inside``, ``edge``, ``beyond`` or ``later_chunk``, ``identical``), from the limit and text
policy the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.core.errors import DensecapError
from densecap_eval.datasets.dci.records import Example, SubtestSpec
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.metrics import dci as dci_metrics
from densecap_eval.metrics.length import (
    position_labels,
)
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import accuracy, as_list, breakdown, outcome_metric
from densecap_eval.tasks.blocks import LengthBreakdown, bootstrap_ci, planned
from densecap_eval.tasks.context import ComputeContext

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.engine.plan import ScoreTable, ScoringPlan


# SCM in the reference's groups, Neg, and SCM within each photo (undefined for a photo with a
# single entry: its rows hold NA).
SUBTEST_METRICS: tuple[MetricSpec, ...] = (
    outcome_metric("scm"),
    outcome_metric("neg"),
    outcome_metric("scm_per_image"),
)


@dataclass(frozen=True)
class _Scored:
    """A subtest's scores and outcomes (`DCISubtestInstance._score`)."""

    pos_scores: np.ndarray  # (n, bag): each entry's own positives
    neg_scores: np.ndarray  # (n,)
    scm: dci_metrics.Outcome
    per_image: dci_metrics.Outcome
    neg: dci_metrics.Outcome


@dataclass(frozen=True)
class DCISubtestTask:
    """One reference subtest (``dci/<subtest>``) on a DCI release; default split ``test``."""

    name: str
    subtest: SubtestSpec
    description: str
    dataset: str = "dci"
    default_split: str = "test"
    group_size: int = dci_metrics.REFERENCE_GROUP_SIZE

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return SUBTEST_METRICS

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(
        self, dataset: Any, *, split: str | None = None, seed: int = 0
    ) -> DCISubtestInstance:
        from densecap_eval.datasets.dci.entries import build_subtest

        split = split or self.default_split
        built = build_subtest(dataset, self.subtest, split=split, seed=seed)
        return DCISubtestInstance(self, split, list(built.examples), list(built.skipped))


@dataclass
class DCISubtestInstance:
    """A subtest's examples in reference order, with their plan indices once planned."""

    spec: DCISubtestTask
    split: str
    examples: list[Example]
    skipped: list[SkippedImage] = field(default_factory=list)
    needs_embedding: bool = False
    _regions: np.ndarray | None = field(default=None, repr=False)
    _pos: np.ndarray | None = field(default=None, repr=False)
    _neg: np.ndarray | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def images(self) -> list[str]:
        return [ex.entry.image for ex in self.examples]

    def bag_size(self) -> int:
        sizes = {len(ex.positives) for ex in self.examples}
        if len(sizes) > 1:
            # The reference reshapes (B, B*N): every bag of a subtest has the same size.
            raise DensecapError(f"{self.task}: caption bags of different sizes {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    def add_to_plan(self, plan: ScoringPlan) -> None:
        n, bag = len(self.examples), self.bag_size()
        self._regions = np.array(
            [plan.add_region(ex.entry.region) for ex in self.examples], dtype=np.int64
        )
        self._pos = np.array(
            [[plan.add_text(t) for t in ex.positives] for ex in self.examples], dtype=np.int64
        ).reshape(n, bag)
        self._neg = np.array([plan.add_text(ex.negative) for ex in self.examples], dtype=np.int64)
        r, pos, neg = self._regions, self._pos, self._neg
        for group in dci_metrics.reference_groups(n, group_size=self.spec.group_size):
            idx = np.arange(group.start, group.stop)
            plan.need_all(r[idx].tolist(), pos[idx].ravel().tolist())
        for i in range(n):
            plan.need(int(r[i]), int(neg[i]))
        for idx in dci_metrics.photo_groups(self.images):
            plan.need_all(r[idx].tolist(), pos[idx].ravel().tolist())

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """The subtest's metrics and examples (`TaskInstance.compute`). The retrieval tie rule
        is unused: SCM and Neg keep the reference's rules (first index of the maximum, strict
        ``>``) and count their ties in ``metrics["ties"]``."""
        r, pos, neg = planned(self.task, self._regions, self._pos, self._neg)
        n = pos.shape[0]
        scored = self._score(table, r, pos, neg)
        scm_out, per_out, neg_out = scored.scm, scored.per_image, scored.neg
        positions: list[int | None] = [None] * n
        if ctx.diff_positions is not None and n:
            positions = ctx.diff_positions([(ex.positives[0], ex.negative) for ex in self.examples])
        flags = {
            "scm": scm_out.correct.astype(np.float64),
            "neg": neg_out.correct.astype(np.float64),
            "scm_per_image": np.where(per_out.defined, per_out.correct, np.nan),
        }
        # Length by the reference tokenizer (metrics/length.py), of each entry's first positive.
        lengths = LengthBreakdown.of(ex.positives[0] for ex in self.examples)
        window = ctx.position_window()
        pos_labels, pos_order = position_labels(positions, window)
        metrics = self._metrics(
            flags, scored, lengths, (table.text_cut[pos], table.text_cut[neg]), ctx
        )
        if ctx.diff_positions is not None:
            metrics["by_diff_position"] = breakdown({"neg": flags["neg"]}, pos_labels, pos_order)
            metrics["diff_position_buckets"] = window.edges() if window is not None else None

        frame = self._frame(
            group_of=np.arange(n, dtype=np.int64) // self.spec.group_size,
            pos_scores=scored.pos_scores,
            neg_scores=scored.neg_scores,
            scm=(scm_out.correct, scm_out.tie),
            per=(per_out.correct, per_out.tie, per_out.defined),
            neg=(neg_out.correct, neg_out.tie),
            tokens=(
                table.text_tokens[pos],
                table.text_cut[pos],
                table.text_tokens[neg],
                table.text_cut[neg],
            ),
            positions=positions,
            diff_labels=list(pos_labels) if ctx.diff_positions is not None else [None] * n,
            lengths=(lengths.ref_tokens, lengths.labels),
        )
        return metrics, frame

    def _score(self, table: ScoreTable, r: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> _Scored:
        """SCM in the reference's groups, SCM per photo and Neg, from the score table."""
        n, bag = pos.shape
        pos_scores = np.zeros((n, bag))
        neg_scores = np.zeros(n)

        def reference_block(idx: np.ndarray) -> np.ndarray:
            """The group's (B, B*bag) block; its diagonal and negatives are kept on the way."""
            b = len(idx)
            block = table.matrix(r[idx].tolist(), pos[idx].ravel().tolist())
            diag = np.arange(b)
            pos_scores[idx] = block.reshape(b, b, bag)[diag, diag]
            if table.kind == "embedding":  # the reference's (B, B) block, then its diagonal
                neg_scores[idx] = np.diag(table.matrix(r[idx].tolist(), neg[idx].tolist()))
            else:  # a pair scorer scored exactly the planned (entry, own negative) pairs
                neg_scores[idx] = table.scores(r[idx], neg[idx])
            return block

        scm_out = dci_metrics.scm_groups(
            dci_metrics.reference_group_indices(n, group_size=self.spec.group_size),
            n,
            reference_block,
        )
        if table.kind == "embedding" and n:
            # The reference scores negatives in a block of their own; a negative the model sees
            # exactly as a positive of its bag (an edit past the window) is that positive's
            # float, not one a different block shape rounded differently.
            rows, cols = np.nonzero(table.text_slot[neg][:, None] == table.text_slot[pos])
            neg_scores[rows] = pos_scores[rows, cols]
        per_out = dci_metrics.scm_groups(
            dci_metrics.photo_group_indices(self.images),
            n,
            lambda idx: table.matrix(r[idx].tolist(), pos[idx].ravel().tolist()),
        )
        neg_out = dci_metrics.neg_outcome(pos_scores, neg_scores)
        return _Scored(pos_scores, neg_scores, scm_out, per_out, neg_out)

    def _metrics(
        self,
        flags: dict[str, np.ndarray],
        scored: _Scored,
        lengths: LengthBreakdown,
        cuts: tuple[np.ndarray, np.ndarray],
        ctx: ComputeContext,
    ) -> dict[str, Any]:
        """metrics.json's entry, up to the breakdown by first-difference position."""
        n = len(self.examples)
        pos_cut, neg_cut = cuts
        return {
            "scm": accuracy(flags["scm"]),
            "neg": accuracy(flags["neg"]),
            "scm_per_image": accuracy(flags["scm_per_image"]),
            "n": n,
            "scm_per_image_n": scored.per_image.n,
            "scm_per_image_excluded": n - scored.per_image.n,
            "ties": {
                "scm": int(scored.scm.tie.sum()),
                "neg": int(scored.neg.tie.sum()),
                "scm_per_image": int(scored.per_image.tie.sum()),
            },
            "ci": bootstrap_ci(flags, self.images, ctx),
            **lengths.metrics(flags),
            "model_max_text_tokens": ctx.max_text_tokens,
            "cut_share": float(pos_cut.mean()) if n else None,
            "neg_cut_share": float(neg_cut.mean()) if n else None,
        }

    def _frame(
        self,
        *,
        group_of: np.ndarray,
        pos_scores: np.ndarray,
        neg_scores: np.ndarray,
        scm: tuple[np.ndarray, np.ndarray],
        per: tuple[np.ndarray, np.ndarray, np.ndarray],
        neg: tuple[np.ndarray, np.ndarray],
        tokens: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        positions: list[int | None],
        diff_labels: list[str | None],
        lengths: tuple[list[int], list[str]],
    ) -> pd.DataFrame:
        import pandas as pd

        pos_tokens, pos_cut, neg_tokens, neg_cut = tokens
        per_correct, per_tie, per_defined = per
        n = len(self.examples)
        data = {
            "task": [self.task] * n,
            "split": [self.split] * n,
            "image": self.images,
            "entry_key": [ex.entry.key for ex in self.examples],
            "box": [
                list(ex.entry.region.box) if ex.entry.region.box is not None else None
                for ex in self.examples
            ],
            "group": group_of,
            "positives": [list(ex.positives) for ex in self.examples],
            "negative": [ex.negative for ex in self.examples],
            "negative_key": [ex.negative_key for ex in self.examples],
            "pos_scores": [as_list(row) for row in pos_scores],
            "neg_score": neg_scores.astype(np.float64),
            "scm_correct": scm[0],
            "scm_tie": scm[1],
            "scm_per_image_correct": pd.array(
                [bool(c) if d else None for c, d in zip(per_correct, per_defined, strict=True)],
                dtype="boolean",
            ),
            "scm_per_image_tie": pd.array(
                [bool(c) if d else None for c, d in zip(per_tie, per_defined, strict=True)],
                dtype="boolean",
            ),
            "neg_correct": neg[0],
            "neg_tie": neg[1],
            "pos_tokens": [as_list(row) for row in pos_tokens],
            "neg_tokens": neg_tokens.astype(np.int64),
            "pos_cut": [as_list(row) for row in pos_cut],
            "neg_cut": neg_cut.astype(bool),
            "diff_position": pd.array(positions, dtype="Int64"),  # raw, model's tokens
            "diff_bucket": pd.array(diff_labels, dtype="string"),  # its window bucket
            "ref_tokens": np.asarray(lengths[0], dtype=np.int64),  # CLIP BPE, first positive
            "length_bucket": lengths[1],  # by ref_tokens
        }
        return pd.DataFrame(data)
