"""Fetch the DCI annotations (and the released LoRA adapters), extract them safely, check photos.

The annotations archive holds ``densely_captioned_images/{splits.json, complete/, ...}`` and is
extracted into the data root, as the reference's scripts/download.py does. The photos are not in
it: they are the SA-1B archive ``sa_000138.tar``, which Meta hands out only after its licence is
accepted, so densecap-eval never downloads them; `verify_photos` says where to get and put them.

The sources are declared in `SOURCES`; fetching, checking and safe extraction are the shared
path of `densecap_eval.datasets.download` and `densecap_eval.datasets.archives`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from densecap_eval.core.errors import DatasetError, DownloadError, UnknownNameError
from densecap_eval.datasets.archives import extract_safely, find_extracted, replace_path
from densecap_eval.datasets.dci.layout import (
    PHOTOS_DIR,
    RECORDS_DIR,
    RELEASE_DIR,
    SPLITS_FILE,
    read_splits,
)
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    fetch_source,
    make_dir,
    staging,
    url_and_sha256,
)

logger = logging.getLogger(__name__)

_BASE_URL = "https://dl.fbaipublicfiles.com/densely_captioned_images"

SOURCES: dict[str, Source] = {
    "annotations": Source(
        "dci.tar.gz",
        f"{_BASE_URL}/dci.tar.gz",
        "tar",
        install=RELEASE_DIR,
        # The 2024-06 re-release; the older checksum is obsolete.
        sha256="d865c244150168d3f25daaad0bf5b70b2123cf3e83ca7b0e207d5b26943c5fc7",
    ),
    # LoRA adapters for CLIP ViT-B/32 released with the paper.
    "dci_pick1": Source(
        "dci_pick1.tar.gz",
        f"{_BASE_URL}/dci_pick1.tar.gz",
        "tar",
        install="dci_pick1",
        sha256="225b9e1c88a00a2dd62cd5b0e23d4133efbbffe8d28b6de796ba894db1a2aa6a",
    ),
    "dci_pick1_nl0": Source(
        "dci_pick1_nl0.tar.gz",
        f"{_BASE_URL}/dci_pick1_nl0.tar.gz",
        "tar",
        install="dci_pick1_nl0",
        sha256="2943daaba2489492c274284631223e02933cc9436db201c23abe5939ed01d446",
    ),
    # Where the photos come from (never fetched by densecap-eval: the licence must be accepted).
    "photos": Source(
        "sa_000138.tar",
        "https://ai.meta.com/datasets/segment-anything-downloads/",
        "manual",
        install=f"{RELEASE_DIR}/{PHOTOS_DIR}",
    ),
}
ADAPTERS = ("dci_pick1", "dci_pick1_nl0")
DCI_ANNOTATIONS_URL = SOURCES["annotations"].url
SA1B_ARCHIVE = SOURCES["photos"].name
SA1B_URL = SOURCES["photos"].url


# --- download ---------------------------------------------------------------------------------


def download_dci(
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch and extract the DCI annotations so that ``root/densely_captioned_images/`` holds
    splits.json, complete/ and an (initially empty) photos/; returns that folder.

    An existing release folder is replaced, except its photos/, which are kept (they come from
    SA-1B, not from this archive). Call `verify_photos` afterwards to see what is missing.
    """
    root = make_dir(Path(root).expanduser())
    archive = fetch_source(SOURCES["annotations"], root, url=url, sha256=sha256, progress=progress)
    target = root / RELEASE_DIR
    with staging(root) as content:
        extract_safely(archive, content)
        release = find_extracted(content, _is_release, preferred=(RELEASE_DIR,))
        if release is None:
            raise DownloadError(
                f"{archive.name} holds no {RELEASE_DIR}/{SPLITS_FILE} and {RECORDS_DIR}/: "
                "is it the DCI annotations archive?"
            )
        (release / PHOTOS_DIR).mkdir(exist_ok=True)
        replace_path(release, target, carry_over=_keep_photos)
    logger.info("extracted %s into %s", archive.name, target)
    return target


def _is_release(folder: Path) -> bool:
    return (folder / SPLITS_FILE).is_file() and (folder / RECORDS_DIR).is_dir()


def _keep_photos(old: Path, target: Path) -> None:
    """The files of the old photos/ that the new release lacks are moved over (the user's)."""
    old_photos, new_photos = old / PHOTOS_DIR, target / PHOTOS_DIR
    if old_photos.is_dir() and new_photos.is_dir():
        for item in old_photos.iterdir():
            if not (new_photos / item.name).exists():
                os.replace(item, new_photos / item.name)


