"""Read ImageInWords (IIW) as LoTLIP and FLAIR evaluate it: the 612-image retrieval pool.

Annotations: the GitHub release ``google/imageinwords``, one ``data.jsonl`` per subset, read
from ``<root>/<subset>/data.jsonl`` (FLAIR's layout) or ``<root>/datasets/<subset>/data.jsonl``
(the repository's, where `download` puts them); when both exist they must be identical. Only
the three subsets of the pool are read, in the pool's order, and each is a split:

- ``DOCCI_Test`` (100): text ``IIW``, photo name ``image`` (``test_00731``, no extension);
- ``IIW-400`` (400): text ``IIW``, photo name ``image/key`` (``aar_test_04600``);
- ``DCI_Test`` (112): text ``IIW``, photo name ``image`` (``sa_1545038.jpg``).

As LoTLIP's ``iiw_retrieval_dataset`` does, the name is ``image`` if present, else
``image/key``, with ``.jpg`` appended when the name does not contain ``.jpg``; the photo is
``<root>/docci/<name>``, ``<root>/docci_aar/<name>`` or ``<root>/dci/<name>`` by subset. With
no split, records are the whole pool (DOCCI_Test, IIW-400, DCI_Test: 612), which is what
``iiw/retrieval`` evaluates; ``--split IIW-400`` narrows it to one subset. A record's id is
``<subset>/<name>``. The ``IIW`` text is given exactly as stored (``\\n\\n`` paragraph breaks and
surrounding spaces included); the task applies LoTLIP's split/rejoin.

A bad line (invalid JSON, no text, no photo name) is skipped loudly naming the subset file and
line, or raises under ``strict``; missing files or folders raise `DatasetError` with the fix.

Bad input (docs/data.md): a subset file missing or with no JSON object on any line is
`DatasetError` (exit 1); a bad line, a missing or non-string text, a photo name that is not a
plain file name or a photo listed twice (after NFC) is one bad record, skipped and named; BOM and
CRLF are read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DOWNLOADS_DIR,
    DownloadMessage,
    Source,
    fetch_source,
    install_file,
    make_dir,
    url_and_sha256,
)
from densecap_eval.datasets.guards import (
    SeenIds,
    annotation_sha256,
    check_json_lines,
    iter_json_lines,
    plain_file_name,
)
from densecap_eval.datasets.records import ImageRecord, Text

SUBSETS = ("DOCCI_Test", "IIW-400", "DCI_Test")  # the pool, in LoTLIP's order
PHOTO_DIRS = {"DOCCI_Test": "docci", "IIW-400": "docci_aar", "DCI_Test": "dci"}
ANNOTATIONS_FILE = "data.jsonl"
GITHUB_DIR = "datasets"

# The annotation files at a fixed commit of google/imageinwords, with the sha256 of the bytes
# stored at that commit (computed from the repository, not from a download).
IIW_COMMIT = "96d393777e2528becd8a7afa1389eb4b65084793"
IIW_BASE_URL = f"https://raw.githubusercontent.com/google/imageinwords/{IIW_COMMIT}/{GITHUB_DIR}"
IIW_SHA256 = {
    "DOCCI_Test": "f422b726c1af21a5154282cf8790ce110e03d5c94457d77d7002a50f17c984d1",
    "IIW-400": "88809dde73731208fa98f72430225a9122c8f7e3c4ebcde98e255d62c5f203f2",
    "DCI_Test": "59ec2a3b5c3885a3313b73656d57db2bf9861d48e4414b0692833ba9380a2cf1",
}


def annotation_sources(base_url: str, digests: dict[str, str]) -> dict[str, Source]:
    """The three subsets' files under ``base_url`` (``.../datasets``), checked against
    ``digests``; installed where the repository keeps them."""
    return {
        subset: Source(
            ANNOTATIONS_FILE,
            f"{base_url}/{subset}/{ANNOTATIONS_FILE}",
            "file",
            install=f"{GITHUB_DIR}/{subset}/{ANNOTATIONS_FILE}",
            sha256=digests[subset],
            commit=IIW_COMMIT,
        )
        for subset in SUBSETS
    }


SOURCES: dict[str, Source] = {
    **annotation_sources(IIW_BASE_URL, IIW_SHA256),
    # The photos come from DOCCI and DCI (never fetched here: see `_photo_step`).
    "DOCCI_Test photos": Source(
        "docci_images.tar.gz",
        "https://storage.googleapis.com/docci/data/docci_images.tar.gz",
        "manual",
        install=PHOTO_DIRS["DOCCI_Test"],
    ),
    "IIW-400 photos": Source(
        "docci_images_aar.tar.gz",
        "https://storage.googleapis.com/docci/data/docci_images_aar.tar.gz",
        "manual",
        install=PHOTO_DIRS["IIW-400"],
        size="3.6 GB",
    ),
    "DCI_Test photos": Source(
        "sa_000138.tar",
        "https://ai.meta.com/datasets/segment-anything-downloads/",
        "manual",
        install=PHOTO_DIRS["DCI_Test"],
    ),
}


def photo_name(raw: Mapping[str, Any]) -> object:
    """LoTLIP's photo name of a record: ``image`` if present, else ``image/key``, with ``.jpg``
    appended when the name does not contain ``.jpg`` (None when neither key is there)."""
    name = raw["image"] if "image" in raw else raw.get("image/key")
    if isinstance(name, str) and name and ".jpg" not in name:
        name += ".jpg"
    return name


class IIWDataset(DatasetBase):
    """The IIW retrieval pool under ``root`` (see the module doc for the layout)."""

    name = "iiw"
    title = "IIW"
    declared_splits = SUBSETS
    get_what = "the IIW annotations"

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        folders = ", ".join(f"{root / PHOTO_DIRS[s]}/" for s in SUBSETS)
        return (
            f"{super().how_to_get(root)}; the photos go in {folders} (from DOCCI and DCI; the "
            "download message says how)"
        )

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        self._files = {subset: self._find(subset) for subset in SUBSETS}
        for path in self._files.values():
            for _ in check_json_lines(path, hint=self.how_to_get(self.root)):
                pass

    def _find(self, subset: str) -> Path:
        flat = self.root / subset / ANNOTATIONS_FILE
        github = self.root / GITHUB_DIR / subset / ANNOTATIONS_FILE
        found = [p for p in (flat, github) if p.is_file()]
        if not found:
            raise DatasetError(f"{github} not found (nor {flat}); {self.how_to_get(self.root)}")
        if len(found) == 2 and annotation_sha256(flat) != annotation_sha256(github):
            raise DatasetError(
                f"{flat} and {github} both exist and differ: keep one of them (which one "
                f"`densecap-eval download iiw --root {self.root}` would write: {github})"
            )
        return found[0]

    def annotation_path(self, subset: str) -> Path:
        self.check_split(subset)
        return self._files[subset]

    def photo_dir(self, subset: str) -> Path:
        return self.root / PHOTO_DIRS[subset]

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """The annotation files of ``splits``, in pool order (photos are not read)."""
        return [FingerprintFile(s, self._files[s]) for s in SUBSETS if s in set(splits)]

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Records of one subset, or of the pool when ``split`` is None (module doc)."""
        subsets = [split] if split is not None else list(SUBSETS)
        for subset in subsets:
            self.check_split(subset)
        for subset in subsets:
            if not self.photo_dir(subset).is_dir():
                raise DatasetError(
                    f"{self.photo_dir(subset)} not found: it holds {subset}'s photos; "
                    f"{_photo_step(self.root, subset)}"
                )
        return self._iter(subsets)

    def _iter(self, subsets: list[str]) -> Iterator[ImageRecord]:
        lines = (
            (f"{subset}/{ANNOTATIONS_FILE} line {number}", (subset, number, value, problem))
            for subset in subsets
            for number, value, problem in iter_json_lines(self._files[subset])
        )
        return self.iter_parsed(
            lines, lambda line: self._parse(*line), ids=SeenIds("photo"), key=lambda r: r.id
        )

    def _parse(
        self, subset: str, number: int, raw: Mapping[str, Any] | None, problem: str | None
    ) -> ImageRecord:
        where = f"{subset}/{ANNOTATIONS_FILE} line {number}"
        if raw is None:
            raise BadRecordError(f"{subset} line {number}", f"{where}: {problem}")
        name = photo_name(raw)
        image = f"{subset}/{name}" if plain_file_name(name) else f"{subset} line {number}"
        if name is None:
            raise BadRecordError(image, f"{where}: missing field image (or image/key)")
        if not plain_file_name(name):
            raise BadRecordError(image, f"{where}: photo name {name!r} is not a file name")
        photo = self.photo_dir(subset) / name
        if "IIW" not in raw:
            raise BadRecordError(image, f"{where}: missing field IIW")
        text = raw["IIW"]
        if not isinstance(text, str):
            raise BadRecordError(image, f"{where}: IIW is not a string: {text!r}")
        if not text.strip():
            raise BadRecordError(image, f"{where}: empty IIW description")
        return ImageRecord(
            id=image,
            image=photo,
            texts=(Text(text, role="description", kind="caption"),),
            split=subset,
            meta={"subset": subset, "line": number},
        )


