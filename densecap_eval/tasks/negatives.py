"""Negatives for any dataset, and Neg accuracy by where the edit lies in the model's tokens.

A `NegativesTask` is declared data, like a `RetrievalTask`: which dataset, which description of
each record (``text_kind``), the peer's text rule (``text_rule``, `TEXT_RULES`), which split
and how many records (``limit``: the first N). Where the negatives come from (``source``):

- ``"generated"``: the record's description is the positive; `densecap_eval.tasks.textedits` makes
  the negatives (``kinds``, ``per_kind`` of each; seeded per record from (run seed, record id)
  with sha256, so a run is the same everywhere). Datasets with no negatives of their own get
  ``<ds>/negatives`` this way.
- ``"record"``: the record's own ``role="positive"`` and ``role="negative"`` texts (a user's
  files). A negative pairs with the positive its ``meta["positive"]`` names (an index into the
  record's positives, or the positive's text), else the first positive. Its kind is the Text's
  ``kind`` (``meta["edit_kind"]`` when the Text kind is the default ``caption``).

The text rule applies to positives and negatives alike (before generating). Each (positive,
negative) pair is one example, correct iff ``score(image, positive) > score(image, negative)``
strictly (a tie is wrong and counted in ``ties``). Each photo and each text is planned once,
the pairs needed are declared, so pair scorers (VLMs) score only those.

Where the model stops reading. The edit's position is the first-difference position in the
MODEL's tokens (`diff_positions`, metrics/length.py). ``by_edit_position`` gives accuracy, n and
invisible count per `EDIT_BIN_WIDTH`-token bin (``0-15``, ``16-31``, ... ``496-511``, then
``512+``; ``identical`` when some pairs tokenise alike); the edges are in metrics.json
(``edit_position_bins``). An example is **invisible** when the model cannot tell the two texts
apart: they tokenise identically, or, under ``truncate``, the first difference lies past the
model's last visible position (`PositionWindow.last_visible`, 75 for CLIP's 77), so both
encode to the same tokens. ``invisible`` counts them (``invisible_share``); ``neg_visible`` is
the accuracy over the rest, the model's own mistakes. Under ``chunk-mean`` a later chunk sees
the edit, so nothing past the window is invisible: the curve past the window shows how much
comes back. ``by_diff_position`` holds DCI's window buckets (inside / edge / beyond or
later_chunk, identical).

Intervals (``ci``) are percentile bootstraps clustered by photo (all of a photo's negatives
resample together). ``by_length`` buckets by the CLIP BPE reference count of the positive.
The examples' ``entry_key`` (the kind and a digest of the two texts) identifies a pair across
runs, so `densecap-eval compare` pairs the same negatives of two models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from densecap_eval.core.errors import BadRecordError, DensecapError
from densecap_eval.datasets.records import ImageRecord, SkippedImage, Text
from densecap_eval.datasets.regions import Region
from densecap_eval.metrics.length import (
    IDENTICAL,
    PositionWindow,
    position_labels,
)
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import accuracy, breakdown, outcome_metric
from densecap_eval.tasks.blocks import LengthBreakdown, bootstrap_ci, planned
from densecap_eval.tasks.context import ComputeContext
from densecap_eval.tasks.textedits import EDIT_KINDS, generate_negatives, stable_seed

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

NegativesSource = Literal["generated", "record"]
EDIT_BIN_WIDTH = 16  # tokens per bin of ``by_edit_position``
EDIT_BIN_MAX = 512  # positions from here on share the last bin, ``512+``


def edit_bin_labels(width: int = EDIT_BIN_WIDTH, top: int = EDIT_BIN_MAX) -> list[str]:
    """``["0-15", "16-31", ..., "496-511", "512+"]``: the bins of ``by_edit_position``."""
    return [f"{lo}-{lo + width - 1}" for lo in range(0, top, width)] + [f"{top}+"]


def edit_bin(position: int | None, width: int = EDIT_BIN_WIDTH, top: int = EDIT_BIN_MAX) -> str:
    """The bin of a first-difference position (``identical`` for None)."""
    if position is None:
        return IDENTICAL
    if position >= top:
        return f"{top}+"
    lo = (int(position) // width) * width
    return f"{lo}-{lo + width - 1}"


def edit_bins_record(window: PositionWindow | None, text_policy: str) -> dict[str, Any]:
    """metrics.json's ``edit_position_bins``: how positions were binned and what was hidden."""
    last = window.last_visible if window is not None else None
    return {
        "unit": "model tokens (first-difference position, 0-based, leading special tokens in)",
        "width": EDIT_BIN_WIDTH,
        "edges": list(range(0, EDIT_BIN_MAX + 1, EDIT_BIN_WIDTH)),  # last bin: edges[-1] and up
        "labels": edit_bin_labels(),
        "last_visible": last,
        # Under truncate a position from here on is hidden (invisible); else None.
        "invisible_from": last + 1 if last is not None and text_policy == "truncate" else None,
    }


