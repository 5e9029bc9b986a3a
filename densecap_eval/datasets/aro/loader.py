"""Read ARO's Visual Genome sets (VG-Relation, VG-Attribution) in their released layout.

ARO (mertyg/vision-language-models-are-bows, ``dataset_zoo/aro_datasets.py``) keeps, in one
root folder:

- ``visual_genome_relation.json`` (split ``relation``) and ``visual_genome_attribution.json``
  (split ``attribution``): each a JSON list of test cases with ``image_path`` (relative to
  ``images/``), ``bbox_x``, ``bbox_y``, ``bbox_w``, ``bbox_h``, ``true_caption``,
  ``false_caption`` and ``relation_name`` (VG-R) or ``attributes`` (VG-A, two strings). Other
  keys are ignored;
- ``images/``: the photos, from ``vgr_vga_images.zip``.

The splits are the JSON files present. `items` yields the typed test cases (`VGItem`) the tasks
need; `records` yields neutral records (one per test case, the crop as its one region).

The crop. ARO does ``Image.open(p).convert('RGB').crop((x, y, x + w, y + h))`` with the JSON
values as they are. Pillow's ``crop`` refuses a box whose right < left or bottom < top, then
rounds each of the four numbers with Python's ``round`` (half to even) and crops; a box reaching
outside the photo is padded with black. `pil_box` computes the same integer box (sums first,
then ``round``), and the engine crops with Pillow too, so the pixels are the same. Integer
boxes (the released files) are unchanged.

Bad test cases, which ARO would crash on (or score as an empty crop): not a JSON object; a
missing or non-string ``image_path``, or one that leaves ``images/``; a bbox value that is
missing, not a number or not finite, a negative width/height, or a box that rounds to no pixel;
a missing, non-string or blank caption; a missing ``relation_name`` (VG-R) or ``attributes``
that are not two strings (VG-A). Each is skipped loudly, named by its file and index (or raised
under ``strict``). A missing or undecodable photo is skipped the same way by `items` when asked
to check photos (the tasks do).

The files live on Google Drive (gdown ids below): `download` prints the exact steps and fetches
only from a mirror named with ``--url`` and ``--sha256``.

Bad input (docs/data.md): besides the cases above, a box whose crop is over Pillow's pixel
limit (`photos.pixel_limit`) is a bad case (cropping it would allocate the whole box); a BOM is
read; the JSON file unreadable as a list of cases is `DatasetError` (exit 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.archives import extract_safely, find_extracted, replace_path
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    fetch_source,
    staging,
    url_and_sha256,
    url_file_name,
)
from densecap_eval.datasets.photos import pixel_limit
from densecap_eval.datasets.records import ImageRecord, RegionText, Text
from densecap_eval.datasets.regions import Box

RELATION = "relation"
ATTRIBUTION = "attribution"
ANNOTATION_FILES: dict[str, str] = {
    RELATION: "visual_genome_relation.json",
    ATTRIBUTION: "visual_genome_attribution.json",
}
IMAGES_DIR = "images"
IMAGES_ZIP = "vgr_vga_images.zip"

# Google Drive file ids, as ARO's dataset_zoo/aro_datasets.py passes them to gdown.
GDRIVE_IDS: dict[str, str] = {
    ANNOTATION_FILES[RELATION]: "1kX2iCHEv0CADL8dSO1nMdW-V0NqIAiP3",
    ANNOTATION_FILES[ATTRIBUTION]: "13tWvOrNOLHxl3Rm9cR3geAdHx2qR3-Tw",
    IMAGES_ZIP: "1qaPlrwhGNMrR3a11iopZUT_GPP_LrgP9",
}
SOURCES: dict[str, Source] = {
    name: Source(
        name,
        f"https://drive.google.com/uc?id={file_id}",
        "gdrive",
        install=IMAGES_DIR if name == IMAGES_ZIP else "",
    )
    for name, file_id in GDRIVE_IDS.items()
}
BBOX_KEYS: tuple[str, str, str, str] = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


def drive_link(file_id: str) -> str:
    return f"https://drive.google.com/uc?id={file_id}"


def pil_box(x: float, y: float, w: float, h: float) -> Box:
    """The integer box Pillow crops for ARO's ``crop((x, y, x + w, y + h))`` (module doc)."""
    return (round(x), round(y), round(x + w), round(y + h))