# --- download ---------------------------------------------------------------------------------


def _photo_step(root: Path, subset: str) -> str:
    """How to fill ``subset``'s photo folder (one line)."""
    folder = root / PHOTO_DIRS[subset]
    photos = SOURCES[f"{subset} photos"]
    if subset == "DOCCI_Test":
        return (
            f"copy DOCCI's test photos into {folder}/: `mkdir -p {folder} && cp "
            f"DOCCI_ROOT/images/test_*.jpg {folder}/` (DOCCI_ROOT/images/ comes from "
            f"{photos.name}, {photos.url}; see `densecap-eval download docci`)"
        )
    if subset == "IIW-400":
        return (
            f"copy DOCCI's AAR photos aar_test_04600 ... aar_test_04999 into {folder}/: "
            f"`mkdir -p {folder} && cp DOCCI_ROOT/images_aar/aar_test_04[6-9]??.jpg {folder}/` "
            f"(DOCCI_ROOT/images_aar/ comes from {photos.name}, {photos.size}, "
            f"{photos.url}; LoTLIP's data_preprocess.py copies aar_train_<same number>.jpg "
            "under the aar_test_ name when the aar_test_ file is absent)"
        )
    return (
        f"copy DCI's photos into {folder}/: `mkdir -p {folder} && cp "
        f"DCI_ROOT/densely_captioned_images/photos/sa_*.jpg {folder}/` or "
        f"`tar -xf {photos.name} -C {folder} --wildcards '*.jpg'` (the SA-1B archive, from "
        f"{photos.url} after accepting its licence)"
    )


