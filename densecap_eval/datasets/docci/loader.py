"""Read the DOCCI release: ``<root>/docci_descriptions.jsonlines`` and ``<root>/images/``.

The layout is the published one (https://storage.googleapis.com/docci/data/): the descriptions
file holds one JSON object a line, ``{"example_id", "split", "image_file", "description"}``;
``docci_images.tar.gz`` extracts to ``images/<image_file>``. Records whose split starts with
``aar`` (none in the published descriptions; the AAR photos are unannotated) would take their
photo from ``images_aar/`` (``docci_images_aar.tar.gz``). Splits are the ``split`` values in
order of first appearance (train, test, qual_dev, qual_test in the release); records come in
file order. The description is given exactly as stored: ``docci/retrieval`` uses the 5,000
``test`` records with it unchanged.

The file is scanned once when the dataset is opened (split names, and whether it is JSON Lines
at all); records are parsed again, one line at a time, when iterated, so memory stays flat. A
bad line (invalid JSON, a missing field, an empty description) is skipped loudly with its line
number, or raises under ``strict``. No photo is opened here.

`download` fetches what the release serves without an account, checked against a sha256 (see
its doc).

Bad input (docs/data.md, one policy for every family): the descriptions file missing, empty or
with no JSON object on any line is `DatasetError` (exit 1); a line that is not UTF-8, not JSON or
not an object, a field missing or not text, an empty description, an ``example_id`` listed twice
(compared after Unicode NFC) or an ``image_file`` that is not a plain file name is one bad record,
skipped and named (``line N`` or the id); photos are checked by the task; BOM and CRLF are read.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.archives import extract_safely, replace_path
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    fetch_source,
    how_to_get,
    install_file,
    staging,
    url_file_name,
)
from densecap_eval.datasets.guards import (
    SeenIds,
    check_json_lines,
    iter_json_lines,
    plain_file_name,
)
from densecap_eval.datasets.records import ImageRecord, Text

logger = logging.getLogger(__name__)

DESCRIPTIONS_FILE = "docci_descriptions.jsonlines"
METADATA_FILE = "docci_metadata.jsonlines"
IMAGES_DIR = "images"
AAR_IMAGES_DIR = "images_aar"

RELEASE_URL = "https://storage.googleapis.com/docci/data"
DESCRIPTIONS_URL = f"{RELEASE_URL}/{DESCRIPTIONS_FILE}"
IMAGES_URL = f"{RELEASE_URL}/docci_images.tar.gz"  # 7.1 GB, extracts to images/
AAR_IMAGES_URL = f"{RELEASE_URL}/docci_images_aar.tar.gz"  # 3.6 GB, extracts to images_aar/

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_JSONL_SUFFIXES = (".jsonlines", ".jsonl")
_FIELDS = ("example_id", "split", "image_file", "description")


# --- the dataset ------------------------------------------------------------------------------


class DOCCIDataset(DatasetBase):
    """The DOCCI release under ``root`` (the folder holding docci_descriptions.jsonlines)."""

    name = "docci"
    title = "DOCCI"

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        return (
            f"{super().how_to_get(root)} (or from {DESCRIPTIONS_URL}); the photos go in "
            f"{root / IMAGES_DIR}/ (docci_images.tar.gz, 7.1 GB, {IMAGES_URL})"
        )

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        self.annotations = self.root / DESCRIPTIONS_FILE
        if not self.annotations.is_file():
            raise DatasetError(f"{self.annotations} not found; {self.how_to_get(self.root)}")
        names: dict[str, None] = {}
        for value in check_json_lines(self.annotations, hint=self.how_to_get(self.root)):
            split = value.get("split")
            if isinstance(split, str) and split:
                names.setdefault(split)
        if not names:
            raise DatasetError(
                f"{self.annotations} has no record with a `split`: is it DOCCI's "
                f"{DESCRIPTIONS_FILE}? {self.how_to_get(self.root)}"
            )
        self._splits = list(names)

    def splits(self) -> list[str]:
        """Split names in order of first appearance in the descriptions file."""
        return list(self._splits)

    def splits_source(self) -> Path:
        return self.annotations

    def photo_dir(self, split: str) -> Path:
        return self.root / (AAR_IMAGES_DIR if split.startswith("aar") else IMAGES_DIR)

    def fingerprint_extra(self, splits: Sequence[str]) -> object:
        """The split names (one file holds every split)."""
        return ["docci", sorted(set(splits))]

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """The descriptions file (photos are not read)."""
        return [FingerprintFile(DESCRIPTIONS_FILE, self.annotations)]

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Records of ``split`` (every split when None) in file order; see the module doc."""
        wanted = [split] if split is not None else self.splits()
        for name in wanted:
            self.check_split(name)
        for folder in dict.fromkeys(self.photo_dir(name) for name in wanted):
            if not folder.is_dir():
                source = AAR_IMAGES_URL if folder.name == AAR_IMAGES_DIR else IMAGES_URL
                raise DatasetError(
                    f"{folder} not found: the DOCCI photos are {posixpath.basename(source)} "
                    f"({source}); extract it into {self.root} (it holds {folder.name}/), e.g. "
                    f"`densecap-eval download docci --root {self.root} --url {source} "
                    "--sha256 HEX`"
                )
        return self._iter(set(wanted))

    def _iter(self, wanted: set[str]) -> Iterator[ImageRecord]:
        lines = (
            (f"{DESCRIPTIONS_FILE} line {number}", (number, value, problem))
            for number, value, problem in iter_json_lines(self.annotations)
            if value is None or _split_of(value) in wanted or _split_of(value) is None
        )  # another split's record is not checked here
        return self.iter_parsed(
            lines, lambda line: self._parse(*line), ids=SeenIds("example_id"), key=_record_id
        )

    def _parse(
        self, number: int, raw: Mapping[str, Any] | None, problem: str | None
    ) -> ImageRecord:
        if raw is None:
            line = f"line {number}"
            raise BadRecordError(line, f"{DESCRIPTIONS_FILE} {line}: {problem}")
        example_id = raw.get("example_id")
        image = example_id if isinstance(example_id, str) and example_id else f"line {number}"
        where = f"{DESCRIPTIONS_FILE} line {number}"
        missing = [f for f in _FIELDS if f not in raw]
        if missing:
            raise BadRecordError(image, f"{where}: missing field(s) {', '.join(missing)}")
        for field in _FIELDS:
            if not isinstance(raw[field], str):
                raise BadRecordError(image, f"{where}: {field} is not a string: {raw[field]!r}")
        if not example_id or not raw["split"]:
            raise BadRecordError(image, f"{where}: empty example_id or split")
        if not plain_file_name(raw["image_file"]):
            raise BadRecordError(
                image, f"{where}: image_file {raw['image_file']!r} is not a file name"
            )
        description = raw["description"]
        if not description.strip():
            raise BadRecordError(image, f"{where}: empty description")
        split = raw["split"]
        return ImageRecord(
            id=image,
            image=self.photo_dir(split) / raw["image_file"],
            texts=(Text(description, role="description", kind="caption"),),
            split=split,
            meta={"line": number},
        )


