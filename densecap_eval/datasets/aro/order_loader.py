"""Read ARO's COCO-Order and Flickr30k-Order sources (the Karpathy test splits), and fetch them.

Layout (ARO's ``COCO_Order`` / ``Flickr30k_Order``): the data root holds the annotation JSON,
``coco_karpathy_test.json`` or ``flickr30k_test.json`` (a list of records ``{"image":
"val2014/COCO_val2014_....jpg", "caption": [...]}``), and the photos at each record's
``image`` path under the root: ``val2014/`` (COCO 2014 validation) or ``flickr30k-images/``.

One split, ``test``. Each caption of a record is one test case (the options are built by
`densecap_eval.datasets.aro.order_tasks`). `annotations` lists every usable record in file order
(the shuffles draw in this order, whatever photos are present); `records` yields those whose
photo file exists. A record that is not ``{"image": str, "caption": [str, ...]}``, whose path
leaves the root, or that repeats an image is skipped loudly (named, counted in ``skipped``),
as is a missing photo; under ``strict`` each stops the run. ARO would crash on the first.

`download_coco` / `download_flickr30k` fetch the JSON (the URLs ARO and BLIP use, pooch with
a sha256) and say how to get the photos: COCO's val2014 zip, Flickr30k's by request.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import DownloadMessage, Source, fetch_source, install_file
from densecap_eval.datasets.guards import SeenIds
from densecap_eval.datasets.records import ImageRecord, Text

SPLIT = "test"
_BASE_URL = "https://storage.googleapis.com/sfr-vision-language-research/datasets"
COCO_JSON = "coco_karpathy_test.json"
FLICKR_JSON = "flickr30k_test.json"
COCO_JSON_URL = f"{_BASE_URL}/{COCO_JSON}"
FLICKR_JSON_URL = f"{_BASE_URL}/{FLICKR_JSON}"
# For the COCO file, Salesforce LAVIS's dataset config
# (lavis/configs/datasets/coco/defaults_cap.yaml) lists this md5, to check a copy against.
COCO_JSON_MD5_LAVIS = "3ff34b0ef2db02d01c37399f6a2a6cd1"
COCO_IMAGES_URL = "http://images.cocodataset.org/zips/val2014.zip"
FLICKR_REQUEST_URL = "https://forms.illinois.edu/sec/229675"  # as ARO's Flickr30k_Order names it

# No sha256 is published for either JSON and none was pinned from a verified copy, so
# `download_*` needs --sha256.
SOURCES: dict[str, Source] = {
    COCO_JSON: Source(
        COCO_JSON,
        COCO_JSON_URL,
        "file",
        check=(
            f"no sha256 is published; Salesforce LAVIS lists md5 {COCO_JSON_MD5_LAVIS} for this "
            "file, to check a copy before taking its sha256"
        ),
    ),
    FLICKR_JSON: Source(
        FLICKR_JSON,
        FLICKR_JSON_URL,
        "file",
        check="no sha256 or md5 is published; take the sha256 of a copy you trust",
    ),
    "val2014": Source("val2014.zip", COCO_IMAGES_URL, "manual", install="val2014", size="6 GB"),
    "flickr30k-images": Source(
        "flickr30k-images", FLICKR_REQUEST_URL, "manual", install="flickr30k-images"
    ),
}


@dataclass(frozen=True)
class OrderRecord:
    """One usable record of the annotation JSON: its position, photo path (relative to the
    root, as stored) and captions (as stored, unchanged)."""

    index: int
    image: str
    captions: tuple[str, ...]


class _OrderDataset(DatasetBase):
    json_name: ClassVar[str] = ""
    image_dir: ClassVar[str] = ""  # where the photos of the published JSON live
    images_how: ClassVar[str] = ""  # how to get them, for messages

    declared_splits = (SPLIT,)

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        self.annotation_file = self.root / self.json_name
        if not self.annotation_file.is_file():
            raise DatasetError(
                f"{self.title}: {self.annotation_file} not found; {self.how_to_get(self.root)}"
            )
        self._records = self._read()

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        return (
            f"{super().how_to_get(root)}; the photos go under {root}/{cls.image_dir}/ "
            f"({cls.images_how})"
        )

    def _read(self) -> list[OrderRecord]:
        try:
            data = json.loads(self.annotation_file.read_bytes())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DatasetError(f"{self.annotation_file} is not readable JSON: {exc}") from None
        if not isinstance(data, list):
            raise DatasetError(
                f"{self.annotation_file}: expected a list of records, got {type(data).__name__}"
            )
        return list(
            self.iter_parsed(
                ((f"record {index}", (index, item)) for index, item in enumerate(data)),
                lambda pair: self._parse(*pair),
                ids=SeenIds("image"),
                key=lambda record: record.image,
                image=lambda record: f"record {record.index} ({record.image})",
            )
        )

    def _parse(self, index: int, item: Any) -> OrderRecord:
        name = f"record {index}"
        if not isinstance(item, dict):
            raise BadRecordError(name, f"not an object but {type(item).__name__}")
        image, captions = item.get("image"), item.get("caption")
        if not isinstance(image, str) or not image.strip():
            raise BadRecordError(name, "no 'image' path")
        name = f"record {index} ({image})"
        normal = posixpath.normpath(image.replace("\\", "/"))
        if posixpath.isabs(normal) or normal == ".." or normal.startswith("../"):
            raise BadRecordError(name, "its image path leaves the data root")
        if not isinstance(captions, list) or not captions:
            raise BadRecordError(name, "'caption' is not a non-empty list")
        if not all(isinstance(c, str) for c in captions):
            raise BadRecordError(name, "'caption' holds something that is not a string")
        return OrderRecord(index, image, tuple(captions))

    def skip_where(self, error: BadRecordError) -> str:
        return f"{self.annotation_file}: {error.image}"

    # --- the Dataset protocol -----------------------------------------------------------------

    def annotations(self) -> list[OrderRecord]:
        """Every usable record, in file order (bad ones were skipped when the file was read)."""
        return list(self._records)

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """One record per photo present on disk (id: the stored ``image`` path); a missing
        photo is skipped loudly."""
        self.check_split(split)
        for rec in self._records:
            path = self.root / rec.image
            if not path.is_file():
                self.skip(BadRecordError(rec.image, f"photo {path} not found"))
                continue
            yield ImageRecord(
                rec.image,
                path,
                tuple(Text(c, role="description", kind="caption") for c in rec.captions),
                split=SPLIT,
                meta={"index": rec.index},
            )

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """The annotation JSON (photos are not read)."""
        return [FingerprintFile(self.json_name, self.annotation_file)]


class COCOOrderDataset(_OrderDataset):
    """ARO COCO-Order's source: ``coco_karpathy_test.json`` and ``val2014/`` under ``root``."""

    name = "aro-coco"
    title = "ARO COCO-Order"
    json_name = COCO_JSON
    image_dir = "val2014"
    images_how = f"unzip {COCO_IMAGES_URL} there"