@dataclass(frozen=True, slots=True)
class VGItem:
    """One ARO VG test case, checked (module doc)."""

    split: str  # "relation" or "attribution"
    index: int  # position in the JSON list
    image: str  # ``image_path`` as stored (relative to images/): the photo's identity
    path: Path  # the photo on disk
    bbox: tuple[float, float, float, float]  # x, y, w, h as stored
    true_caption: str
    false_caption: str
    relation_name: str | None = None  # VG-R
    attributes: tuple[str, str] | None = None  # VG-A: the first two, in stored order

    @property
    def key(self) -> str:
        """Unique within the dataset: ``<split>#<index>``."""
        return f"{self.split}#{self.index}"

    @property
    def box(self) -> Box:
        """(left, top, right, bottom) as Pillow crops it for ARO (`pil_box`)."""
        return pil_box(*self.bbox)

    @property
    def group(self) -> str:
        """What ARO averages over: the relation name, or ``f"{a[0]}_{a[1]}"``."""
        if self.attributes is not None:
            return f"{self.attributes[0]}_{self.attributes[1]}"
        return self.relation_name or ""


class AROVGDataset(DatasetBase):
    """ARO's VG-Relation / VG-Attribution under ``root`` (module doc)."""

    name = "aro-vg"
    title = "ARO VG"

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        return f"`densecap-eval download aro-vg --root {root}` prints the gdown steps"

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        self.image_dir = self.root / IMAGES_DIR
        if not self.image_dir.is_dir():
            raise DatasetError(
                f"{self.image_dir} not found: ARO VG needs images/ (from {IMAGES_ZIP}); "
                f"{self.how_to_get(self.root)}"
            )
        self._splits = [s for s, f in ANNOTATION_FILES.items() if (self.root / f).is_file()]
        if not self._splits:
            raise DatasetError(
                f"{self.root} holds neither {' nor '.join(ANNOTATION_FILES.values())}; "
                f"{self.how_to_get(self.root)}"
            )
        self._raw: dict[str, list[Any]] = {}

    # --- splits -------------------------------------------------------------------------------

    def splits(self) -> list[str]:
        """The splits whose JSON is present, relation first."""
        return list(self._splits)

    def known_splits(self) -> list[str]:
        return list(ANNOTATION_FILES)

    def annotation_path(self, split: str) -> Path:
        """The JSON of ``split``; DatasetError (with the gdown step) when it is absent."""
        self.check_split(split)
        path = self.root / ANNOTATION_FILES[split]
        if split not in self._splits:
            name = ANNOTATION_FILES[split]
            raise DatasetError(
                f"{path} not found (ARO VG split {split!r}): `gdown {GDRIVE_IDS[name]} -O "
                f"{path}`; {self.how_to_get(self.root)}"
            )
        return path

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """Each split's JSON (a few MB each), in the order asked; photos are not read."""
        paths = [self.annotation_path(split) for split in splits]
        return [FingerprintFile(path.name, path) for path in paths]

    def _load(self, split: str) -> list[Any]:
        if split not in self._raw:
            path = self.annotation_path(split)
            try:
                with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is harmless
                    data = json.load(f)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise DatasetError(f"cannot read {path} as JSON: {exc}") from None
            if not isinstance(data, list):
                raise DatasetError(
                    f"{path} is not a JSON list of test cases (top level is {type(data).__name__})"
                )
            self._raw[split] = data
        return self._raw[split]

    # --- items --------------------------------------------------------------------------------

    def skip_where(self, error: BadRecordError) -> str:
        split, _, index = error.image.partition("#")
        return f"{self.root / ANNOTATION_FILES.get(split, split)}[{index}]"

    def items(self, split: str, *, check_photos: bool = False) -> Iterator[VGItem]:
        """The checked test cases of ``split`` in file order; a bad one is skipped loudly (or
        raised under strict). ``check_photos``: also skip cases whose photo is missing or does
        not decode (`photo_size`: decoded once per photo)."""
        from densecap_eval.datasets.photos import photo_size

        def parse(case: tuple[int, Any]) -> VGItem:
            item = self.parse(split, *case)
            if check_photos:
                photo_size(item.path, image=item.key)
            return item

        cases = enumerate(self._load(split))
        return self.iter_parsed(((f"{split}#{i}", (i, raw)) for i, raw in cases), parse)

    def parse(self, split: str, index: int, raw: Any) -> VGItem:
        """One JSON test case as a `VGItem`; BadRecordError (named ``split#index``) if unusable."""
        key = f"{split}#{index}"
        if not isinstance(raw, dict):
            raise BadRecordError(key, f"is a JSON {type(raw).__name__}, not an object")
        image = _image_path(key, raw)
        x, y, w, h = _bbox(key, raw)
        true_caption, false_caption = _captions(key, raw)
        relation, attributes = _group(key, split, raw)
        return VGItem(
            split,
            index,
            image,
            self.image_dir / image,
            (x, y, w, h),
            true_caption,
            false_caption,
            relation_name=relation,
            attributes=attributes,
        )

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """One record per test case (id ``<split>#<index>``), photos not checked: the crop is
        its one region, holding the true caption (positive) and the false one (negative)."""
        for name in [split] if split is not None else self.splits():
            for item in self.items(name):
                texts = (
                    Text(item.true_caption, role="positive", kind="true_caption"),
                    Text(item.false_caption, role="negative", kind="false_caption"),
                )
                yield ImageRecord(
                    item.key,
                    item.path,
                    (),
                    split=name,
                    regions=(RegionText(item.box, texts, key=str(item.index)),),
                    meta={"image_path": item.image, "group": item.group, "bbox": item.bbox},
                )


