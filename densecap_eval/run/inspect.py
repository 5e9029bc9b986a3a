"""What a dataset split holds: images, skipped images, entries per subtest, caption lengths.

`inspect_records` profiles any registered dataset from its neutral records (`records(split)`):
how many, which were skipped and why, and the untruncated CLIP BPE token counts of the
description texts (quantiles, share over 77 and over 248 tokens), per description kind. It
streams: a record is dropped once its texts are counted, and counts are kept as a growing
numpy int32 array per kind (4 bytes a text).

`inspect_dci` reads each record once and keeps only counters and token counts, so memory stays
flat over a 10,000-image split (the four subtests are built image by image on a one-record view
of the dataset instead of as four whole-split example lists); its report carries the same
profile (``profile``) over the texts DCI's neutral records give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.dci.entries import build_subtest, iter_entries, long_caption_base
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.datasets.dci.records import SUBTESTS, DCIRecord
from densecap_eval.datasets.records import SkippedImage, Text
from densecap_eval.metrics.length import reference_token_counts
from densecap_eval.metrics.tokens import (
    CLIP_CONTEXT_LENGTH,
    TOKENIZER_NAME,
    clip_token_counts,
    token_stats,
)


class _OneImage:
    """A dataset view holding one already-parsed record, so subtests do not re-read it.

    Skips go to the real dataset (which logs each image once and raises under strict).
    """

    def __init__(self, dataset: DCIDataset, record: DCIRecord) -> None:
        self._dataset = dataset
        self._record = record
        self.strict = dataset.strict
        self.skipped: list[SkippedImage] = []

    def split(self, split: str) -> list[str]:
        return [self._record.name]

    def load_record(self, name: str) -> DCIRecord:
        return self._record

    def iter_records(self, split: str) -> Iterator[DCIRecord]:
        yield self._record

    def photo_path(self, record: DCIRecord) -> Path:
        return self._dataset.photo_path(record)

    def skip(self, error: BadRecordError) -> SkippedImage:
        item = self._dataset.skip(error)
        self.skipped.append(item)
        return item


# --------------------------------------------------------------------------- generic profile

# Token limits the profile reports the share over: CLIP's context and Long-CLIP's.
PROFILE_LIMITS: tuple[int, ...] = (CLIP_CONTEXT_LENGTH, 248)
# Quantiles of the profile (numpy's default, linear interpolation), in display order.
PROFILE_QUANTILES: tuple[tuple[str, float], ...] = (
    ("min", 0.0),
    ("p25", 25.0),
    ("median", 50.0),
    ("p75", 75.0),
    ("p90", 90.0),
    ("max", 100.0),
)


class _Counts:
    """Token counts of one text kind: an int32 array that doubles when full (4 bytes a text)."""

    def __init__(self) -> None:
        self._data = np.empty(1024, dtype=np.int32)
        self._n = 0

    def add(self, counts: Iterable[int]) -> None:
        for count in counts:
            if self._n == len(self._data):
                self._data = np.resize(self._data, 2 * len(self._data))
            self._data[self._n] = count
            self._n += 1

    def stats(self) -> dict[str, Any]:
        """count, mean, the `PROFILE_QUANTILES` and ``over_<limit>`` shares (None when empty)."""
        counts = self._data[: self._n]
        out: dict[str, Any] = {"count": self._n, "mean": None}
        out |= {name: None for name, _ in PROFILE_QUANTILES}
        out |= {f"over_{limit}": None for limit in PROFILE_LIMITS}
        if self._n == 0:
            return out
        out["mean"] = float(counts.mean())
        for name, q in PROFILE_QUANTILES:
            value = float(np.percentile(counts, q))
            out[name] = int(value) if name in ("min", "max") else value
        for limit in PROFILE_LIMITS:
            out[f"over_{limit}"] = float((counts > limit).mean())
        return out


class _Profile:
    """Description-text token counts per kind, in the order the kinds are met."""

    def __init__(self) -> None:
        self.records = 0
        self._kinds: dict[str, _Counts] = {}

    def add(self, texts: Iterable[Text]) -> None:
        self.records += 1
        for text in texts:
            if text.role != "description":
                continue
            counts = self._kinds.get(text.kind)
            if counts is None:
                counts = self._kinds[text.kind] = _Counts()
            counts.add(reference_token_counts([text.text]))

    def tokens(self) -> dict[str, dict[str, Any]]:
        return {kind: counts.stats() for kind, counts in self._kinds.items()}


def _split_names(dataset: Any) -> list[str]:
    splits = dataset.splits()
    return list(splits.keys() if hasattr(splits, "keys") else splits)


def inspect_records(
    dataset: Any, *, split: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """Profile of ``dataset.records(split)`` (every split when None), for any dataset.

    - ``records``: records yielded; ``skipped``: images the loader left out while reading them
      (``{"image", "reason"}``); ``images``: both together.
    - ``tokens.<kind>``: for the description texts of each kind (``caption``, ``full`` ...):
      ``count``, ``mean``, ``min``, ``p25``, ``median``, ``p75``, ``p90``, ``max`` of the
      untruncated OpenAI CLIP BPE count (start and end tokens included; memoised per text,
      `densecap_eval.metrics.length.reference_token_counts`) and ``over_77`` / ``over_248``,
      the share of texts longer than CLIP's and Long-CLIP's context.

    Streams the records; raises DatasetError for a split the dataset does not have. Under a
    strict dataset the first bad record raises BadRecordError.
    """
    known = _split_names(dataset)
    if split is not None and split not in known:
        raise DatasetError(
            f"unknown split {split!r} of dataset {name or dataset.name!r} "
            f"(known: {', '.join(known) or 'none'})"
        )
    skipped_before = len(dataset.skipped)
    profile = _Profile()
    for record in dataset.records(split):
        profile.add(record.texts)
    skipped = [item.to_dict() for item in dataset.skipped[skipped_before:]]
    # A loader's own account of what is there (ELEVATER: each of its datasets, present or not).
    about = dataset.describe() if callable(getattr(dataset, "describe", None)) else None
    return {
        "dataset": name or getattr(dataset, "name", type(dataset).__name__),
        "root": str(dataset.root),
        "split": split,
        "splits": known,
        "images": profile.records + len(skipped),
        "records": profile.records,
        "skipped": skipped,
        "tokenizer": TOKENIZER_NAME,
        "limits": list(PROFILE_LIMITS),
        "tokens": profile.tokens(),
        **({"about": about} if about is not None else {}),
    }


def _dci_texts(record: DCIRecord) -> tuple[Text, ...]:
    """The description texts `DCIDataset.records` gives this record (kept in step with it)."""
    return (
        Text(f"{record.short_caption}\n{record.extra_caption}", kind="caption"),
        Text(long_caption_base(record), kind="full"),
    )


def _summary_texts(record: DCIRecord, key: str) -> list[str]:
    value = (record.summaries or {}).get(key)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def inspect_dci(dataset: DCIDataset, *, split: str = "test", seed: int = 0) -> dict[str, Any]:
    """Counts and caption-length statistics of one DCI split.

    - ``images``: images listed in the split; ``skipped``: images left out by at least one
      subtest or unusable altogether, each once with its first reason (``{"image", "reason"}``).
    - ``subtests.<name>.entries`` / ``.skipped``: examples and skipped images per reference subtest.
    - ``tokens.long_caption``: every entry (base and subcrops) of every image whose entries can
      be built; ``tokens.summary``: every summary string of those entries' caption bags. Counts
      are untruncated CLIP token counts with start and end tokens (`densecap_eval.metrics.tokens`).

    Under ``dataset.strict`` the first bad record raises BadRecordError.
    """
    tally = _DCITally()
    names = dataset.split(split)
    for name in names:
        try:
            record = dataset.load_record(name)
        except BadRecordError as exc:
            tally.unreadable(dataset.skip(exc))
            continue
        tally.add(dataset, record, split=split, seed=seed)
    return tally.report(dataset, split=split, images=len(names))


class _DCITally:
    """What `inspect_dci` counts, one record at a time (memory stays flat over a split)."""

    def __init__(self) -> None:
        self.skipped: dict[str, str] = {}  # image -> first reason, in the order met
        self.subtests = {name: {"entries": 0, "skipped": 0} for name in SUBTESTS}
        self.long_counts: list[int] = []
        self.summary_counts: list[int] = []
        self.entries = 0
        self.profile = _Profile()  # the generic profile, from the records already parsed here

    def note(self, item: SkippedImage) -> None:
        self.skipped.setdefault(item.image, item.reason)

    def unreadable(self, item: SkippedImage) -> None:
        """A record that could not be read: skipped by every subtest."""
        self.note(item)
        for counters in self.subtests.values():
            counters["skipped"] += 1

    def add(self, dataset: DCIDataset, record: DCIRecord, *, split: str, seed: int) -> None:
        """One record: its texts, its entries' token counts and its subtest examples."""
        self.profile.add(_dci_texts(record))
        view = _OneImage(dataset, record)
        long_texts: list[str] = []
        summary_texts: list[str] = []
        for entry in iter_entries(view, split, include_subcrops=True, use_summaries=False):
            long_texts.append(entry.long_caption)
            summary_texts += _summary_texts(record, entry.key)
        for item in view.skipped:  # e.g. a bad photo, met while building entries
            self.note(item)
        self.entries += len(long_texts)
        self.long_counts += clip_token_counts(long_texts)
        self.summary_counts += clip_token_counts(summary_texts)
        for subtest_name, spec in SUBTESTS.items():
            result = build_subtest(view, spec, split=split, seed=seed)
            self.subtests[subtest_name]["entries"] += len(result.examples)
            self.subtests[subtest_name]["skipped"] += len(result.skipped)
            for item in result.skipped:
                self.note(item)

    def report(self, dataset: DCIDataset, *, split: str, images: int) -> dict[str, Any]:
        return {
            "dataset": "dci",
            "root": str(dataset.root),
            "split": split,
            "images": images,
            "images_usable": images - len(self.skipped),
            "skipped": [{"image": image, "reason": why} for image, why in self.skipped.items()],
            "entries": self.entries,
            "subtests": self.subtests,
            "tokenizer": TOKENIZER_NAME,
            "context_length": CLIP_CONTEXT_LENGTH,
            "tokens": {
                "long_caption": token_stats(self.long_counts),
                "summary": token_stats(self.summary_counts),
            },
            # The generic profile of `inspect_records`, over the records that could be read.
            "profile": {
                "records": self.profile.records,
                "limits": list(PROFILE_LIMITS),
                "tokens": self.profile.tokens(),
            },
        }


# Datasets with a richer report than `inspect_records`: name -> (dataset, split=) -> report.
INSPECTORS: dict[str, Callable[..., dict[str, Any]]] = {"dci": inspect_dci}
# The split a richer inspector reads when none is given (the generic profile reads them all).
DEFAULT_SPLITS: dict[str, str] = {"dci": "test"}


def inspect_dataset(name: str, dataset: Any, *, split: str | None) -> dict[str, Any]:
    """The report of dataset ``name``: its registered inspector's, else `inspect_records`."""
    if name in INSPECTORS:
        return INSPECTORS[name](dataset, split=split or DEFAULT_SPLITS.get(name, "test"))
    return inspect_records(dataset, split=split, name=name)
