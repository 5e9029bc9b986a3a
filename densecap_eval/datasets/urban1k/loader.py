"""Read Urban1k (Long-CLIP's long-caption retrieval set) in its released layout, and fetch it.

The release is the Hugging Face dataset file ``BeichenZhang/Urban1k/Urban1k.zip`` (CC BY-NC
4.0). Unzipped it holds ``Urban1k/image/<n>.jpg`` and ``Urban1k/caption/<n>.txt``, n = 1..1000.
The data root is that ``Urban1k/`` folder (the one holding ``image/`` and ``caption/``) or its
parent; ``densecap-eval download urban1k --root DIR`` puts it at ``DIR/Urban1k/``.

One split, ``test``: every ``*.txt`` of ``caption/``; the photo is the caption file's stem plus
``.jpg`` in ``image/``, as in Long-CLIP's ``eval/retrieval/Urban1k.py`` (LoTLIP and TULIP read
it the same way). Each record's text is the caption file's whole content, decoded as UTF-8 and
otherwise unchanged (every line, line endings included): the tasks apply the peer's rule
(Long-CLIP: ``readlines()[0]``, the first line; LoTLIP: that line split and rejoined).

Order: the peers iterate ``os.listdir(caption/)``, whose order depends on the file system. Here
the records come sorted by the integer stem (1, 2, ..., 1000), then by name (stems that are not
integers last). R@k does not depend on the gallery order, except for queries whose true
candidate ties exactly with a wrong one under ``--ties first`` (the default rule,
``pessimistic``, never depends on order); the run's ``i2t_tied`` / ``t2i_tied`` count those.

A caption file that is empty, blank or not UTF-8 is a bad record: skipped loudly (named and
counted in ``skipped``), or raised under ``strict``. A missing or undecodable photo is skipped
by the task, which checks every photo before scoring.

Bad input (docs/data.md): a caption file that cannot be read (a symlink loop included) is one
bad record, never the end of the listing; two caption names equal after Unicode NFC keep the
first; a UTF-8 byte-order mark is dropped from the caption.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.archives import extract_zip_safely, find_extracted, replace_path
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    fetch_source,
    staging,
)
from densecap_eval.datasets.guards import SeenIds
from densecap_eval.datasets.records import ImageRecord, Text

logger = logging.getLogger(__name__)

RELEASE_DIR = "Urban1k"
IMAGE_DIR = "image"
CAPTION_DIR = "caption"
SPLIT = "test"

_HF = "https://huggingface.co/datasets/BeichenZhang/Urban1k"
SOURCES: dict[str, Source] = {
    # The published checksum was not available when this loader was written: nothing is
    # pinned, so `download` needs the user's --sha256 (Hugging Face shows it on the file's page).
    "release": Source(
        "Urban1k.zip",
        f"{_HF}/resolve/main/Urban1k.zip",
        "zip",
        install=RELEASE_DIR,
        check=f"the SHA256 shown under 'Git LFS Details' on {_HF}/blob/main/Urban1k.zip",
    ),
}


def caption_order(name: str) -> tuple[int, int, str]:
    """Sort key of a caption file name: integer stems in numeric order, then the rest by name."""
    stem = name[: -len(".txt")] if name.endswith(".txt") else name
    if stem.isascii() and stem.isdigit():
        return (0, int(stem), name)
    return (1, 0, name)


class Urban1kDataset(DatasetBase):
    """Urban1k under ``root``: the folder holding ``image/`` and ``caption/``, or its parent."""

    name = "urban1k"
    title = "Urban1k"
    declared_splits = (SPLIT,)

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        self.base = self._find_base(self.root)
        self.caption_dir = self.base / CAPTION_DIR
        self.image_dir = self.base / IMAGE_DIR
        if not self.image_dir.is_dir():
            raise DatasetError(
                f"{self.image_dir} not found: Urban1k needs image/ beside caption/; "
                f"{self.how_to_get(self.root)}"
            )
        self._names = self._caption_names()

    @classmethod
    def _find_base(cls, root: Path) -> Path:
        for base in (root, root / RELEASE_DIR):
            if (base / CAPTION_DIR).is_dir():
                return base
        raise DatasetError(
            f"{root / CAPTION_DIR} not found (nor {root / RELEASE_DIR / CAPTION_DIR}): the "
            f"Urban1k root must hold image/ and caption/, or Urban1k/ with them; "
            f"{cls.how_to_get(root)}"
        )

    def _caption_names(self) -> list[str]:
        try:
            names = [
                entry.name
                for entry in os.scandir(self.caption_dir)
                if entry.name.endswith(".txt") and not _is_dir(entry)
            ]
        except OSError as exc:
            raise DatasetError(
                f"cannot list {self.caption_dir}: {exc.strerror or exc}; {self.how_to_get(self.root)}"
            ) from None
        if not names:
            raise DatasetError(
                f"{self.caption_dir} holds no .txt caption file; {self.how_to_get(self.root)}"
            )
        return sorted(names, key=caption_order)

    def splits_source(self) -> Path:
        return self.base

    def caption_names(self) -> list[str]:
        """The caption file names, in the record order (module doc)."""
        return list(self._names)

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """Every caption file, by name, in record order; photos are not read (~1,000 small
        files: cheap)."""
        return [FingerprintFile(name, self.caption_dir / name) for name in self._names]

    # --- records ------------------------------------------------------------------------------

    def read_caption(self, name: str) -> str:
        """The caption file's whole text (UTF-8, unchanged); BadRecordError when unusable."""
        image = _image_name(name)
        path = self.caption_dir / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadRecordError(
                image, f"cannot read the caption file {name}: {exc.strerror or exc}"
            ) from None
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark is not part of the caption
        except UnicodeDecodeError as exc:
            raise BadRecordError(image, f"caption file {name} is not UTF-8 ({exc})") from None
        if not text.strip():
            raise BadRecordError(image, f"caption file {name} is empty")
        return text

    def skip_where(self, error: BadRecordError) -> str:
        return f"{self.caption_dir}: {error.image}"

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """One record per caption file (module doc), id = the photo's file name (``17.jpg``)."""
        self.check_split(split)
        return self.iter_parsed(
            ((name, name) for name in self._names),
            self._record,
            ids=SeenIds("caption file"),
            key=lambda record: record.meta["caption_file"],
            image=lambda record: record.id,
        )

    def _record(self, name: str) -> ImageRecord:
        image = _image_name(name)
        return ImageRecord(
            image,
            self.image_dir / image,
            (Text(self.read_caption(name), role="description", kind="caption"),),
            split=SPLIT,
            meta={"caption_file": name},
        )


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether a listed entry is a folder; one that cannot be checked (a symlink loop, a
    dangling link) counts as a file, so reading it makes it one bad record, not the listing's end."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _image_name(caption_name: str) -> str:
    """Long-CLIP's ``caption_name[:-4] + '.jpg'`` (every listed name ends with .txt)."""
    return caption_name[: -len(".txt")] + ".jpg"


