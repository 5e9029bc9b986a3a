"""Checking that a photo decodes, without holding its pixels (shared by every dataset)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from densecap_eval.core.errors import BadRecordError


def pixel_limit() -> int:
    """The most pixels a photo (or a crop) may have: Pillow's decompression-bomb limit."""
    return int(Image.MAX_IMAGE_PIXELS or 0) or 2**62


def photo_size(path: Path, *, image: str) -> tuple[int, int]:
    """(width, height) from the photo's header, after checking the file decodes completely.

    The reference decodes every photo in full and drops the image when Pillow fails. To find
    those photos without holding pixels: a JPEG is decoded at 1/8 scale (Pillow's draft mode
    still reads every byte, so truncation is caught); a PNG is CRC-checked with verify() and
    then decoded (its CRCs can be right around a stream that does not inflate).
    The outcome is remembered per (path, mtime, size), so the four subtests check a photo once.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BadRecordError(image, f"photo {path} not found") from None
    except OSError as exc:
        raise BadRecordError(image, f"photo {path} cannot be read ({exc})") from None
    outcome = _probe(str(path), stat.st_mtime_ns, stat.st_size)
    if isinstance(outcome, str):
        raise BadRecordError(image, outcome)
    return outcome


@functools.lru_cache(maxsize=16384)
def _probe(path: str, mtime_ns: int, size: int) -> tuple[int, int] | str:
    """The photo's (width, height), or why the reference could not decode it."""
    del mtime_ns  # part of the cache key only
    if size == 0:
        return f"photo {path} is an empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            width, height = img.size
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
                img.load()
            elif img.format == "PNG":
                img.verify()  # the CRCs; a stream with good CRCs can still fail to inflate
            else:
                img.load()
        if img.format == "PNG":  # verify() leaves the image unusable: open it again to decode
            with Image.open(path) as again:
                again.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return (
            f"photo {path} is too large to decode safely ({exc}); over the "
            f"{pixel_limit()}-pixel decompression-bomb limit"
        )
    except UnidentifiedImageError:
        return f"photo {path} is not an image Pillow can read"
    except IsADirectoryError:
        return f"photo {path} is a folder, not a file"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"photo {path} is truncated or corrupt ({exc})"
    return width, height


def check_image_bytes(data: bytes, *, image: str, where: str) -> tuple[int, int]:
    """(width, height) of an image held in memory (embedded in a table, a zip member) after
    decoding it in full, with the same limits as `photo_size`; `BadRecordError` for ``image``
    naming ``where`` (its place in the release, never a cache copy) when it cannot be used."""
    import io

    if not data:
        raise BadRecordError(image, f"{where} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            img.load()
            return img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadRecordError(
            image, f"{where} is too large to decode safely ({exc}); over the "
            f"{pixel_limit()}-pixel decompression-bomb limit",
        ) from None  # fmt: skip
    except UnidentifiedImageError:
        raise BadRecordError(image, f"{where} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRecordError(image, f"{where} is truncated or corrupt ({exc})") from None