class Flickr30kOrderDataset(_OrderDataset):
    """ARO Flickr30k-Order's source: ``flickr30k_test.json`` and ``flickr30k-images/``."""

    name = "aro-flickr30k"
    title = "ARO Flickr30k-Order"
    json_name = FLICKR_JSON
    image_dir = "flickr30k-images"
    images_how = f"Flickr30k's photos are given on request: {FLICKR_REQUEST_URL}"


# --- download ---------------------------------------------------------------------------------


def download_coco(
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch ``coco_karpathy_test.json`` into ``root`` (sha256 required: none is pinned) and
    say how to add the COCO 2014 validation photos."""
    root = Path(root).expanduser()
    target, count = _fetch_json(root, SOURCES[COCO_JSON], url, sha256, progress)
    return DownloadMessage(
        f"{COCO_JSON} saved to {target} ({count} photos listed)",
        f"COCO-Order also needs the COCO 2014 validation photos: download {COCO_IMAGES_URL} "
        f"(about 6 GB) and unzip it in {root}, so that {root}/val2014/COCO_val2014_*.jpg "
        f"exist; then evaluate aro/coco_order with --data-root {root}",
    )


def download_flickr30k(
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch ``flickr30k_test.json`` into ``root`` (sha256 required: none is pinned) and say
    how to request and place the Flickr30k photos."""
    root = Path(root).expanduser()
    target, count = _fetch_json(root, SOURCES[FLICKR_JSON], url, sha256, progress)
    return DownloadMessage(
        f"{FLICKR_JSON} saved to {target} ({count} photos listed)",
        f"Flickr30k-Order also needs the Flickr30k photos, given on request: fill in the form "
        f"at {FLICKR_REQUEST_URL}, then unpack flickr30k-images/ in {root}, so that "
        f"{root}/flickr30k-images/*.jpg exist; then evaluate aro/flickr30k_order with "
        f"--data-root {root}",
    )


def _fetch_json(
    root: Path, source: Source, url: str | None, sha256: str | None, progress: bool
) -> tuple[Path, int]:
    """Download the source (pooch, sha256 checked, kept under root's downloads folder), check
    it is a JSON list and put it at ``root/<name>`` atomically; returns (path, record count)."""
    fetched = fetch_source(source, root, url=url, sha256=sha256, progress=progress)
    try:
        data = json.loads(fetched.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DownloadError(f"{fetched} is not readable JSON: {exc}") from None
    if not isinstance(data, list):
        raise DownloadError(f"{fetched} is not a list of records: is it {source.name}?")
    return install_file(fetched, root / source.name), len(data)
