"""Read the DCI release: ``<root>/densely_captioned_images/{splits.json, complete/, photos/}``.

Records are parsed one at a time and never cached, so iterating a split keeps memory flat; no
photo is opened here (see entries.py for that). A record the reference could not use is a *bad
record*: by default it is logged, listed in `DCIDataset.skipped` and skipped; with
``strict=True`` the first one raises `BadRecordError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.core.paths import get_data_hint
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.dci.layout import (
    PHOTOS_DIR,
    RECORDS_DIR,
    RELEASE_DIR,
    SPLITS_FILE,
    read_splits,
)
from densecap_eval.datasets.dci.masks import parse_mask
from densecap_eval.datasets.dci.records import DCIRecord, Mask
from densecap_eval.datasets.records import ImageRecord, Text

_REQUIRED_TEXT = ("image", "short_caption", "extra_caption")


class DCIDataset(DatasetBase):
    """The DCI release under ``root`` (the folder that contains densely_captioned_images/)."""

    name = "dci"
    title = "DCI"

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        return get_data_hint(cls.name, root)

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        self.base = self.root / RELEASE_DIR
        if not self.base.is_dir():
            raise DatasetError(
                f"{self.base} not found: the DCI root must contain {RELEASE_DIR}/; "
                f"{self.how_to_get(self.root)}"
            )
        self._splits = read_splits(self.base / SPLITS_FILE)
        for folder in (RECORDS_DIR, PHOTOS_DIR):
            if not (self.base / folder).is_dir():
                raise DatasetError(
                    f"{self.base / folder} not found: the DCI release needs {folder}/"
                )

    # --- splits -------------------------------------------------------------------------------

    def splits(self) -> list[str]:
        """Split names, in splits.json's order."""
        return list(self._splits)

    def known_splits(self) -> list[str]:
        return sorted(self._splits)

    def splits_source(self) -> Path:
        return self.base / SPLITS_FILE

    def split_members(self) -> dict[str, list[str]]:
        """Split name -> record file names, as in splits.json."""
        return {name: list(names) for name, names in self._splits.items()}

    def split(self, split: str) -> list[str]:
        """Record file names of one split, in file order."""
        self.check_split(split)
        return list(self._splits[split])

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """splits.json's bytes and, by size only, each record of ``splits`` (sorted,
        deduplicated), framed as DCI's fingerprint always was (``[split, name, byte size]`` as
        JSON after splits.json's bytes), so the fingerprints stored with earlier DCI runs still
        match (tests/test_dci_loader.py pins the formula). One stat per record; photos are not
        read."""
        records = [
            FingerprintFile(f"{split}/{name}", self.record_path(name), content=False,
                            header=_record_header)
            for split in sorted(set(splits))
            for name in self.split(split)
        ]  # fmt: skip
        return [FingerprintFile(SPLITS_FILE, self.base / SPLITS_FILE, header=_no_header), *records]

    # --- records ------------------------------------------------------------------------------

    def record_path(self, name: str) -> Path:
        return self.base / RECORDS_DIR / name

    def photo_path(self, record: DCIRecord) -> Path:
        return self.base / PHOTOS_DIR / record.image

    def load_record(self, name: str) -> DCIRecord:
        """Parse and validate complete/<name>; raises BadRecordError(name, reason)."""
        path = self.record_path(name)
        if Path(name).name != name or name in ("", ".", ".."):
            raise BadRecordError(name, f"splits.json names {name!r}, which is not a file name")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadRecordError(
                name, "listed in splits.json but there is no such record file"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BadRecordError(name, f"cannot read the record file: {exc}") from exc
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRecordError(name, f"invalid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise BadRecordError(name, f"not a JSON object (found {type(raw).__name__})")
        return parse_record(name, raw)

    def iter_records(self, split: str) -> Iterator[DCIRecord]:
        """Records of ``split`` in order, one at a time; bad ones are skipped loudly (or raise)."""
        names = self.split(split)
        return self.iter_parsed(((name, name) for name in names), self.load_record)

    def skip_where(self, error: BadRecordError) -> str:
        return str(self.record_path(error.image))

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Neutral records (datasets/records.py) of ``split`` (every split when None).

        Texts: ``caption`` = short caption + newline + extra caption (what LoTLIP's DCI
        retrieval splits and rejoins), ``full`` = the base entry's full DCI description.
        """
        from densecap_eval.datasets.dci.entries import long_caption_base

        for name in [split] if split else list(self._splits):
            for record in self.iter_records(name):
                texts = (
                    Text(f"{record.short_caption}\n{record.extra_caption}", kind="caption"),
                    Text(long_caption_base(record), kind="full"),
                )
                yield ImageRecord(record.name, self.photo_path(record), texts, split=name)


def parse_record(name: str, raw: Mapping[str, Any]) -> DCIRecord:
    """Validate one decoded record; raises BadRecordError naming the first problem."""
    missing = [f for f in (*_REQUIRED_TEXT, "mask_data") if f not in raw]
    if missing:
        raise BadRecordError(name, f"missing required field(s): {', '.join(missing)}")
    for field in _REQUIRED_TEXT:
        if not isinstance(raw[field], str):
            raise BadRecordError(name, f"{field} is not a string: {raw[field]!r}")
    image = raw["image"]
    if not image or Path(image).is_absolute() or ".." in Path(image).parts:
        raise BadRecordError(name, f"image {image!r} is not a path inside photos/")
    mask_data = raw["mask_data"]
    if not isinstance(mask_data, dict):
        raise BadRecordError(name, "mask_data is not an object")
    masks: dict[int, Mask] = {}
    for key, mask in mask_data.items():
        try:
            number = int(key)
        except ValueError:
            number = None
        if number is None or str(number) != key:
            raise BadRecordError(name, f"mask_data key {key!r} is not an integer id")
        masks[number] = parse_mask(number, mask, image=name)
    mask_keys = raw.get("mask_keys")
    if mask_keys is None:  # never read by the reference; default to mask_data's own keys
        mask_keys = list(mask_data)
    if not isinstance(mask_keys, list):
        raise BadRecordError(name, "mask_keys is not a list")
    return DCIRecord(
        name=name,
        image=image,
        short_caption=raw["short_caption"],
        extra_caption=raw["extra_caption"],
        masks=masks,
        mask_keys=tuple(str(k) for k in mask_keys),
        summaries=_summaries(name, raw.get("summaries")),
        negatives=_negatives(name, raw.get("negatives")),
        clip_scores=_clip_scores(name, raw.get("clip_scores")),
    )


def _summaries(name: str, raw: object) -> dict[str, str | list[str]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRecordError(name, "summaries is not an object")
    for key, value in raw.items():
        # An empty list is checked where an entry needs it: only that makes the reference fail.
        if not isinstance(value, str) and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise BadRecordError(
                name, f"summaries[{key!r}] is neither a string nor a list of strings"
            )
    return raw


def _negatives(name: str, raw: object) -> dict[str, dict[str, list[str]]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRecordError(name, "negatives is not an object")
    for key, kinds in raw.items():
        if not isinstance(kinds, dict):
            raise BadRecordError(name, f"negatives[{key!r}] is not an object of kind -> list")
        for kind, texts in kinds.items():
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise BadRecordError(name, f"negatives[{key!r}][{kind!r}] is not a list of strings")
    return raw


def _clip_scores(name: str, raw: object) -> dict[str, dict[str, float]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRecordError(name, "clip_scores is not an object")
    for key, scores in raw.items():
        if not isinstance(scores, dict):
            raise BadRecordError(name, f"clip_scores[{key!r}] is not an object of key -> score")
        for cand, score in scores.items():
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise BadRecordError(name, f"clip_scores[{key!r}][{cand!r}] is not a number")
    return raw


def _no_header(label: str, size: int) -> bytes:
    return b""


def _record_header(label: str, size: int) -> bytes:
    split, _, name = label.partition("/")
    return json.dumps([split, name, size]).encode("utf-8")
