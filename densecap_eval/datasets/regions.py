"""Image regions: a photo on disk plus an optional crop box, decoded only when needed.

Decoding follows the DCI reference exactly (Pillow, pixels as stored, no EXIF rotation): other
decoders differ by a grey level here and there and can flip close calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in stored pixels, right/bottom exclusive, already clamped."""


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle of a photo. ``box=None`` means the whole photo."""

    photo: str
    box: Box | None = None

    @property
    def key(self) -> str:
        """Stable identity of the region (used for de-duplication and cache keys)."""
        return self.photo if self.box is None else f"{self.photo}#{','.join(map(str, self.box))}"


def open_photo(path: str | Path) -> Image.Image:
    """Decode a photo the way the reference does, converted to RGB for the model processors."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB") if img.mode != "RGB" else img.copy()


def crop(photo: Image.Image, box: Box | None) -> Image.Image:
    """Crop exactly like numpy slicing ``array[top:bottom, left:right]`` of the reference."""
    if box is None:
        return photo
    return photo.crop(box)


def grey_like(image: Image.Image) -> Image.Image:
    """The blind control: a uniform mid-grey image of the same size."""
    return Image.new("RGB", image.size, (128, 128, 128))