def _split_of(value: Mapping[str, Any]) -> str | None:
    """A line's split when it names one (None: the record is checked, and refused, whole)."""
    split = value.get("split")
    return split if isinstance(split, str) and split else None


def _record_id(record: ImageRecord) -> str:
    return record.id


# --- download ---------------------------------------------------------------------------------

# Google's bucket publishes only md5/crc32c (no sha256) and none was verified here, so none is
# pinned: every DOCCI download needs --sha256. A value added here must come from the actual
# file, never from pooch printing what it downloaded.
_NO_SHA256 = (
    "the DOCCI release publishes none: pass the checksum of that file from a copy you trust"
)
SOURCES: dict[str, Source] = {
    "descriptions": Source(DESCRIPTIONS_FILE, DESCRIPTIONS_URL, "file", size="10.5 MB",
                           check=_NO_SHA256),
    "images": Source("docci_images.tar.gz", IMAGES_URL, "tar", install=IMAGES_DIR,
                     size="7.1 GB", check=_NO_SHA256),
    "aar_images": Source("docci_images_aar.tar.gz", AAR_IMAGES_URL, "tar",
                         install=AAR_IMAGES_DIR, size="3.6 GB", check=_NO_SHA256),
}  # fmt: skip


def _source_of(url: str) -> Source:
    """The declared source a URL fetches (by its file name; a mirror keeps the release's
    names): a ``.jsonlines`` file or a ``.tar.gz`` of photos."""
    fname = url_file_name(url)
    by_name = {s.name: s for s in SOURCES.values()}
    if fname in by_name:
        return replace(by_name[fname], url=url)
    if fname.endswith(_ARCHIVE_SUFFIXES):
        return replace(SOURCES["images"], name=fname, url=url)
    if fname.endswith(_JSONL_SUFFIXES):
        return replace(SOURCES["descriptions"], name=fname, url=url)
    raise DownloadError(f"{url}: expected a .jsonlines file or a .tar.gz of photos, not {fname!r}")


