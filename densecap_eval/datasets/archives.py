"""Unpack downloaded archives safely and move the result into place atomically.

Every downloader extracts through here: a member that could land outside the target (absolute
paths, ``..``, links pointing outside, device files, symbolic links in a zip) is refused before
a byte is written, and the result is moved into place with one rename (`replace_path`).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from densecap_eval.core.errors import DownloadError

# Folders an archiver adds that never hold a release (macOS zip metadata).
_NOISE_DIRS = ("__MACOSX",)


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member's name may not be extracted (None: it may)."""
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


def _refused(archive: str, name: str, problem: str) -> DownloadError:
    return DownloadError(
        f"{archive}: refusing to extract member {name!r}: {problem}; nothing was extracted"
    )


def _tar_member_problem(member: tarfile.TarInfo, symlinks: set[str]) -> str | None:
    name = member.name
    problem = unsafe_member_name(name)
    if problem is None:
        parts = PurePosixPath(name).parts
        prefixes = ("/".join(parts[:i]) for i in range(1, len(parts)))
        if any(p in symlinks for p in prefixes):
            problem = "its path goes through a symbolic link in the archive"
    if problem is not None:
        return problem
    if member.issym():
        symlinks.add(posixpath.normpath(name))
        return _unsafe_link(
            member.linkname, posixpath.join(posixpath.dirname(name), member.linkname)
        )
    if member.islnk():
        return _unsafe_link(member.linkname, member.linkname)
    if not (member.isfile() or member.isdir()):
        return "it is a device file or FIFO, not a regular file or folder"
    return None


def check_tar_members(tar: tarfile.TarFile, *, archive: str) -> list[tarfile.TarInfo]:
    """Every member, after checking that none could land outside the extraction folder.

    Refused: absolute names, ``..`` components, names that pass through a symlink member,
    links (symbolic or hard) whose target is absolute or leaves the folder, and anything but
    regular files, folders and links (devices, FIFOs).
    """
    members = tar.getmembers()
    symlinks: set[str] = set()
    for member in members:
        problem = _tar_member_problem(member, symlinks)
        if problem is not None:
            raise _refused(archive, member.name, problem)
    return members


def extract_tar_safely(archive: Path, dest: Path) -> None:
    """Extract the tar ``archive`` into the folder ``dest`` after `check_tar_members` passed."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = check_tar_members(tar, archive=archive.name)
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


def extract_zip_safely(archive: Path, dest: Path) -> None:
    """Extract the zip ``archive`` into ``dest`` after checking every member: no absolute path,
    no ``..``, no symbolic link, nothing but files and folders (the tar rules)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                problem = unsafe_member_name(member.filename)
                kind = stat.S_IFMT(member.external_attr >> 16)
                if problem is None and kind == stat.S_IFLNK:
                    problem = "it is a symbolic link"
                elif problem is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    problem = "it is a device file or FIFO, not a regular file or folder"
                if problem is not None:
                    raise _refused(archive.name, member.filename, problem)
            zf.extractall(dest, members=members)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a readable zip archive: {exc}") from None
    except OSError as exc:
        raise DownloadError(f"cannot extract {archive}: {exc.strerror or exc}") from None


def extract_safely(archive: Path, dest: Path) -> None:
    """`extract_zip_safely` for a zip (by its content, not its name), else `extract_tar_safely`."""
    if zipfile.is_zipfile(archive):
        extract_zip_safely(archive, dest)
    else:
        extract_tar_safely(archive, dest)


def find_extracted(
    content: Path, looks_right: Callable[[Path], bool], *, preferred: Iterable[str] = ()
) -> Path | None:
    """The extracted folder ``looks_right`` accepts: a ``preferred`` name at the top, the top
    itself, a folder one level down, then two levels down (mirrors pack a release inside
    ``<repo>-<commit>/`` or similar); None when none does."""
    candidates = [content / name for name in preferred] + [content]
    children = sorted(
        p for p in content.iterdir()
        if p.is_dir() and p not in candidates and p.name not in _NOISE_DIRS
    )  # fmt: skip
    grandchildren = sorted(q for p in children for q in p.iterdir() if q.is_dir())
    for candidate in [*candidates, *children, *grandchildren]:
        if candidate.is_dir() and looks_right(candidate):
            return candidate
    return None


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