def download_adapter(
    name: str,
    dest: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch one released LoRA adapter archive (``dci_pick1`` or ``dci_pick1_nl0``) and extract
    it into ``dest``; returns ``dest/<name>`` when the archive holds that folder, else ``dest``."""
    if name not in ADAPTERS:
        raise UnknownNameError(f"unknown DCI adapter {name!r} (known: {', '.join(ADAPTERS)})")
    dest = make_dir(Path(dest).expanduser())
    archive = fetch_source(SOURCES[name], dest, url=url, sha256=sha256, progress=progress)
    with staging(dest) as content:
        extract_safely(archive, content)
        for item in sorted(content.iterdir()):
            replace_path(item, dest / item.name)
    return dest / name if (dest / name).is_dir() else dest


# --- photos -----------------------------------------------------------------------------------


@dataclass
class PhotoReport:
    """What `verify_photos` found for the photos the records name."""

    base: Path  # root/densely_captioned_images
    records: int = 0  # records whose `image` could be read
    present: int = 0  # photos found, non-empty, with a readable image header
    missing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (photo, why)
    bad_records: list[tuple[str, str]] = field(default_factory=list)  # (record file, why)

    @property
    def photos_dir(self) -> Path:
        return self.base / PHOTOS_DIR

    @property
    def ok(self) -> bool:
        return not (self.missing or self.empty or self.unreadable)

    def summary(self) -> str:
        """One line: how many photos are usable and what is wrong with the rest."""
        parts = [f"{self.present} of {self.records} usable"]
        parts += [
            f"{len(items)} {what}"
            for items, what in (
                (self.missing, "missing"),
                (self.empty, "empty"),
                (self.unreadable, "unreadable"),
            )
            if items
        ]
        return ", ".join(parts)

    def message(self, *, show: int = 5) -> str:
        """A report for people: a one-line summary, then what is wrong and how to fix it."""
        photos = self.photos_dir
        if self.ok:
            lines = [f"all {self.present} photos named by {self.records} records are in {photos}"]
        else:
            lines = [f"{self.present} of {self.records} photos are usable in {photos}"]
        if self.missing:
            lines += [
                f"{len(self.missing)} of {self.records} photos are missing from {photos} "
                f"(first: {_first(self.missing, show)}).",
                f"The DCI photos are the SA-1B archive {SA1B_ARCHIVE}. It is obtained from Meta's "
                f"SA-1B download page after accepting the SA-1B licence: {SA1B_URL} "
                "(densecap-eval never downloads it).",
                f"Unpack its .jpg images directly into {photos}, for example:",
                f"  tar -xf {SA1B_ARCHIVE} -C {photos} --wildcards '*.jpg'",
            ]
        if self.empty:
            lines.append(
                f"{len(self.empty)} photos are empty files (first: {_first(self.empty, show)}); "
                f"unpack {SA1B_ARCHIVE} into {photos} again."
            )
        if self.unreadable:
            shown = "; ".join(f"{name}: {why}" for name, why in self.unreadable[:show])
            lines.append(
                f"{len(self.unreadable)} photos have no readable image header ({shown}); "
                f"unpack {SA1B_ARCHIVE} into {photos} again."
            )
        if self.bad_records:
            shown = "; ".join(f"{name}: {why}" for name, why in self.bad_records[:show])
            lines.append(
                f"{len(self.bad_records)} records could not be read to find their photo ({shown})."
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "base": str(self.base),
            "records": self.records,
            "present": self.present,
            "missing": list(self.missing),
            "empty": list(self.empty),
            "unreadable": [{"photo": p, "reason": r} for p, r in self.unreadable],
            "bad_records": [{"image": n, "reason": r} for n, r in self.bad_records],
            "ok": self.ok,
        }


def _first(names: list[str], show: int) -> str:
    more = f", ... {len(names) - show} more" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def verify_photos(root: str | os.PathLike[str]) -> PhotoReport:
    """Check photos/ against the `image` field of every record listed in splits.json.

    Only headers are read (a full decode of every photo happens when entries are built), so
    this is quick even for the whole release. A missing photos/ folder counts every photo as
    missing. No root, no release folder or an unreadable splits.json raise DatasetError.
    """
    root = Path(root).expanduser()
    base = root / RELEASE_DIR
    if not base.is_dir():
        raise DatasetError(
            f"{base} not found: run `densecap-eval download dci --root {root}` first"
        )
    report = PhotoReport(base)
    seen: set[str] = set()
    # Record file names over all splits, in file order, without repeats.
    names = dict.fromkeys(
        n for members in read_splits(base / SPLITS_FILE).values() for n in members
    )
    for name in names:
        image = _record_image(base / RECORDS_DIR / name)
        if isinstance(image, tuple):
            report.bad_records.append((name, image[0]))
            continue
        report.records += 1
        if image in seen:
            continue
        seen.add(image)
        problem = _photo_problem(report.photos_dir / image)
        if problem is None:
            report.present += 1
        elif problem == "missing":
            report.missing.append(image)
        elif problem == "empty":
            report.empty.append(image)
        else:
            report.unreadable.append((image, problem))
    return report


def _record_image(path: Path) -> str | tuple[str]:
    """The record's `image` field, or a 1-tuple with the reason it cannot be read."""
    if Path(path.name).name in ("", ".", ".."):
        return ("not a record file name",)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ("listed in splits.json but there is no such record file",)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return (f"cannot read the record: {exc}",)
    image = raw.get("image") if isinstance(raw, dict) else None
    if not isinstance(image, str) or not image:
        return ("no `image` field",)
    if Path(image).is_absolute() or ".." in Path(image).parts:
        return (f"image {image!r} is not a path inside photos/",)
    return image


def _photo_problem(path: Path) -> str | None:
    """None if the photo exists, is non-empty and has an image header Pillow knows."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not path.is_file():
        return "not a file"
    if size == 0:
        return "empty"
    try:
        with Image.open(path) as img:
            width, height = img.size
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image header ({exc})"
    if width <= 0 or height <= 0:
        return f"image header gives size {width}x{height}"
    return None


# --- the entry of `densecap_eval.datasets.DOWNLOADERS` ----------------------------------------


def download(
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """DCI's downloader: `download_dci` (the published archive unless ``url`` and ``sha256``
    name another, e.g. a mirror), then `verify_photos`; returns a `DownloadMessage` whose
    ``todo`` is the photo report when photos are missing, empty or unreadable."""
    url_and_sha256(url, sha256, pinned="")
    base = download_dci(root, url=url, sha256=sha256, progress=progress)
    done = f"annotations extracted to {base}"
    report = verify_photos(root)
    if report.ok:
        return DownloadMessage(f"{done}\n{report.message()}")
    return DownloadMessage(done, report.message())
