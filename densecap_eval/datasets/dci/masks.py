"""DCI masks: parse one `mask_data` entry, and decode its base64 PNG on demand.

Parsing follows what the reference reads and when (see docs/protocols/dci.md, "The release"):
bounds are only looked at to select and crop subcrops, so odd bounds are recorded on the mask
(`Mask.bounds_error`) instead of failing the whole record; they make an image bad only when
subcrops are loaded.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from densecap_eval.core.errors import BadRecordError
from densecap_eval.datasets.dci.records import Bounds, Mask

SUBCROP_MIN_SIZE = 224
"""A mask is a subcrop when its raw bounds are at least this wide AND this high."""

_NO_BOUNDS = Bounds(0, 0, 0, 0)


def _is_int(value: object) -> bool:
    # bool is an int in Python and the reference would compute with it; accept it the same way.
    return isinstance(value, int)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float)


def _int_or_zero(value: float) -> int:
    return int(value) if math.isfinite(value) else 0


def parse_bounds(raw: object) -> tuple[Bounds, str | None]:
    """Read ``{"topLeft": {"x","y"}, "bottomRight": {"x","y"}}``; returns (bounds, problem or None).

    Integer bounds are kept as written (inverted or outside the photo included: that only matters
    for a selected subcrop). Non-numeric bounds make the reference raise while selecting
    subcrops; non-integer numbers only when the mask is large enough to be cropped (numpy refuses
    float slice indices). A harmless non-integer mask keeps truncated bounds that stay below the
    subcrop size, so selection sees it exactly as the reference does.
    """
    try:
        top_left, bottom_right = raw["topLeft"], raw["bottomRight"]  # type: ignore[index]
        values = (top_left["x"], top_left["y"], bottom_right["x"], bottom_right["y"])
    except (KeyError, TypeError, IndexError):
        return _NO_BOUNDS, "bounds missing or malformed (need topLeft/bottomRight with x and y)"
    if all(_is_int(v) for v in values):
        return Bounds(*(int(v) for v in values)), None
    if not all(_is_number(v) for v in values):
        return _NO_BOUNDS, f"non-numeric bounds {list(values)!r}"
    left, top, right, bottom = (float(v) for v in values)
    width, height = right - left, bottom - top
    if width >= SUBCROP_MIN_SIZE and height >= SUBCROP_MIN_SIZE:
        return _NO_BOUNDS, f"non-integer bounds {list(values)!r} on a subcrop-sized mask"
    x, y = _int_or_zero(left), _int_or_zero(top)
    # int() truncates towards zero, so a width/height below 224 stays below 224.
    w = _int_or_zero(width) if not math.isnan(width) else 0
    h = _int_or_zero(height) if not math.isnan(height) else 0
    return Bounds(x, y, x + w, y + h), None


def _child_id(value: object) -> int | None:
    """A `requirements` item as a mask_data key; None when it can name no key (the reference skips it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            return None
        # The reference looks children up with str(item): only the canonical spelling matches.
        return number if str(number) == value else None
    return None


def parse_mask(key: int, raw: object, *, image: str) -> Mask:
    """Parse ``mask_data[str(key)]`` of record ``image``; raises BadRecordError on a malformed mask."""
    if not isinstance(raw, Mapping):
        raise BadRecordError(image, f"mask_data[{key!r}] is not an object")
    where = f"mask_data[{str(key)!r}]"
    missing = [
        f for f in ("idx", "mask_quality", "label", "caption", "requirements") if f not in raw
    ]
    if missing:
        raise BadRecordError(image, f"{where} is missing {', '.join(missing)}")
    fields: dict[str, Any] = dict(raw)
    for name in ("idx", "mask_quality"):
        if not _is_int(fields[name]):
            raise BadRecordError(image, f"{where}.{name} is not an integer: {fields[name]!r}")
    for name in ("label", "caption"):
        if not isinstance(fields[name], str):
            raise BadRecordError(image, f"{where}.{name} is not a string: {fields[name]!r}")
    requirements = fields["requirements"]
    if not isinstance(requirements, list):
        raise BadRecordError(image, f"{where}.requirements is not a list")
    children = tuple(c for c in (_child_id(r) for r in requirements) if c is not None)
    parent = fields.get("parent", -1)
    area = fields.get("area", 0)
    outer = fields.get("outer_mask", "")
    bounds, bounds_error = parse_bounds(fields.get("bounds"))
    return Mask(
        idx=int(fields["idx"]),
        label=fields["label"],
        caption=fields["caption"],
        quality=int(fields["mask_quality"]),
        parent=int(parent) if _is_int(parent) else -1,
        children=children,
        area=int(area) if _is_number(area) and math.isfinite(area) else 0,
        bounds=bounds,
        outer_mask=outer if isinstance(outer, str) else "",
        bounds_error=bounds_error,
    )


def decode_mask(mask: Mask, *, image: str = "<record>") -> np.ndarray:
    """The mask's pixels as a (height, width) bool array (True inside), decoded now."""
    if not mask.outer_mask:
        raise BadRecordError(image, f"mask {mask.idx} has no outer_mask")
    try:
        data = base64.b64decode(mask.outer_mask)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            grey = img.convert("L")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRecordError(
            image, f"mask {mask.idx}: outer_mask is not a base64 PNG ({exc})"
        ) from exc
    return np.asarray(grey) > 0