# --- one test case -----------------------------------------------------------------------------


def _image_path(key: str, raw: dict[str, Any]) -> str:
    image = raw.get("image_path")
    if not isinstance(image, str) or not image.strip():
        raise BadRecordError(key, "has no image_path string")
    parts = PurePosixPath(image.replace("\\", "/")).parts
    if image.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise BadRecordError(key, f"image_path {image!r} leaves images/")
    return image


def _bbox(key: str, raw: dict[str, Any]) -> tuple[float, float, float, float]:
    """The four bbox values, checked to crop at least one pixel and stay under the bomb limit."""
    bbox: list[float] = []
    for name in BBOX_KEYS:
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRecordError(key, f"{name} is {value!r}, not a number")
        if not math.isfinite(value):
            raise BadRecordError(key, f"{name} is {value!r}, not a finite number")
        bbox.append(value)
    x, y, w, h = bbox
    if w < 0 or h < 0:  # Pillow raises: right < left or bottom < top
        raise BadRecordError(key, f"bbox width/height ({w}, {h}) is negative")
    left, top, right, bottom = pil_box(x, y, w, h)
    if right <= left or bottom <= top:
        raise BadRecordError(key, f"bbox (x={x}, y={y}, w={w}, h={h}) crops no pixel")
    if (right - left) * (bottom - top) > pixel_limit():  # the crop would be a bomb
        raise BadRecordError(
            key,
            f"bbox (x={x}, y={y}, w={w}, h={h}) crops {right - left}x{bottom - top} pixels, "
            f"over the {pixel_limit()}-pixel decompression-bomb limit",
        )
    return x, y, w, h


def _captions(key: str, raw: dict[str, Any]) -> tuple[str, str]:
    captions = []
    for name in ("true_caption", "false_caption"):
        text = raw.get(name)
        if not isinstance(text, str) or not text.strip():
            raise BadRecordError(key, f"{name} is {text!r}, not a non-blank string")
        captions.append(text)
    return captions[0], captions[1]


