"""The neutral record types every dataset loader produces and every task family consumes.

A dataset is records of an image reference, texts with roles, optional regions and metadata:

- `ImageRecord`: one image (a file on disk: ``image``), its identity (``id``, unique within the
  dataset, the photo cluster for bootstrap intervals and paired tests), the split it belongs to,
  its `Text` items and its `RegionText` items.
- `Text`: a string with a role (``description``: a caption of the whole image; ``positive`` /
  ``negative``: a matching / non-matching caption for the negatives task family), a ``kind``
  that says which description or which edit it is (``caption``, ``full``, ``swap_color`` ...)
  and free metadata (a generated negative's edit position ...).
- `RegionText`: a box of the image with its own texts (DCI masks, users' boxes).
- `SkippedImage`: an image left out, with the reason (named, counted, recorded in results).

A loader module registers a class with ``splits()``, ``records(split)``, ``skipped`` and
``fingerprint(splits)`` (the `Dataset` protocol). DCI's subtests additionally read DCI's own
richer records (masks, summaries, stored negatives) through the DCI loader.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from densecap_eval.core.errors import BadRecordError
from densecap_eval.datasets.regions import Box

TextRole = Literal["description", "positive", "negative"]
TEXT_ROLES: tuple[str, ...] = ("description", "positive", "negative")


@dataclass(frozen=True, slots=True)
class SkippedImage:
    """An image left out of a run, with the reason; reported in `inspect` and the run card."""

    image: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"image": self.image, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Text:
    """A text of an image with its role; ``kind`` names which one (a description or an edit)."""

    text: str
    role: TextRole = "description"
    kind: str = "caption"
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RegionText:
    """A box of the image (stored pixels, (left, top, right, bottom), clamped) and its texts."""

    box: Box
    texts: tuple[Text, ...]
    key: str = ""  # stable name within the image (e.g. a mask index or a row number)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image of a dataset with its texts and regions (see the module doc)."""

    id: str
    image: Path
    texts: tuple[Text, ...]
    split: str | None = None
    regions: tuple[RegionText, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def texts_of(self, role: TextRole, kind: str | None = None) -> list[Text]:
        """This record's texts with ``role`` (and ``kind``, when given), in stored order."""
        return [t for t in self.texts if t.role == role and (kind is None or t.kind == kind)]

    def description(self, kind: str = "caption") -> str | None:
        """The first description of ``kind``, or None."""
        found = self.texts_of("description", kind)
        return found[0].text if found else None


class Dataset(Protocol):
    """What a registered dataset offers the task families and ``inspect``."""

    name: str
    root: Path
    skipped: list[SkippedImage]

    def splits(self) -> Mapping[str, Sequence[str]] | Sequence[str]:
        """The split names (a mapping's keys), in the release's order."""
        ...

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Records of ``split`` (every split when None), lazily, without decoding photos; a bad
        record is passed to `skip` (or raises under strict) and not yielded."""
        ...

    def skip(self, error: BadRecordError) -> SkippedImage:
        """Report one bad image: logged once, listed in ``skipped``; raises under strict."""
        ...

    def fingerprint(self, splits: Sequence[str]) -> str:
        """sha256 of what defines these splits' records (annotation bytes), cheap to compute."""
        ...