# Neg over every pair, then over the pairs whose edit the model can see (no per-example column
# of its own: the examples' ``invisible`` says which ``neg_correct`` rows it counts).
NEGATIVES_METRICS: tuple[MetricSpec, ...] = (outcome_metric("neg"), MetricSpec("neg_visible"))


@dataclass(frozen=True)
class NegExample:
    """One (positive, negative) pair of a photo, with what is known of the edit."""

    image: str  # record id: the bootstrap cluster
    region: Region
    positive: str
    negative: str
    kind: str
    edit_start: int | None = None  # characters, in the positive (None: not known)
    edit_word: int | None = None  # whitespace words of the positive before the edit


@dataclass(frozen=True)
class NegativesTask:
    """Neg accuracy on a dataset's positives and negatives (module doc).

    ``NegativesTask(name, protocol, description, dataset, source="generated",
    text_kind="caption", text_rule="raw", default_split=None, limit=None, kinds=EDIT_KINDS,
    per_kind=1)``; ``source="record"`` reads each record's positive / negative Texts instead of
    generating (``text_kind``, ``kinds`` and ``per_kind`` then unused).
    """

    # Not a gallery: a pair scorer scores it directly, no first-stage re-ranking
    # (evaluation reads this beside ``protocol``).
    needs_gallery: ClassVar[bool] = False

    name: str
    protocol: str
    description: str
    dataset: str
    source: NegativesSource = "generated"
    text_kind: str = "caption"
    text_rule: str = "raw"
    default_split: str | None = None  # None: every split, in the dataset's order
    limit: int | None = None
    kinds: tuple[str, ...] = EDIT_KINDS
    per_kind: int = 1

    def __post_init__(self) -> None:
        from densecap_eval.tasks.retrieval import TEXT_RULES

        if self.source not in ("generated", "record"):
            raise DensecapError(f"{self.name}: source must be 'generated' or 'record'")
        if self.text_rule not in TEXT_RULES:
            raise DensecapError(
                f"{self.name}: unknown text rule {self.text_rule!r} "
                f"(known: {', '.join(TEXT_RULES)})"
            )
        unknown = [k for k in self.kinds if k not in EDIT_KINDS]
        if unknown:
            raise DensecapError(f"{self.name}: unknown edit kinds {unknown} (known: {EDIT_KINDS})")

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return NEGATIVES_METRICS

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(
        self, dataset: Any, *, split: str | None = None, seed: int = 0
    ) -> NegativesInstance:
        from densecap_eval.datasets.photos import photo_size

        split = split or self.default_split
        examples: list[NegExample] = []
        skipped: list[SkippedImage] = []
        images: set[str] = set()
        without = 0
        for i, record in enumerate(dataset.records(split)):
            if self.limit is not None and i >= self.limit:
                break
            try:
                if record.id in images:
                    raise BadRecordError(record.id, "listed more than once")
                found = self._examples(record, seed)
                photo_size(record.image, image=record.id)  # a photo the engine cannot decode
            except BadRecordError as exc:
                skipped.append(dataset.skip(exc))
                continue
            images.add(record.id)
            without += not found
            examples.extend(found)
        return NegativesInstance(self, split or "all", examples, skipped, without)

    def _examples(self, record: ImageRecord, seed: int) -> list[NegExample]:
        from densecap_eval.tasks.retrieval import TEXT_RULES

        rule = TEXT_RULES[self.text_rule]
        region = Region(str(Path(record.image).absolute()))
        if self.source == "generated":
            text = record.description(self.text_kind)
            if text is None:
                raise BadRecordError(record.id, f"no {self.text_kind!r} description")
            positive = rule(text)
            edits = generate_negatives(
                positive,
                seed=stable_seed(seed, record.id),
                kinds=self.kinds,
                per_kind=self.per_kind,
            )
            return [
                NegExample(record.id, region, positive, e.text, e.kind, e.start, e.word_index)
                for e in edits
            ]
        positives = record.texts_of("positive")
        negatives = record.texts_of("negative")
        if negatives and not positives:
            raise BadRecordError(record.id, "negatives but no positive text")
        out = []
        for neg in negatives:
            pos = _positive_of(record.id, neg, positives)
            kind = neg.kind if neg.kind != "caption" else str(neg.meta.get("edit_kind", "record"))
            start = neg.meta.get("edit_start")
            word = neg.meta.get("edit_word_index")
            out.append(
                NegExample(
                    record.id,
                    region,
                    rule(pos.text),
                    rule(neg.text),
                    kind,
                    int(start) if start is not None else None,
                    int(word) if word is not None else None,
                )
            )
        return out