def _group(key: str, split: str, raw: dict[str, Any]) -> tuple[str | None, tuple[str, str] | None]:
    """(relation_name, None) for VG-R, (None, the first two attributes) for VG-A."""
    if split == RELATION:
        relation = raw.get("relation_name")
        if not isinstance(relation, str):
            raise BadRecordError(key, f"relation_name is {relation!r}, not a string")
        return relation, None
    attrs = raw.get("attributes")
    if (
        not isinstance(attrs, list)
        or len(attrs) < 2
        or not all(isinstance(a, str) for a in attrs[:2])
    ):
        raise BadRecordError(key, f"attributes is {attrs!r}, not a list of two strings")
    return None, (attrs[0], attrs[1])


# --- download ---------------------------------------------------------------------------------


def gdown_steps(root: Path) -> str:
    """What to run by hand to fetch ARO's VG files (Google Drive, via gdown) into ``root``."""
    lines = ["ARO VG is on Google Drive (ids from ARO's dataset_zoo/aro_datasets.py):",
             "  pip install gdown", f"  mkdir -p {root}"]  # fmt: skip
    for name in ANNOTATION_FILES.values():
        state = "  # present" if (root / name).is_file() else ""
        lines.append(f"  gdown {GDRIVE_IDS[name]} -O {root / name}{state}")
    state = "  # images/ present" if (root / IMAGES_DIR).is_dir() else ""
    lines.append(
        f"  gdown {GDRIVE_IDS[IMAGES_ZIP]} -O {root / IMAGES_ZIP} && "
        f"unzip {root / IMAGES_ZIP} -d {root}{state}"
    )
    lines.append(f"({IMAGES_ZIP} is ~1 GB and unzips to {root / IMAGES_DIR}/.) In a browser:")
    lines += [f"  {name}: {drive_link(file_id)}" for name, file_id in GDRIVE_IDS.items()]
    lines.append(
        "Or fetch a mirror: densecap-eval download aro-vg --root DIR --url URL --sha256 HEX "
        f"(URL ending in {IMAGES_ZIP} or a .tar/.zip holding images/, or one of the JSONs)."
    )
    return "\n".join(lines)


def download(
    root: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """ARO VG's downloader. Without ``url``: fetches nothing and returns the gdown steps (the
    files are on Google Drive, no plain URL). With ``url`` and ``sha256`` (a mirror): one file,
    by its name: ``visual_genome_relation.json`` / ``visual_genome_attribution.json`` are saved
    into ``root``; any other name is an archive (zip or tar) holding ``images/`` (and maybe the
    JSONs), extracted safely and moved into ``root``."""
    root = Path(root).expanduser()
    url_and_sha256(url, sha256, pinned="ARO VG has no plain download to check")
    if url is None:
        return DownloadMessage(
            "nothing downloaded: ARO VG's files are on Google Drive (fetch them with gdown)",
            gdown_steps(root),
        )
    fname = url_file_name(url)
    mirror = Source(fname, url, "file" if fname in ANNOTATION_FILES.values() else "zip")
    if mirror.kind == "file":
        path = fetch_source(mirror, root, sha256=sha256, progress=progress, downloads=root)
        return DownloadMessage(f"{fname} saved to {path}", _still_missing(root))
    archive = fetch_source(mirror, root, sha256=sha256, progress=progress)
    with staging(root) as content:
        extract_safely(archive, content)
        base = find_extracted(content, lambda folder: (folder / IMAGES_DIR).is_dir())
        if base is None:
            raise DownloadError(
                f"{archive.name} holds no {IMAGES_DIR}/ folder: is it {IMAGES_ZIP}?"
            )
        done = []
        for name in (IMAGES_DIR, *ANNOTATION_FILES.values()):
            if (base / name).exists():
                replace_path(base / name, root / name)
                done.append(name)
    return DownloadMessage(
        f"{archive.name} extracted into {root}: {', '.join(done)}", _still_missing(root)
    )


def _still_missing(root: Path) -> str:
    missing = [n for n in ANNOTATION_FILES.values() if not (root / n).is_file()]
    if not (root / IMAGES_DIR).is_dir():
        missing.append(f"{IMAGES_DIR}/")
    if not missing:
        return ""
    return f"still missing in {root}: {', '.join(missing)}\n{gdown_steps(root)}"