def _subset_of(url: str) -> str:
    parts = url.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-1] == ANNOTATIONS_FILE and parts[-2] in SUBSETS:
        return parts[-2]
    raise DownloadError(
        f"{url}: --url must name one subset's file, .../<subset>/{ANNOTATIONS_FILE} with "
        f"<subset> one of {', '.join(SUBSETS)}"
    )


def download(
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch the IIW annotations into ``root/datasets/<subset>/data.jsonl``, checksum-checked;
    returns what was fetched and how to fill the photo folders (which come from DOCCI and DCI).

    Without ``url``: the three subsets' files from GitHub at `IIW_COMMIT`, each checked against
    its pinned sha256 (`IIW_SHA256`); all three are downloaded before any is installed. With
    ``url`` (a mirror of one file, ``.../<subset>/data.jsonl``): that file, ``sha256`` required.
    A bad checksum deletes the download and installs nothing.
    """
    root = Path(root).expanduser()
    url_and_sha256(url, sha256, pinned="the three IIW files have their own pinned checksums")
    jobs: list[tuple[str, Source, str | None]]
    if url is None:
        jobs = [(subset, SOURCES[subset], None) for subset in SUBSETS]
    else:
        subset = _subset_of(url)
        jobs = [(subset, replace(SOURCES[subset], url=url), sha256)]
    downloads = make_dir(root) / DOWNLOADS_DIR / "iiw"
    fetched = [
        (subset, source, fetch_source(source, root, sha256=digest, progress=progress,
                                      downloads=downloads / subset))
        for subset, source, digest in jobs
    ]  # fmt: skip
    for _, source, path in fetched:  # all fetched and checked: now install
        install_file(path, root / source.install)
    done = [
        f"fetched {', '.join(s for s, _, _ in fetched)} into {root / GITHUB_DIR}/<subset>/"
        f"{ANNOTATIONS_FILE}"
    ]
    present, todo = _photo_report(root)
    if not todo:
        return DownloadMessage("\n".join([*done, *present, f"{root} is ready for iiw/retrieval"]))
    return DownloadMessage("\n".join(done + present), "\n".join(["still to do by hand:", *todo]))


def _photo_report(root: Path) -> tuple[list[str], list[str]]:
    """(per subset: how many of its photos are in place; the steps still to do by hand)."""
    present_lines: list[str] = []
    todo: list[str] = []
    absent = []
    for subset in SUBSETS:
        files = [
            p
            for p in (
                root / subset / ANNOTATIONS_FILE,
                root / GITHUB_DIR / subset / ANNOTATIONS_FILE,
            )
            if p.is_file()
        ]
        if not files:
            absent.append(subset)
            continue
        names = [
            photo_name(value) if value is not None else None
            for _, value, _ in iter_json_lines(files[0])
        ]
        folder = root / PHOTO_DIRS[subset]
        present = sum(1 for n in names if plain_file_name(n) and (folder / n).is_file())
        present_lines.append(f"{subset}: {present} of {len(names)} photos in {folder}/")
        if present < len(names):
            todo.append(f"- {subset}: {_photo_step(root, subset)}")
    if absent:
        todo.insert(
            0,
            f"- the annotations of {', '.join(absent)}: `densecap-eval download iiw --root "
            f"{root}` (the files go in {root / GITHUB_DIR}/<subset>/{ANNOTATIONS_FILE})",
        )
    return present_lines, todo