def _positive_of(image: str, negative: Text, positives: Sequence[Text]) -> Text:
    named = negative.meta.get("positive")
    if named is None:
        return positives[0]
    if isinstance(named, int) and not isinstance(named, bool):
        if 0 <= named < len(positives):
            return positives[named]
        raise BadRecordError(image, f"negative names positive {named}, of {len(positives)}")
    for pos in positives:
        if pos.text == named:
            return pos
    raise BadRecordError(image, f"negative names a positive it does not have: {named!r:.60}")


@dataclass
class NegativesInstance:
    """A negatives task's examples on one split, with their plan indices once planned."""

    spec: NegativesTask
    split: str
    examples: list[NegExample]
    skipped: list[SkippedImage] = field(default_factory=list)
    images_without_negatives: int = 0
    needs_embedding: bool = False
    _r: np.ndarray | None = field(default=None, repr=False)
    _pos: np.ndarray | None = field(default=None, repr=False)
    _neg: np.ndarray | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def images(self) -> list[str]:
        return [ex.image for ex in self.examples]

    def add_to_plan(self, plan: ScoringPlan) -> None:
        self._r = np.array([plan.add_region(ex.region) for ex in self.examples], dtype=np.int64)
        self._pos = np.array([plan.add_text(ex.positive) for ex in self.examples], dtype=np.int64)
        self._neg = np.array([plan.add_text(ex.negative) for ex in self.examples], dtype=np.int64)
        for r, p, n in zip(self._r.tolist(), self._pos.tolist(), self._neg.tolist(), strict=True):
            plan.need(r, p)
            plan.need(r, n)

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """Neg, its visible part and the invisible count, by edit position and kind (module
        doc; `TaskInstance.compute`). The retrieval tie rule is unused: a tie is wrong, as in
        DCI's Neg, and counted in ``ties``."""
        region_pos, pos_pos, neg_pos = planned(self.task, self._r, self._pos, self._neg)
        n = len(self.examples)
        # One call: a photo's positive and negative come from one block, so a negative the
        # model sees as its positive (an edit past the window) is the very same float.
        both = table.scores(np.stack([region_pos, region_pos], 1), np.stack([pos_pos, neg_pos], 1))
        pos_scores, neg_scores = both[:, 0], both[:, 1]
        correct = pos_scores > neg_scores
        tie = pos_scores == neg_scores
        places = _EditPlaces.of(self.examples, ctx)
        neg = correct.astype(np.float64)
        flags = {"neg": neg, "neg_visible": np.where(places.invisible, np.nan, neg)}
        lengths = LengthBreakdown.of(ex.positive for ex in self.examples)
        metrics = self._metrics(flags, tie, places, lengths, ctx)
        metrics["cut_share"] = float(table.text_cut[pos_pos].mean()) if n else None
        metrics["neg_cut_share"] = float(table.text_cut[neg_pos].mean()) if n else None
        if places.known:
            metrics.update(places.metrics(flags, ctx))
        frame = self._frame(
            scores=(pos_scores, neg_scores),
            outcome=(correct, tie, places.invisible),
            positions=places.positions,
            labels=(places.bins, places.window_labels if places.known else [None] * n),
            tokens=table,
            lengths=(lengths.ref_tokens, lengths.labels),
        )
        return metrics, frame

    def _metrics(
        self,
        flags: dict[str, np.ndarray],
        tie: np.ndarray,
        places: _EditPlaces,
        lengths: LengthBreakdown,
        ctx: ComputeContext,
    ) -> dict[str, Any]:
        """metrics.json's entry up to the cut shares (the position breakdowns follow them)."""
        n = len(self.examples)
        known, invisible = places.known, places.invisible
        n_invisible = int(invisible.sum())
        kinds = [ex.kind for ex in self.examples]
        kind_order = [k for k in EDIT_KINDS if k in kinds] + sorted(set(kinds) - set(EDIT_KINDS))
        return {
            "neg": accuracy(flags["neg"]),
            "neg_visible": accuracy(flags["neg_visible"]),
            "n": n,
            "n_visible": n - n_invisible,
            "invisible": n_invisible if known else None,
            "invisible_share": (n_invisible / n if n else None) if known else None,
            "n_images": len(set(self.images)),
            "images_without_negatives": self.images_without_negatives,
            "ties": {"neg": int(tie.sum())},
            "ci": bootstrap_ci(flags, self.images, ctx),
            "by_kind": _with_invisible(breakdown(flags, kinds, kind_order), kinds, invisible),
            **lengths.metrics(flags),
            "model_max_text_tokens": ctx.max_text_tokens,
            "text_policy": ctx.text_policy,
        }

    def _frame(
        self,
        *,
        scores: tuple[np.ndarray, np.ndarray],
        outcome: tuple[np.ndarray, np.ndarray, np.ndarray],
        positions: list[int | None],
        labels: tuple[Sequence[str | None], Sequence[str | None]],
        tokens: ScoreTable,
        lengths: tuple[list[int], list[str]],
    ) -> pd.DataFrame:
        import pandas as pd

        assert self._pos is not None and self._neg is not None  # checked by compute()
        n = len(self.examples)
        exs = self.examples
        data: dict[str, Any] = {
            "task": [self.task] * n,
            "split": [self.split] * n,
            "image": self.images,
            # identity across runs (compare): the kind and a digest of the two texts
            "entry_key": [f"{ex.kind}-{_pair_digest(ex.positive, ex.negative)}" for ex in exs],
            "kind": [ex.kind for ex in exs],
            "positive": [ex.positive for ex in exs],
            "negative": [ex.negative for ex in exs],
            "edit_start": pd.array([ex.edit_start for ex in exs], dtype="Int64"),  # characters
            "edit_word": pd.array([ex.edit_word for ex in exs], dtype="Int64"),  # words
            "pos_score": scores[0].astype(np.float64),
            "neg_score": scores[1].astype(np.float64),
            "neg_correct": outcome[0].astype(bool),
            "neg_tie": outcome[1].astype(bool),
            "invisible": outcome[2].astype(bool),
            "pos_tokens": tokens.text_tokens[self._pos].astype(np.int64),  # the model's count
            "neg_tokens": tokens.text_tokens[self._neg].astype(np.int64),
            "pos_cut": tokens.text_cut[self._pos].astype(bool),
            "neg_cut": tokens.text_cut[self._neg].astype(bool),
            "diff_position": pd.array(positions, dtype="Int64"),  # model's tokens
            "edit_bin": pd.array(labels[0], dtype="string"),  # by_edit_position's bin
            "diff_bucket": pd.array(labels[1], dtype="string"),  # its window bucket
            "ref_tokens": np.asarray(lengths[0], dtype=np.int64),  # CLIP BPE, the positive
            "length_bucket": lengths[1],
        }
        return pd.DataFrame(data)


