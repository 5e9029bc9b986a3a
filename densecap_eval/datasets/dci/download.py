"""Fetch the DCI annotations (and the released LoRA adapters), extract them safely, check photos.

The annotations archive holds ``densely_captioned_images/{splits.json, complete/, ...}`` and is
extracted into the data root, as the reference's scripts/download.py does. The photos are not in
it: they are the SA-1B archive ``sa_000138.tar``, which Meta hands out only after its licence is
accepted, so densecap-eval never downloads them; `verify_photos` says where to get and put them.

Downloads go through pooch with a known sha256: a bad checksum deletes the download and
extracts nothing. Extraction refuses any member that could land outside the target (absolute
paths, ``..``, links pointing outside, device files) before writing a byte, extracts into a
temporary folder inside the target, and moves the result into place only once it is complete.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from densecap_eval.core.errors import DatasetError, DownloadError, UnknownNameError
from densecap_eval.datasets.dci.layout import (
    PHOTOS_DIR,
    RECORDS_DIR,
    RELEASE_DIR,
    SPLITS_FILE,
    read_splits,
)

logger = logging.getLogger(__name__)

DOWNLOADS_DIR = ".downloads"

_BASE_URL = "https://dl.fbaipublicfiles.com/densely_captioned_images"
DCI_ANNOTATIONS_URL = f"{_BASE_URL}/dci.tar.gz"
# The 2024-06 re-release; the older checksum is obsolete.
DCI_ANNOTATIONS_SHA256 = "d865c244150168d3f25daaad0bf5b70b2123cf3e83ca7b0e207d5b26943c5fc7"

# LoRA adapters for CLIP ViT-B/32 released with the paper: name -> (url, sha256).
DCI_ADAPTERS: dict[str, tuple[str, str]] = {
    "dci_pick1": (
        f"{_BASE_URL}/dci_pick1.tar.gz",
        "225b9e1c88a00a2dd62cd5b0e23d4133efbbffe8d28b6de796ba894db1a2aa6a",
    ),
    "dci_pick1_nl0": (
        f"{_BASE_URL}/dci_pick1_nl0.tar.gz",
        "2943daaba2489492c274284631223e02933cc9436db201c23abe5939ed01d446",
    ),
}

# Where the photos come from (never fetched by densecap-eval: the licence must be accepted).
SA1B_ARCHIVE = "sa_000138.tar"
SA1B_URL = "https://ai.meta.com/datasets/segment-anything-downloads/"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


# --- download ---------------------------------------------------------------------------------


def normalize_sha256(value: str) -> str:
    """The lower-case hex digest from ``HEX`` or ``sha256:HEX``; DownloadError otherwise."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256_RE.fullmatch(digest):
        raise DownloadError(f"--sha256 must be 64 hexadecimal digits, got {value!r}")
    return digest


