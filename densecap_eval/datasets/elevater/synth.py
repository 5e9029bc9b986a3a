"""A tiny synthetic ELEVATER release in the real on-disk layout (tests and offline demos).

For each chosen dataset it writes, under ``root/<root_folder>/``, exactly the test files
ELEVATER reads: the index (iris lines ``zip@member labels`` or a COCO manifest with image ids out
of file order), the label map (iris) and the zip(s) of photos. The photos vary on purpose:
non-square, smaller than 224 px, grey (L), palette (P), RGBA, and a JPEG whose EXIF orientation
says "rotate". Multilabel sets (VOC) leave one class without positives; single-label sets leave
the last class out of the test labels. Same seed, same bytes.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from densecap_eval.datasets.elevater import catalog, layout

MODES: tuple[str, ...] = ("RGB", "L", "P", "RGBA", "RGB-EXIF", "RGB")
ZIP_TIME = (2021, 10, 7, 0, 0, 0)  # fixed member timestamps: same seed, same bytes


def _photo(rng: random.Random, i: int, mode: str) -> tuple[bytes, str]:
    """One small photo (PNG, or JPEG with EXIF orientation 6) and its file extension."""
    w, h = (rng.randint(40, 300), rng.randint(30, 200)) if i % 2 else (64, 48)
    img = Image.new("RGB", (w, h), tuple(rng.randint(0, 255) for _ in range(3)))
    for _ in range(4):  # a few blocks, so photos differ in more than a colour
        x, y = rng.randint(0, w - 2), rng.randint(0, h - 2)
        block = Image.new("RGB", (max(1, w // 3), max(1, h // 3)),
                          tuple(rng.randint(0, 255) for _ in range(3)))  # fmt: skip
        img.paste(block, (x, y))
    buf = io.BytesIO()
    if mode == "RGB-EXIF":
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
        return buf.getvalue(), "jpg"
    if mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue(), "png"


def _labels(spec: catalog.ElevaterSpec, i: int, rng: random.Random) -> list[int]:
    n = len(spec.classes)
    if spec.multilabel:  # class 0 never positive; one or two of the others
        first = 1 + i % (n - 1)
        extra = 1 + rng.randrange(n - 1)
        return sorted({first, extra})
    usable = max(1, n - 1) if n > 2 else n  # the last class absent (when there are > 2)
    return [i % usable]


def _write_zip(path: Path, members: Sequence[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_TIME), data)


def write_dataset(root: Path, key: str, *, images: int = 6, seed: int = 0) -> Path:
    """Write one dataset's test split; returns its folder."""
    spec = catalog.spec(key)
    rng = random.Random(f"{seed}/{key}")
    folder = layout.dataset_dir(root, spec)
    folder.mkdir(parents=True, exist_ok=True)
    zip_name = spec.test_files[0]
    members: list[tuple[str, bytes]] = []
    rows: list[tuple[str, list[int]]] = []
    for i in range(max(2, images)):
        data, ext = _photo(rng, i, MODES[i % len(MODES)])
        member = f"test/{i:03d}.{ext}"
        members.append((member, data))
        rows.append((member, _labels(spec, i, rng)))
    _write_zip(folder / zip_name, members)
    if spec.format == "coco":
        ids = list(range(1, len(rows) + 1))
        rng.shuffle(ids)  # ids out of file order: ELEVATER sorts by id
        manifest = {
            "images": [{"id": ids[i], "file_name": m, "zip_file": zip_name}
                       for i, (m, _) in enumerate(rows)],
            "annotations": [{"id": k + 1, "image_id": ids[i], "category_id": lab + 1}
                            for k, (i, lab) in enumerate((i, labs[0])
                                                         for i, (_, labs) in enumerate(rows))],
            "categories": [{"id": c + 1, "name": name} for c, name in enumerate(spec.classes)],
        }  # fmt: skip
        (folder / spec.test_index).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    else:
        lines = [f"{zip_name}@{m} {','.join(map(str, labs))}" for m, labs in rows]
        (folder / spec.test_index).write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert spec.labelmap is not None
        # The release's own names (ELEVATER prompts with the catalog's, not these).
        names = [c.replace(" ", "_") for c in spec.classes]
        (folder / spec.labelmap).write_text("\n".join(names) + "\n", encoding="utf-8")
    return folder


def write_release(
    root: str | Path, *, keys: Sequence[str] | None = None, images: int = 6, seed: int = 0
) -> list[str]:
    """Write the synthetic release of ``keys`` (default: all 20) under ``root``."""
    root = Path(root)
    chosen = list(keys) if keys is not None else list(catalog.dataset_keys())
    for key in chosen:
        write_dataset(root, key, images=images, seed=seed)
    return chosen


def write_wds_copy(elevater_root: Path, key: str, wds_root: Path, *, shards: int = 2) -> Path:
    """The same photos as ELEVATER's ``key`` under ``elevater_root``, written in CLIP_benchmark's
    ``wds`` layout (`densecap_eval.datasets.elevater.wds`) under ``wds_root``: each zip member's
    bytes as stored, ELEVATER's class names and templates (``{}`` as ``{c}``), ``cls`` for a
    single-label set, a 0/1 ``npy`` vector and ``dataset_type.txt`` = multilabel for VOC. Both
    protocols then score the same images; returns the folder."""
    import numpy as np

    from densecap_eval.datasets.elevater.wds import folder_name

    spec = catalog.spec(key)
    samples = layout.read_samples(elevater_root, spec, lambda exc: None)
    folder = wds_root / folder_name(key)
    (folder / "test").mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("\n".join(spec.classes) + "\n", encoding="utf-8")
    templates = "\n".join(t.replace("{}", "{c}") for t in spec.templates) + "\n"
    (folder / "zeroshot_classification_templates.txt").write_text(templates, encoding="utf-8")
    if spec.multilabel:
        (folder / "dataset_type.txt").write_text("multilabel\n", encoding="utf-8")
    (folder / "test" / "nshards.txt").write_text(f"{shards}\n", encoding="utf-8")
    zips = {name: zipfile.ZipFile(layout.dataset_dir(elevater_root, spec) / name)
            for name in spec.test_files}  # fmt: skip
    for shard in range(shards):
        parts: list[tuple[str, bytes]] = []
        for i in range(shard, len(samples), shards):
            s = samples[i]
            ext = s.member.rsplit(".", 1)[-1].lower()
            parts.append((f"s{i:05d}.{ext}", zips[s.zip_name].read(s.member)))
            if spec.multilabel:
                vector = np.zeros(len(spec.classes), dtype=np.float64)
                vector[list(s.labels)] = 1.0
                buf = io.BytesIO()
                np.save(buf, vector)
                parts.append((f"s{i:05d}.npy", buf.getvalue()))
            else:
                parts.append((f"s{i:05d}.cls", str(s.labels[0]).encode()))
        _write_tar(folder / "test" / f"{shard}.tar", parts)
    for archive in zips.values():
        archive.close()
    return folder


def _write_tar(path: Path, members: Sequence[tuple[str, bytes]]) -> None:
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1633564800  # fixed: same seed, same bytes
            tar.addfile(info, io.BytesIO(data))