@dataclass(frozen=True)
class _EditPlaces:
    """Where each example's edit falls for this model: its first-difference position, the
    window bucket and edit bin of it, and whether the model cannot see the edit."""

    known: bool  # False: no position function, so no position is known
    positions: list[int | None]
    window: PositionWindow | None
    invisible: np.ndarray
    bins: list[str | None]
    window_labels: Sequence[str | None]
    window_order: Sequence[str]

    @classmethod
    def of(cls, examples: Sequence[NegExample], ctx: ComputeContext) -> _EditPlaces:
        n = len(examples)
        positions: list[int | None] = [None] * n
        known = ctx.diff_positions is not None
        if ctx.diff_positions is not None and n:
            positions = ctx.diff_positions([(ex.positive, ex.negative) for ex in examples])
        window = ctx.position_window()
        truncated = window is not None and ctx.text_policy == "truncate"
        hidden_from = window.last_visible + 1 if window is not None and truncated else None
        invisible = np.array(
            [
                known and (p is None or (hidden_from is not None and p >= hidden_from))
                for p in positions
            ],
            dtype=bool,
        )
        win_labels, win_order = position_labels(positions, window)
        bins: list[str | None] = [edit_bin(p) for p in positions] if known else [None] * n
        return cls(known, positions, window, invisible, bins, win_labels, win_order)

    def metrics(self, flags: dict[str, np.ndarray], ctx: ComputeContext) -> dict[str, Any]:
        """The breakdowns by edit position and by the model's window (known positions only)."""
        bin_order = edit_bin_labels() + ([IDENTICAL] if IDENTICAL in self.bins else [])
        labels = self.window_labels
        return {
            "by_edit_position": _with_invisible(
                breakdown(flags, self.bins, bin_order), self.bins, self.invisible
            ),
            "edit_position_bins": edit_bins_record(self.window, ctx.text_policy),
            "by_diff_position": _with_invisible(
                breakdown(flags, labels, self.window_order), labels, self.invisible
            ),
            "diff_position_buckets": self.window.edges() if self.window is not None else None,
        }


def _pair_digest(positive: str, negative: str) -> str:
    return hashlib.sha256(f"{positive}\x1f{negative}".encode()).hexdigest()[:12]


def _with_invisible(
    rows: dict[str, dict[str, Any]], labels: Sequence[str | None], invisible: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Add each bucket's ``invisible`` count to a `breakdown`."""
    label_arr = np.array([lab if lab is not None else "" for lab in labels], dtype=object)
    for bucket, row in rows.items():
        row["invisible"] = int((invisible & (label_arr == bucket)).sum())
    return rows
