"""Photos inside ELEVATER's zips, decoded as ELEVATER decodes them, kept as plain PNG files.

ELEVATER reads a member with Pillow, applies its EXIF orientation, then converts it to RGB
(grey, palette and RGBA photos included). The engine decodes photos from files, as stored; so
each member is decoded here once, that way, and written losslessly (PNG) to the cache, where
the engine's decoding reads back exactly these pixels (an RGB JPEG or PNG with nothing to rotate
is copied as it is: it already decodes to them). A dataset without the centre crop
(kitti-distance) is also resized here to ELEVATER's 224 x 224 square (bicubic, the aspect
squashed), the size ELEVATER feeds the model; a model's own Resize + CenterCrop then leaves a
224 x 224 photo as it is.

The cache file is named by the zip's identity (absolute path, size, mtime) and the member, so a
re-downloaded zip is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from densecap_eval.core.errors import BadRecordError, DatasetError

ELEVATER_SIZE = 224  # TRAIN.IMAGE_SIZE of ELEVATER's default config


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decode_member(
    data: bytes, *, image: str, square: int | None = None
) -> tuple[Image.Image, bool]:
    """Bytes of a photo -> ELEVATER's RGB image (EXIF orientation, then RGB; squashed to
    ``square`` when given), and whether the stored bytes already decode to exactly that (an RGB
    JPEG or PNG with no orientation to apply, not resized): those are kept as they are.
    `BadRecordError` naming ``image`` when the photo cannot be used."""
    if not data:
        raise BadRecordError(image, "is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                oriented = img.getexif().get(0x0112, 1) not in (1, None)
                as_stored = img.format in ("JPEG", "PNG") and img.mode == "RGB" and not oriented
                out = ImageOps.exif_transpose(img)
                out = out.convert("RGB") if out.mode != "RGB" else out.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadRecordError(image, f"is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise BadRecordError(image, "is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRecordError(image, f"is truncated or corrupt ({exc})") from None
    if square is not None:
        out = out.resize((square, square), Image.Resampling.BICUBIC)
        as_stored = False
    return out, as_stored


class ZipPhotos:
    """The members of one dataset's zips, materialised on demand as PNG files in ``cache``."""

    def __init__(self, folder: Path, cache: Path, *, square: int | None) -> None:
        self.folder = folder
        self.cache = cache
        self.square = square
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._dirs: dict[str, Path] = {}

    def _open(self, zip_name: str) -> tuple[zipfile.ZipFile, Path]:
        if zip_name not in self._zips:
            path = self.folder / zip_name
            try:
                stat = path.stat()
                archive = zipfile.ZipFile(path)
            except FileNotFoundError:
                raise DatasetError(f"{path} is missing") from None
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(
                    f"{path} is not a readable zip ({exc}); re-download it"
                ) from None
            ident = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.square}"
            self._zips[zip_name] = archive
            self._dirs[zip_name] = self.cache / "elevater-photos" / _sha(ident)[:24]
        return self._zips[zip_name], self._dirs[zip_name]

    def photo(self, zip_name: str, member: str, *, image: str) -> Path:
        """The PNG file of ``zip_name@member`` (written on first use)."""
        archive, folder = self._open(zip_name)
        name = _sha(member)[:32]
        for done in (folder / f"{name}.png", folder / f"{name}.stored"):
            if done.is_file():
                return done
        try:
            data = archive.read(member)
        except KeyError:
            raise BadRecordError(image, f"{member} is not in {self.folder / zip_name}") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BadRecordError(
                image, f"{member} cannot be read from {zip_name} ({exc})"
            ) from None
        img, as_stored = decode_member(data, image=image, square=self.square)
        # Bytes that already decode to ELEVATER's pixels are copied, the others written as PNG
        # (lossless); Pillow reads either by content, whatever the suffix.
        target = folder / (f"{name}.stored" if as_stored else f"{name}.png")
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                if as_stored:
                    fh.write(data)
                else:
                    img.save(fh, format="PNG", compress_level=1)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()
