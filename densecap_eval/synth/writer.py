"""Write a synthetic set in the DCI release layout, one image at a time (memory stays flat).

```
OUT/densely_captioned_images/splits.json
OUT/densely_captioned_images/complete/<name>.json
OUT/densely_captioned_images/photos/<name>.jpg
```
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densecap_eval.core.errors import DensecapError
from densecap_eval.datasets.dci.layout import PHOTOS_DIR, RECORDS_DIR, RELEASE_DIR, SPLITS_FILE
from densecap_eval.synth.records import build_record, scene_for

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
DEFAULT_JPEG_QUALITY = 90


class SynthError(DensecapError):
    """Bad generator arguments or an output folder that cannot be written."""


@dataclass(frozen=True, slots=True)
class SynthResult:
    """What `generate_dci` wrote."""

    root: Path  # OUT (pass it as --data-root / --root)
    splits: dict[str, int]  # images per split
    bytes_written: int
    photos: bool


def default_split_sizes(images: int) -> tuple[int, int, int]:
    """80% train / 10% valid / 10% test, rounded half up, at least one test image."""
    test = max(1, int(images * 0.1 + 0.5)) if images >= 1 else 0
    valid = min(int(images * 0.1 + 0.5), images - test)
    return (images - test - valid, valid, test)


def _check(
    images: int, split_sizes: Sequence[int] | None, width: int, height: int, jpeg_quality: int
) -> tuple[int, int, int]:
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise SynthError(f"--images must be a whole number >= 1, got {images!r}")
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise SynthError(
            f"photo size must be between 64 and 4096 pixels a side, got {width}x{height}"
        )
    if not 1 <= jpeg_quality <= 95:
        raise SynthError(f"JPEG quality must be between 1 and 95, got {jpeg_quality}")
    if split_sizes is None:
        return default_split_sizes(images)
    sizes = tuple(int(s) for s in split_sizes)
    if len(sizes) != 3 or any(s < 0 for s in sizes):
        raise SynthError(
            f"split sizes must be three numbers >= 0 (train,valid,test), got {list(split_sizes)}"
        )
    if sum(sizes) != images:
        raise SynthError(
            f"split sizes {sizes[0]},{sizes[1]},{sizes[2]} add up to {sum(sizes)}, not --images {images}"
        )
    return (sizes[0], sizes[1], sizes[2])


def _prepare(out: Path, *, overwrite: bool) -> Path:
    release = out / RELEASE_DIR
    try:
        if release.exists():
            if not overwrite:
                raise SynthError(
                    f"{release} already exists; pass --overwrite or choose another folder"
                )
            if not (release / SPLITS_FILE).is_file() and any(release.iterdir()):
                raise SynthError(
                    f"{release} exists and holds no splits.json; refusing to delete it"
                )
            shutil.rmtree(release)
        (release / RECORDS_DIR).mkdir(parents=True)
        (release / PHOTOS_DIR).mkdir()
    except SynthError:
        raise
    except OSError as exc:
        raise SynthError(f"{out}: cannot write there ({exc.strerror or exc})") from exc
    return release


def generate_dci(
    out: str | os.PathLike[str],
    *,
    images: int,
    seed: int = 0,
    split_sizes: Sequence[int] | None = None,
    width: int = 640,
    height: int = 480,
    photos: bool = True,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    overwrite: bool = False,
    prefix: str = "synth",
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Generate ``images`` synthetic DCI records (and photos) under ``out``.

    Same arguments, same bytes. ``photos=False`` skips the JPEGs (records still name them), for
    cheap record-only sets such as memory benchmarks. Images are assigned to splits by a seeded
    shuffle; each split lists its file names in index order.
    """
    sizes = _check(images, split_sizes, width, height, jpeg_quality)
    release = _prepare(Path(out), overwrite=overwrite)
    digits = max(6, len(str(images - 1)))
    # Which split each image index belongs to: a seeded shuffle of the split labels.
    labels = np.repeat(np.arange(3, dtype=np.int8), sizes)
    labels = labels[np.random.default_rng([seed, 2**31 - 1]).permutation(images)]
    members: dict[str, list[str]] = {name: [] for name in SPLITS}
    written = 0
    try:
        for index in range(images):
            stem = f"{prefix}_{index:0{digits}d}"
            photo = f"{stem}.jpg"
            scene = scene_for(seed, index, width=width, height=height)
            if photos:
                path = release / PHOTOS_DIR / photo
                scene.image.save(path, format="JPEG", quality=jpeg_quality, optimize=False)
                written += path.stat().st_size
            record = build_record(scene, photo=photo, seed=seed, index=index)
            data = json.dumps(record, ensure_ascii=False).encode("utf-8")
            (release / RECORDS_DIR / f"{stem}.json").write_bytes(data)
            written += len(data)
            members[SPLITS[int(labels[index])]].append(f"{stem}.json")
            if progress is not None:
                progress(index + 1, images)
        splits = json.dumps(members, indent=1).encode("utf-8")
        (release / SPLITS_FILE).write_bytes(splits)
    except OSError as exc:
        raise SynthError(f"{release}: write failed ({exc.strerror or exc})") from exc
    written += len(splits)
    log.info("wrote %d synthetic images to %s", images, release)
    return SynthResult(Path(out), {k: len(v) for k, v in members.items()}, written, photos)
