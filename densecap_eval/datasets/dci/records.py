"""Typed records of the DCI release (see docs/protocols/dci.md, "The release")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from densecap_eval.datasets.regions import Region

NegativeSource = Literal["swaps", "layout", "basic", "any"]
NegativeStrategy = Literal["first", "rand", "hardest"]
NEGATIVE_KINDS: tuple[str, ...] = ("swaps", "layout", "basic")


@dataclass(frozen=True, slots=True)
class Bounds:
    """A mask's bounding box in stored pixels, as written in the record (not clamped)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True, slots=True)
class Mask:
    """One annotated mask; ``outer_mask`` stays base64 until `decode_mask` is asked for."""

    idx: int
    label: str
    caption: str
    quality: int  # 0 ok, 1 low quality (label only), 2 unusable
    parent: int
    children: tuple[int, ...]  # the record's `requirements`
    area: int
    bounds: Bounds
    outer_mask: str = field(repr=False, default="")
    # Why the reference could not use this mask's bounds (non-numeric, or non-integer on a mask
    # large enough to be cropped), or None. Only matters when subcrops are loaded: the reference
    # reads every mask's bounds to select subcrops and drops the image when that raises.
    bounds_error: str | None = None

    @property
    def text(self) -> str | None:
        """The mask's contribution to a long caption (None for unusable masks)."""
        if self.quality == 2:
            return None
        if self.quality == 1:
            return self.label
        return f"{self.label}: {self.caption}"


@dataclass(frozen=True, slots=True)
class DCIRecord:
    """One parsed complete/<name>.json. Holds no pixels: photos are opened when entries are built."""

    name: str  # file name in complete/ (the identity used in splits.json and in skip reports)
    image: str  # photo path relative to photos/
    short_caption: str
    extra_caption: str
    masks: dict[int, Mask]  # keyed by the mask_data key, in mask_data order
    mask_keys: tuple[str, ...]  # the record's `mask_keys` (mask_data keys when absent)
    summaries: dict[str, str | list[str]] | None
    negatives: dict[str, dict[str, list[str]]] | None
    clip_scores: dict[str, dict[str, float]] | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One scorable entry of an image: the whole photo (``base``) or a mask subcrop (``m-{idx}-sc``)."""

    image: str  # the record's file name in complete/ (the photo's identity for clustering)
    key: str
    region: Region
    long_caption: str  # the DCI (un-summarised) caption
    summaries: tuple[str, ...]  # the caption bag; summaries[0] is the sDCI caption
    summary_is_list: bool  # the reference keeps a bag only when the summary is a list
    negatives: Mapping[str, tuple[str, ...]]  # kind -> candidates, in the record's key order
    clip_scores: Mapping[str, float]

    @property
    def caption(self) -> str:
        return self.summaries[0]


@dataclass(frozen=True, slots=True)
class Example:
    """An entry prepared for one subtest: the positive bag and the chosen negative."""

    entry: Entry
    positives: tuple[str, ...]  # 1 caption, or the first N summaries for bag subtests
    negative: str
    negative_key: str  # which candidate was chosen, e.g. "swaps_0"


@dataclass(frozen=True, slots=True)
class SubtestSpec:
    """A DCI subtest declared as data (which entries, which negatives, which bag)."""

    name: str
    include_subcrops: bool
    negative_source: NegativeSource
    negative_strategy: NegativeStrategy
    bag_size: int  # 0: the first summary only; N > 0: entries with >= N summaries, first N


SUBTESTS: dict[str, SubtestSpec] = {
    s.name: s
    for s in (
        SubtestSpec("all_swaps", True, "swaps", "first", 0),
        SubtestSpec("all_swaps_pick5", True, "swaps", "first", 5),
        SubtestSpec("base_swaps", False, "swaps", "first", 0),
        SubtestSpec("all_hardest", True, "any", "hardest", 0),
    )
}
