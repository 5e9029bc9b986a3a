"""sDCI entries of a DCI record and the four reference subtests (docs/protocols/dci.md, "Entries").

Per image, in split order: the base entry (whole photo), then one subcrop entry per mask whose
raw bounds are at least 224 x 224, in mask_data order. Every image-level problem the reference
would crash on or swallow (and drop the image for) raises `BadRecordError` here; the callers
skip it loudly, or stop under ``strict``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from densecap_eval.core.errors import BadRecordError, UnknownNameError
from densecap_eval.datasets.dci.masks import SUBCROP_MIN_SIZE
from densecap_eval.datasets.dci.negatives import NegativeError, select_negative
from densecap_eval.datasets.dci.records import (
    SUBTESTS,
    DCIRecord,
    Entry,
    Example,
    Mask,
    SubtestSpec,
)
from densecap_eval.datasets.photos import photo_size
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Box, Region

logger = logging.getLogger(__name__)

BASE_KEY = "base"
ALSO_SEEN = "\nThe following can also be seen in the image:\n"
PAD_FRACTION = 0.15


class EntrySource(Protocol):
    """What entries need from a dataset (DCIDataset satisfies it)."""

    strict: bool

    def split(self, split: str) -> list[str]: ...
    def load_record(self, name: str) -> DCIRecord: ...
    def iter_records(self, split: str) -> Iterator[DCIRecord]: ...
    def photo_path(self, record: DCIRecord) -> Path: ...
    def skip(self, error: BadRecordError) -> SkippedImage: ...


@dataclass
class SubtestExamples:
    """One subtest's examples in the reference's order, and the images it left out (with reasons)."""

    spec: SubtestSpec
    examples: list[Example] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)


# --- captions ---------------------------------------------------------------------------------


def _with_also_seen(head: str, texts: list[str]) -> str:
    return head + ALSO_SEEN + "\n".join(texts) if texts else head


def long_caption_base(record: DCIRecord) -> str:
    """Short + extra caption, then every usable mask's text over ALL masks in mask_data order."""
    texts = [m.text for m in record.masks.values() if m.text is not None]
    return _with_also_seen(f"{record.short_caption}\n{record.extra_caption}", texts)


def descendant_texts(record: DCIRecord, mask: Mask) -> list[str]:
    """Texts of ``mask``'s descendants, depth-first through `requirements`.

    Like the reference: a missing child id is skipped, and a quality-2 child is skipped together
    with its whole subtree (its own children are never visited). A cycle would make the
    reference recurse without end; it is reported as a bad record instead.
    """
    texts: list[str] = []
    root_key = next((k for k, m in record.masks.items() if m is mask), mask.idx)
    path = [root_key]

    def visit(current: Mask, on_path: set[int]) -> None:
        for child_id in current.children:
            child = record.masks.get(child_id)
            if child is None or child.quality == 2:
                continue
            if child_id in on_path:
                cycle = " -> ".join(str(i) for i in [*path, child_id])
                raise BadRecordError(record.name, f"cyclic mask tree ({cycle})")
            if child.text is not None:
                texts.append(child.text)
            path.append(child_id)
            visit(child, on_path | {child_id})
            path.pop()

    visit(mask, {root_key})
    return texts


def long_caption_subcrop(record: DCIRecord, mask: Mask) -> str:
    """``This is an image of {label}. {caption}``, plus the texts of the mask's usable descendants."""
    return _with_also_seen(
        f"This is an image of {mask.label}. {mask.caption}", descendant_texts(record, mask)
    )


# --- subcrops ---------------------------------------------------------------------------------


def subcrop_masks(record: DCIRecord) -> list[Mask]:
    """Masks whose raw bounds are >= 224 wide and >= 224 high, in mask_data order (any quality).

    The reference reads every mask's bounds to decide, so one unreadable bounds makes the whole
    image bad (BadRecordError) here, even on a mask that would not have been selected.
    """
    selected = []
    for key, mask in record.masks.items():
        if mask.bounds_error is not None:
            raise BadRecordError(record.name, f"mask_data[{str(key)!r}]: {mask.bounds_error}")
        if mask.bounds.width >= SUBCROP_MIN_SIZE and mask.bounds.height >= SUBCROP_MIN_SIZE:
            selected.append(mask)
    return selected


def subcrop_box(mask: Mask, width: int, height: int) -> Box:
    """The mask's bounds padded by int(0.15 * w) left/right and int(0.15 * h) top/bottom,
    clamped to the photo (width x height); may be empty when the bounds lie outside the photo."""
    b = mask.bounds
    pad_w, pad_h = int(b.width * PAD_FRACTION), int(b.height * PAD_FRACTION)
    left = min(max(b.left - pad_w, 0), width)
    top = min(max(b.top - pad_h, 0), height)
    right = max(min(b.right + pad_w, width), 0)
    bottom = max(min(b.bottom + pad_h, height), 0)
    return (left, top, right, bottom)


# --- photos -----------------------------------------------------------------------------------


# --- entries ----------------------------------------------------------------------------------


def _bag(record: DCIRecord, key: str) -> tuple[tuple[str, ...], bool]:
    """(caption bag, summary_is_list) of one entry; raises when the reference would."""
    if record.summaries is None:
        raise BadRecordError(record.name, "no summaries")
    if key not in record.summaries:
        raise BadRecordError(record.name, f"no summary for entry {key!r}")
    summary = record.summaries[key]
    if isinstance(summary, str):
        return (summary,), False
    if not summary:
        raise BadRecordError(record.name, f"empty summary list for entry {key!r}")
    return tuple(summary), True