def download(
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch one DOCCI file into ``root`` with its sha256 checked; returns what was fetched and
    what is left to do by hand.

    ``url`` defaults to the descriptions file; a ``.jsonlines`` file is put in ``root`` under
    its release name, a ``.tar.gz`` (``docci_images.tar.gz``, ``docci_images_aar.tar.gz``) is
    extracted safely and its ``images/`` / ``images_aar/`` folder installed in ``root``. No
    sha256 is pinned for the release (`SOURCES`), so ``sha256`` is required: a bad checksum
    deletes the download and installs nothing. Downloads stay in ``root/.downloads/``.
    """
    root = Path(root).expanduser()
    source = _source_of(url or DESCRIPTIONS_URL)
    fetched = fetch_source(source, root, sha256=sha256, progress=progress)
    if source.kind == "tar":
        done = _install_photos(fetched, root)
    else:
        target = METADATA_FILE if source.name == METADATA_FILE else DESCRIPTIONS_FILE
        install_file(fetched, root / target)
        done = f"fetched {source.name} into {root / target}"
    logger.info("%s", done)
    todo = _still_to_do(root)
    if not todo:
        return DownloadMessage("\n".join([done, f"{root} is ready for docci/retrieval"]))
    return DownloadMessage(done, "\n".join(["still to do by hand:", *todo]))


def _install_photos(archive: Path, root: Path) -> str:
    """Extract a photo archive and move its ``images/`` / ``images_aar/`` into ``root``."""
    with staging(root) as content:
        extract_safely(archive, content)
        installed = [d for d in (IMAGES_DIR, AAR_IMAGES_DIR) if (content / d).is_dir()]
        if not installed:
            raise DownloadError(
                f"{archive.name} holds no {IMAGES_DIR}/ or {AAR_IMAGES_DIR}/ folder: is it "
                "docci_images.tar.gz?"
            )
        for folder in installed:
            replace_path(content / folder, root / folder)
    what = " and ".join(f"{root / d}/" for d in installed)
    return f"extracted {archive.name} into {what} (the archive stays in {archive.parent}/)"


def _still_to_do(root: Path) -> list[str]:
    """The manual steps left for a DOCCI root (empty when it is complete for docci/retrieval)."""
    steps: list[str] = []
    if not (root / DESCRIPTIONS_FILE).is_file():
        steps.append(
            f"- the descriptions: {how_to_get('docci', root, what='them', options=' --sha256 HEX')}"
            f" ({DESCRIPTIONS_URL}, 10.5 MB)"
        )
    if not (root / IMAGES_DIR).is_dir():
        steps.append(
            f"- the photos (not fetched by default: 7.1 GB, public, no account): "
            f"`densecap-eval download docci --root {root} --url {IMAGES_URL} --sha256 HEX`, or "
            f"fetch it yourself and run `tar -xzf docci_images.tar.gz -C {root}` "
            f"(gives {root / IMAGES_DIR}/)"
        )
    return steps
