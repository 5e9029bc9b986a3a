"""What the loaders that read Hugging Face tables share: its cache folder, its quiet mode, and
embedded images written once, by content, so the engine opens them by path.

The embedding cache keys an image by its content, so a content-addressed copy under
``<cache>/files-images/`` serves every dataset (``files``, Winoground) that stores images inside
its table.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError

IMAGES_DIR = "files-images"  # under the densecap cache dir: embedded images, by content
HF_CACHE_DIR = "hf-datasets"  # under the densecap cache dir: Hugging Face's arrow copies
_IMAGE_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}


def image_parts(value: Any) -> tuple[bytes | None, str | None] | None:
    """A table cell holding an image as (embedded bytes, stored path): a datasets ``Image``
    feature left undecoded (``{"bytes", "path"}``), raw bytes, or a path string; None for a
    value of any other type (the caller says what it expected)."""
    if isinstance(value, Mapping):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str):
        return None, value
    return None if value is not None else (None, None)


def materialise_image(name: str, data: bytes, stored: str | None) -> Path:
    """Write embedded image bytes once to the content-addressed images folder; its path."""
    from PIL import Image, UnidentifiedImageError

    from densecap_eval.core.paths import default_cache_dir

    what = f"embedded image {stored}" if stored else "embedded image"
    try:
        with Image.open(io.BytesIO(data)) as img:  # the header only: which format
            fmt = img.format or ""
    except UnidentifiedImageError:
        raise BadRecordError(name, f"{what} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRecordError(name, f"{what} cannot be read ({exc})") from None
    suffix = _IMAGE_SUFFIX.get(fmt) or (Path(stored).suffix.lower() if stored else "") or ".img"
    folder = default_cache_dir() / IMAGES_DIR
    target = folder / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # atomic: concurrent writers write the same bytes
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Hugging Face's progress bars and info logs off while loading, then as they were."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors become ours
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()
