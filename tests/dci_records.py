"""Hand-made DCI releases for tests, written in the real on-disk layout.

Build records with `make_mask` / `make_record` (plain dicts, exactly the JSON the release holds,
so a test can break any field), optionally fill in sDCI fields with `add_sdci`, then write
everything with `write_release`:

    rec = make_record("a.jpg", masks=[make_mask(1, label="dog", caption="brown",
                                                 bounds=(10, 10, 300, 300))])
    root = write_release(tmp_path, {"a.json": add_sdci(rec)}, photo_sizes={"a.jpg": (400, 300)})
    ds = DCIDataset(root)

Photos are real JPEG (or PNG) files written with Pillow; masks are real base64 PNGs. Nothing
here depends on densecap_eval, so tests can compare its output with hand-computed answers.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_SIZE = (640, 480)
SUBCROP_MIN = 224


def photo_image(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture (smooth gradients, so files stay small)."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(width - 1, 1) + seed * 37) % 256
    g = (y * 255 // max(height - 1, 1) + seed * 91) % 256
    b = ((x + y) * 3 + seed * 53) % 256
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8), "RGB")


def photo_bytes(width: int, height: int, *, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """The encoded bytes of `photo_image` in ``fmt`` (e.g. cut them to make a truncated photo)."""
    buf = io.BytesIO()
    photo_image(width, height, seed=seed).save(buf, format=fmt)
    return buf.getvalue()


def mask_png_b64(width: int, height: int, box: Sequence[int]) -> str:
    """A full-size binary mask (mode L, 255 inside ``box`` = (left, top, right, bottom)) as base64 PNG."""
    arr = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = (int(v) for v in box)
    arr[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = 255
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def bounds_dict(left: Any, top: Any, right: Any, bottom: Any) -> dict[str, Any]:
    """The release's bounds object (values passed through untouched, so tests can break them)."""
    return {"topLeft": {"x": left, "y": top}, "bottomRight": {"x": right, "y": bottom}}


def make_mask(
    idx: int,
    *,
    label: str = "",
    caption: str = "",
    quality: int = 0,
    parent: int = -1,
    children: Iterable[Any] = (),
    bounds: Sequence[Any] = (0, 0, 10, 10),
    photo_size: tuple[int, int] | None = DEFAULT_SIZE,
) -> dict[str, Any]:
    """One `mask_data` value. ``photo_size=None`` leaves outer_mask empty (faster, still valid JSON)."""
    try:
        left, top, right, bottom = (int(v) for v in bounds)
        area = max(right - left, 0) * max(bottom - top, 0)
    except (TypeError, ValueError):
        area = 0
    outer = (
        ""
        if photo_size is None or area == 0
        else mask_png_b64(*photo_size, (left, top, right, bottom))
    )
    return {
        "idx": idx,
        "outer_mask": outer,
        "mask_quality": quality,
        "label": label,
        "caption": caption,
        "parent": parent,
        "requirements": list(children),
        "area": area,
        "bounds": bounds_dict(*bounds),
    }


def make_record(
    image: str,
    *,
    short_caption: str = "A short caption.",
    extra_caption: str = "More words.",
    masks: Iterable[Mapping[str, Any]] = (),
    **fields: Any,
) -> dict[str, Any]:
    """One complete/<name>.json as a dict; ``fields`` adds summaries / negatives / clip_scores ..."""
    mask_list = list(masks)
    record: dict[str, Any] = {
        "image": image,
        "short_caption": short_caption,
        "extra_caption": extra_caption,
        "mask_data": {str(m["idx"]): dict(m) for m in mask_list},
        "mask_keys": [str(m["idx"]) for m in mask_list],
    }
    record.update(fields)
    return record


def subcrop_keys(record: Mapping[str, Any]) -> list[str]:
    """Entry keys of a record, as the reference derives them: "base", then "m-{idx}-sc" per mask
    whose raw bounds are >= 224 x 224, in mask_data order (integer bounds assumed)."""
    keys = ["base"]
    for mask in record["mask_data"].values():
        b = mask["bounds"]
        w = b["bottomRight"]["x"] - b["topLeft"]["x"]
        h = b["bottomRight"]["y"] - b["topLeft"]["y"]
        if w >= SUBCROP_MIN and h >= SUBCROP_MIN:
            keys.append(f"m-{mask['idx']}-sc")
    return keys


def negatives_for(key: str, *, n: int = 2) -> dict[str, list[str]]:
    """``n`` negatives of each kind, text ``"{key} {kind} {i}"``."""
    return {kind: [f"{key} {kind} {i}" for i in range(n)] for kind in ("swaps", "layout", "basic")}