# --- download ---------------------------------------------------------------------------------


def download(
    root: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch ``Urban1k.zip`` (pooch, sha256 checked) and extract it safely to ``root/Urban1k``.

    No checksum is pinned (`SOURCES`), so ``sha256`` is required; a mismatch deletes the
    download and extracts nothing. An existing ``root/Urban1k`` is replaced once the new one
    is complete. Returns what was done, for people.
    """
    root = Path(root).expanduser()
    archive = fetch_source(SOURCES["release"], root, url=url, sha256=sha256, progress=progress)
    target = root / RELEASE_DIR
    with staging(root) as content:
        extract_zip_safely(archive, content)
        release = find_extracted(content, _is_release, preferred=(RELEASE_DIR, "Urban-1k"))
        if release is None:
            raise DownloadError(
                f"{archive.name} holds no folder with {CAPTION_DIR}/ and {IMAGE_DIR}/: is it "
                "Urban1k.zip?"
            )
        replace_path(release, target)
    captions = sum(1 for p in (target / CAPTION_DIR).iterdir() if p.name.endswith(".txt"))
    images = sum(1 for p in (target / IMAGE_DIR).iterdir() if p.name.endswith(".jpg"))
    return DownloadMessage(  # nothing is left to do by hand: the zip holds the photos
        f"Urban1k extracted to {target}: {captions} caption files, {images} images "
        f"(CC BY-NC 4.0); evaluate with --data-root {root}"
    )


def _is_release(folder: Path) -> bool:
    return (folder / CAPTION_DIR).is_dir() and (folder / IMAGE_DIR).is_dir()