def build_entries(
    dataset: EntrySource, record: DCIRecord, *, include_subcrops: bool, use_summaries: bool = True
) -> list[Entry]:
    """The record's entries: ``base`` then ``m-{idx}-sc`` subcrops (when asked), in reference order.

    With ``use_summaries`` (the sDCI view) each entry's caption bag is its summary (a string is a
    bag of 1); otherwise it is the long caption. Negatives and clip scores are attached as
    found (empty when absent): subtests check what they need.
    """
    path = dataset.photo_path(record)
    width, height = photo_size(path, image=record.name)
    photo = str(path.absolute())
    items: list[tuple[str, Region, str]] = [(BASE_KEY, Region(photo), long_caption_base(record))]
    if include_subcrops:
        for mask in subcrop_masks(record):
            box = subcrop_box(mask, width, height)
            if box[2] <= box[0] or box[3] <= box[1]:
                raise BadRecordError(
                    record.name,
                    f"mask {mask.idx}: crop box {box} is empty (bounds {mask.bounds} "
                    f"lie outside the {width}x{height} photo)",
                )
            key = f"m-{mask.idx}-sc"
            items.append((key, Region(photo, box), long_caption_subcrop(record, mask)))

    entries = []
    negatives = record.negatives or {}
    scores = record.clip_scores or {}
    for key, region, long_caption in items:
        bag, is_list = _bag(record, key) if use_summaries else ((long_caption,), False)
        entries.append(
            Entry(
                image=record.name,
                key=key,
                region=region,
                long_caption=long_caption,
                summaries=bag,
                summary_is_list=is_list,
                negatives={kind: tuple(texts) for kind, texts in negatives.get(key, {}).items()},
                clip_scores=dict(scores.get(key, {})),
            )
        )
    return entries


# --- subtests ---------------------------------------------------------------------------------


def _rule_skip(record: DCIRecord, spec: SubtestSpec) -> str | None:
    """The reference's image filter (it skips these images without raising)."""
    if record.summaries is None:
        return "no summaries"
    if record.negatives is None:
        return "no negatives"
    if spec.include_subcrops and len(record.negatives) == 1:
        only = next(iter(record.negatives))
        return f"negatives for one entry only ({only!r}) while subcrops are loaded"
    return None


def _examples(
    dataset: EntrySource, record: DCIRecord, spec: SubtestSpec, seed: int
) -> list[Example]:
    entries = build_entries(dataset, record, include_subcrops=spec.include_subcrops)
    negatives = record.negatives or {}  # None was ruled out by _rule_skip
    chosen = []
    for entry in entries:
        if entry.key not in negatives:
            raise BadRecordError(record.name, f"no negatives for entry {entry.key!r}")
        # The reference reads clip_scores[entry] for every strategy, so it must exist.
        if record.clip_scores is None:
            raise BadRecordError(record.name, "no clip_scores")
        if entry.key not in record.clip_scores:
            raise BadRecordError(record.name, f"no clip_scores for entry {entry.key!r}")
        # Seeded per example, so a choice does not depend on which images came before.
        rng = None
        if spec.negative_strategy == "rand":
            rng = random.Random(f"{seed}/{record.name}/{entry.key}")
        try:
            text, key = select_negative(
                entry.negatives,
                spec.negative_source,
                spec.negative_strategy,
                clip_scores=entry.clip_scores,
                rng=rng,
            )
        except NegativeError as exc:
            raise BadRecordError(record.name, f"entry {entry.key!r}: {exc}") from None
        chosen.append((entry, text, key))

    examples = []
    for entry, text, key in chosen:
        if spec.bag_size > 0:
            # Bag subtests keep only entries whose summary is a list of >= N; the bag is its first N.
            if not entry.summary_is_list or len(entry.summaries) < spec.bag_size:
                continue
            positives = entry.summaries[: spec.bag_size]
        else:
            positives = entry.summaries[:1]
        examples.append(Example(entry=entry, positives=positives, negative=text, negative_key=key))
    return examples


def resolve_subtest(subtest: str | SubtestSpec) -> SubtestSpec:
    if isinstance(subtest, SubtestSpec):
        return subtest
    name = subtest.removeprefix("dci/")
    if name not in SUBTESTS:
        raise UnknownNameError(f"unknown DCI subtest {subtest!r} (known: {', '.join(SUBTESTS)})")
    return SUBTESTS[name]


def build_subtest(
    dataset: EntrySource, subtest: str | SubtestSpec, *, split: str = "test", seed: int = 0
) -> SubtestExamples:
    """Examples of one subtest over ``split``, in the reference's order.

    Images the reference filters out (no summaries, no negatives, negatives for one entry only
    when subcrops are loaded) are listed in ``skipped`` and logged. Bad images (the reference
    would raise) are listed and logged too, or raise BadRecordError under ``dataset.strict``.
    """
    spec = resolve_subtest(subtest)
    result = SubtestExamples(spec)
    for name in dataset.split(split):
        try:
            record = dataset.load_record(name)
            rule = _rule_skip(record, spec)
            if rule is not None:
                logger.warning("%s: skipping %s: %s", spec.name, name, rule)
                result.skipped.append(SkippedImage(name, rule))
                continue
            result.examples += _examples(dataset, record, spec, seed)
        except BadRecordError as exc:
            result.skipped.append(dataset.skip(exc))
    return result


def iter_entries(
    dataset: EntrySource, split: str, *, include_subcrops: bool = True, use_summaries: bool = False
) -> Iterator[Entry]:
    """Entries of every usable image of ``split``, lazily; bad images are skipped loudly (or raise)."""
    for record in dataset.iter_records(split):
        try:
            entries = build_entries(
                dataset, record, include_subcrops=include_subcrops, use_summaries=use_summaries
            )
        except BadRecordError as exc:
            dataset.skip(exc)
            continue
        yield from entries