def add_sdci(
    record: dict[str, Any], *, bags: Mapping[str, int] | None = None, n_negatives: int = 2
) -> dict[str, Any]:
    """Fill summaries, negatives and clip_scores for every entry key (see `subcrop_keys`).

    Summary of key k: the string ``"{k} summary"``, or, when ``bags[k] = n``, the list
    ``["{k} summary 0", ..., "{k} summary n-1"]``. clip_scores: "sum" = 30.0 and each negative
    ``{kind}_{i}`` = 20.0 + i (so the hardest is the last of the last kind). Returns ``record``.
    """
    bags = bags or {}
    summaries: dict[str, Any] = {}
    negatives: dict[str, Any] = {}
    scores: dict[str, Any] = {}
    for key in subcrop_keys(record):
        n = bags.get(key)
        summaries[key] = f"{key} summary" if n is None else [f"{key} summary {i}" for i in range(n)]
        negatives[key] = negatives_for(key, n=n_negatives)
        scores[key] = {"sum": 30.0} | {
            f"{kind}_{i}": 20.0 + i for kind in negatives[key] for i in range(n_negatives)
        }
    record.update(summaries=summaries, negatives=negatives, clip_scores=scores)
    return record


def write_release(
    root: Path,
    records: Mapping[str, Mapping[str, Any] | str | bytes | None],
    *,
    splits: Mapping[str, Sequence[str]] | None = None,
    photo_sizes: Mapping[str, tuple[int, int]] | None = None,
    photo_files: Mapping[str, bytes | None] | None = None,
    photo_format: str = "JPEG",
) -> Path:
    """Write ``root/densely_captioned_images/{splits.json, complete/, photos/}``; returns ``root``.

    records: file name -> record dict (written as JSON), str/bytes (written verbatim, e.g.
    invalid JSON) or None (listed in the splits but no file written). splits: defaults to
    ``{"test": [all names in order], "train": [], "valid": []}``. Every dict record's photo is
    written at ``photo_sizes[image]`` (default 640x480) unless ``photo_files[image]`` gives its
    bytes verbatim, or None for no file at all.
    """
    base = root / "densely_captioned_images"
    (base / "complete").mkdir(parents=True, exist_ok=True)
    (base / "photos").mkdir(parents=True, exist_ok=True)
    sizes = dict(photo_sizes or {})
    files = dict(photo_files or {})
    for seed, (name, record) in enumerate(records.items()):
        path = base / "complete" / name
        if record is None:
            continue
        if isinstance(record, bytes):
            path.write_bytes(record)
            continue
        if isinstance(record, str):
            path.write_text(record, encoding="utf-8")
            continue
        path.write_text(json.dumps(record), encoding="utf-8")
        image = record.get("image")
        if not isinstance(image, str) or not image:
            continue
        photo = base / "photos" / image
        photo.parent.mkdir(parents=True, exist_ok=True)
        if image in files:
            data = files[image]
            if data is not None:
                photo.write_bytes(data)
        elif not photo.exists():
            width, height = sizes.get(image, DEFAULT_SIZE)
            photo.write_bytes(photo_bytes(width, height, fmt=photo_format, seed=seed))
    split_map = (
        {"train": [], "valid": [], "test": list(records)} if splits is None else dict(splits)
    )
    (base / "splits.json").write_text(
        json.dumps({k: list(v) for k, v in split_map.items()}), encoding="utf-8"
    )
    return root


def scene_masks() -> list[dict[str, Any]]:
    """A worked example (photo 640 x 480; mask_data order 7, 1, 2, 3, 4, 5, 6, 8)::

    7 tree  q0  (400,   0, 640, 300)  240 x 300  subcrop
    1 dog   q0  ( 50, 100, 350, 400)  300 x 300  subcrop, children [2, 3, 99 (missing), 6]
    2 head  q0  small                             children [4]
    3 junk  q2  small                             children [5]  (unusable: 5 unreachable from 1)
    4 ear   q1  small (label only)
    5 nose  q0  small
    6 tail  q0  small
    8 sky   q2  (  0,   0, 640, 480)  640 x 480  subcrop (any quality is cropped)
    """
    return [
        make_mask(7, label="tree", caption="a tall oak", bounds=(400, 0, 640, 300)),
        make_mask(
            1,
            label="dog",
            caption="a brown dog",
            bounds=(50, 100, 350, 400),
            children=[2, 3, 99, 6],
        ),
        make_mask(
            2,
            label="head",
            caption="the dog's head",
            bounds=(60, 110, 160, 210),
            parent=1,
            children=[4],
        ),
        make_mask(3, label="junk", quality=2, bounds=(70, 300, 90, 320), parent=1, children=[5]),
        make_mask(4, label="ear", quality=1, bounds=(60, 110, 80, 130), parent=2),
        make_mask(5, label="nose", caption="wet", bounds=(72, 302, 80, 310), parent=3),
        make_mask(6, label="tail", caption="wagging", bounds=(300, 200, 340, 260), parent=1),
        make_mask(8, label="sky", caption="blue", quality=2, bounds=(0, 0, 640, 480)),
    ]


def scene_record(**bags: int) -> dict[str, Any]:
    """`scene_masks` as a record of photo "scene.jpg" with sDCI fields (`add_sdci`); ``bags``
    gives list summaries by entry key with "-" spelled "_" (``m_7_sc=7``)."""
    record = make_record(
        "scene.jpg",
        short_caption="A dog in a park.",
        extra_caption="It is sunny.",
        masks=scene_masks(),
    )
    return add_sdci(record, bags={k.replace("_", "-"): v for k, v in bags.items()})