def fetch_archive(url: str, sha256: str, *, downloads: Path, progress: bool = True) -> Path:
    """Download ``url`` into ``downloads`` (kept there, so a re-run does not fetch it again)
    and check its sha256; a mismatch deletes the download and raises DownloadError."""
    import pooch
    import requests

    digest = normalize_sha256(sha256)
    fname = posixpath.basename(url.split("?", 1)[0]) or "download"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {downloads}: {exc.strerror or exc}") from None
    logger.info("fetching %s into %s", url, downloads)
    pooch_logger = pooch.get_logger()
    level = pooch_logger.level
    # pooch announces each download on its own stderr handler; the caller reports instead.
    pooch_logger.setLevel(logging.WARNING)
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{digest}",
            fname=fname,
            path=downloads,
            progressbar=progress and _has_tqdm(),
        )
    except ValueError as exc:
        if "hash" in str(exc).lower():
            got = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {digest}, got "
                f"{got.group(1) if got else 'another'}; the download was deleted and nothing "
                "was extracted (a changed release needs its new --sha256)"
            ) from None
        raise DownloadError(f"cannot download {url}: {exc}") from None
    except (requests.exceptions.RequestException, OSError) as exc:
        raise DownloadError(f"cannot download {url}: {exc}") from None
    finally:
        pooch_logger.setLevel(level)
    return Path(path)


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def download_dci(
    root: str | os.PathLike[str],
    *,
    url: str = DCI_ANNOTATIONS_URL,
    sha256: str = DCI_ANNOTATIONS_SHA256,
    progress: bool = True,
) -> Path:
    """Fetch and extract the DCI annotations so that ``root/densely_captioned_images/`` holds
    splits.json, complete/ and an (initially empty) photos/; returns that folder.

    An existing release folder is replaced, except its photos/, which are kept (they come from
    SA-1B, not from this archive). Call `verify_photos` afterwards to see what is missing.
    """
    root = Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the data root {root}: {exc.strerror or exc}") from None
    archive = fetch_archive(url, sha256, downloads=root / DOWNLOADS_DIR, progress=progress)
    target = root / RELEASE_DIR
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        content = staging / "content"  # mkdtemp's folder is private (0700); this one is not
        content.mkdir()
        extract_safely(archive, content)
        release = _find_release(content, archive)
        (release / PHOTOS_DIR).mkdir(exist_ok=True)
        _install(release, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("extracted %s into %s", archive.name, target)
    return target


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
    if name not in DCI_ADAPTERS:
        raise UnknownNameError(f"unknown DCI adapter {name!r} (known: {', '.join(DCI_ADAPTERS)})")
    default_url, default_sha = DCI_ADAPTERS[name]
    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest}: {exc.strerror or exc}") from None
    archive = fetch_archive(
        url or default_url,
        sha256 or default_sha,
        downloads=dest / DOWNLOADS_DIR,
        progress=progress,
    )
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        content = staging / "content"
        content.mkdir()
        extract_safely(archive, content)
        for item in sorted(content.iterdir()):
            _install(item, dest / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest / name if (dest / name).is_dir() else dest


# --- safe extraction --------------------------------------------------------------------------


def check_members(tar: tarfile.TarFile, *, archive: str) -> list[tarfile.TarInfo]:
    """Every member, after checking that none could land outside the extraction folder.

    Refused: absolute names, ``..`` components, names that pass through a symlink member,
    links (symbolic or hard) whose target is absolute or leaves the folder, and anything but
    regular files, folders and links (devices, FIFOs).
    """
    members = tar.getmembers()
    symlinks: set[str] = set()
    for member in members:
        name = member.name
        problem = _unsafe_name(name)
        if problem is None:
            parts = PurePosixPath(name).parts
            prefixes = ("/".join(parts[:i]) for i in range(1, len(parts)))
            if any(p in symlinks for p in prefixes):
                problem = "its path goes through a symbolic link in the archive"
        if problem is None:
            if member.issym():
                target = posixpath.join(posixpath.dirname(name), member.linkname)
                problem = _unsafe_link(member.linkname, target)
                symlinks.add(posixpath.normpath(name))
            elif member.islnk():
                problem = _unsafe_link(member.linkname, member.linkname)
            elif not (member.isfile() or member.isdir()):
                problem = "it is a device file or FIFO, not a regular file or folder"
        if problem is not None:
            raise DownloadError(
                f"{archive}: refusing to extract member {name!r}: {problem}; nothing was extracted"
            )
    return members


def _unsafe_name(name: str) -> str | None:
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "its path is absolute"
    if ".." in PurePosixPath(name).parts or ".." in name.split("\\"):
        return "its path contains '..'"
    return None


def _unsafe_link(linkname: str, resolved: str) -> str | None:
    if linkname.startswith("/") or re.match(r"^[A-Za-z]:", linkname):
        return f"it links to the absolute path {linkname!r}"
    normal = posixpath.normpath(resolved)
    if normal == ".." or normal.startswith("../") or normal.startswith("/"):
        return f"it links to {linkname!r}, outside the extraction folder"
    return None


def extract_safely(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into the folder ``dest`` after `check_members` passed on all of it."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = check_members(tar, archive=archive.name)
            # The "data" filter re-checks every member against the files already written
            # (it resolves real paths), which also catches link chains a name check cannot see.
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise DownloadError(
            f"{archive.name}: refusing to extract: {exc}; nothing was extracted"
        ) from None
    except (tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive} is not a readable tar archive: {exc}") from None
    except OSError as exc:
        raise DownloadError(f"cannot extract {archive}: {exc.strerror or exc}") from None


def _find_release(content: Path, archive: Path) -> Path:
    """The extracted release folder: ``densely_captioned_images/`` at the top of the archive
    (the published layout) or, from a mirror packed one level down, the top itself."""
    for candidate in (content / RELEASE_DIR, content):
        if (candidate / SPLITS_FILE).is_file() and (candidate / RECORDS_DIR).is_dir():
            return candidate
    raise DownloadError(
        f"{archive.name} holds no {RELEASE_DIR}/{SPLITS_FILE} and {RECORDS_DIR}/: "
        "is it the DCI annotations archive?"
    )


def replace_path(
    new: Path, target: Path, *, carry_over: Callable[[Path, Path], None] | None = None
) -> None:
    """Move ``new`` to ``target`` with one rename; an existing ``target`` is replaced only once
    ``new`` is in (put back if the rename fails). ``carry_over(old, target)`` may move what the
    user added to the old copy into the new one before the old copy is deleted."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)  # put the previous copy back
        raise
    if carry_over is not None:
        carry_over(old, target)
    shutil.rmtree(old, ignore_errors=True)


def _install(new: Path, target: Path) -> None:
    """`replace_path` for a DCI release: the files of the old photos/ that ``new`` lacks are
    moved over first (they are the user's)."""

    def keep_photos(old: Path, target: Path) -> None:
        old_photos, new_photos = old / PHOTOS_DIR, target / PHOTOS_DIR
        if old_photos.is_dir() and new_photos.is_dir():
            for item in old_photos.iterdir():
                if not (new_photos / item.name).exists():
                    os.replace(item, new_photos / item.name)

    replace_path(new, target, carry_over=keep_photos)


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


class DownloadMessage(str):
    """A downloader's message (the ``str`` every registered downloader returns) in two parts
    the CLI prints apart: ``done`` says what was fetched (stdout), ``todo`` what is still left
    to do by hand, such as photos to unpack (stderr); ``todo`` is "" when nothing is left."""

    done: str
    todo: str

    def __new__(cls, done: str, todo: str = "") -> DownloadMessage:
        message = super().__new__(cls, "\n".join(part for part in (done, todo) if part))
        message.done, message.todo = done, todo
        return message


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
    if url is not None and sha256 is None:
        raise DownloadError("--url needs --sha256 (the checksum of the file at that URL)")
    base = download_dci(
        root,
        url=url or DCI_ANNOTATIONS_URL,
        sha256=sha256 or DCI_ANNOTATIONS_SHA256,
        progress=progress,
    )
    done = f"annotations extracted to {base}"
    report = verify_photos(root)
    if report.ok:
        return DownloadMessage(f"{done}\n{report.message()}")
    return DownloadMessage(done, report.message())
