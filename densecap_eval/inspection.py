"""What a dataset split holds: images, skipped images, entries per subtest, caption lengths.

`inspect_dci` reads each record once and keeps only counters and token counts, so memory stays
flat over a 10,000-image split (the four subtests are built image by image on a one-record view
of the dataset instead of as four whole-split example lists).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from densecap_eval.datasets.dci.entries import build_subtest, iter_entries
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.datasets.dci.records import SUBTESTS, DCIRecord
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.errors import BadRecordError, DensecapError
from densecap_eval.tokens import CLIP_CONTEXT_LENGTH, TOKENIZER_NAME, clip_token_counts, token_stats


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
      are untruncated CLIP token counts with start and end tokens (`densecap_eval.tokens`).

    Under ``dataset.strict`` the first bad record raises BadRecordError.
    """
    names = dataset.split(split)
    skipped: dict[str, str] = {}  # image -> first reason, in the order met
    subtests = {name: {"entries": 0, "skipped": 0} for name in SUBTESTS}
    long_counts: list[int] = []
    summary_counts: list[int] = []
    entries_total = 0

    def note(item: SkippedImage) -> None:
        skipped.setdefault(item.image, item.reason)

    for name in names:
        try:
            record = dataset.load_record(name)
        except BadRecordError as exc:
            note(dataset.skip(exc))
            for counters in subtests.values():
                counters["skipped"] += 1
            continue
        view = _OneImage(dataset, record)
        long_texts: list[str] = []
        summary_texts: list[str] = []
        for entry in iter_entries(view, split, include_subcrops=True, use_summaries=False):
            long_texts.append(entry.long_caption)
            summary_texts += _summary_texts(record, entry.key)
        for item in view.skipped:  # e.g. a bad photo, met while building entries
            note(item)
        entries_total += len(long_texts)
        long_counts += clip_token_counts(long_texts)
        summary_counts += clip_token_counts(summary_texts)
        for subtest_name, spec in SUBTESTS.items():
            result = build_subtest(view, spec, split=split, seed=seed)
            subtests[subtest_name]["entries"] += len(result.examples)
            subtests[subtest_name]["skipped"] += len(result.skipped)
            for item in result.skipped:
                note(item)

    return {
        "dataset": "dci",
        "root": str(dataset.root),
        "split": split,
        "images": len(names),
        "images_usable": len(names) - len(skipped),
        "skipped": [{"image": image, "reason": reason} for image, reason in skipped.items()],
        "entries": entries_total,
        "subtests": subtests,
        "tokenizer": TOKENIZER_NAME,
        "context_length": CLIP_CONTEXT_LENGTH,
        "tokens": {
            "long_caption": token_stats(long_counts),
            "summary": token_stats(summary_counts),
        },
    }


# Datasets `densecap-eval inspect` knows how to describe: name -> (dataset, split) -> report.
INSPECTORS: dict[str, Callable[..., dict[str, Any]]] = {"dci": inspect_dci}


def inspect_dataset(name: str, dataset: Any, *, split: str) -> dict[str, Any]:
    """Run the inspector registered for dataset ``name``."""
    if name not in INSPECTORS:
        raise DensecapError(
            f"inspect does not describe dataset {name!r} yet (it can: {', '.join(INSPECTORS)})"
        )
    return INSPECTORS[name](dataset, split=split)
