"""The one download path every benchmark uses, and the typed table each one declares.

A benchmark folder declares where its files come from as `Source` rows (like open_clip's
pretrained table): the URL, the sha256 (or the git commit that pins the bytes), the kind of file
and the folder it is installed in. Its ``download(root, *, url, sha256, progress)`` (the entry of
`densecap_eval.datasets.DOWNLOADERS`) then goes through the steps here:

1. `fetch_archive`: pooch downloads into ``root/.downloads/`` (kept, so a re-run fetches
   nothing) and checks the sha256; a mismatch deletes the download and installs nothing.
2. `staging`: a private temporary folder next to the target, removed whatever happens.
3. `densecap_eval.datasets.archives`: safe extraction and an atomic move into place
   (`install_file` for a single file).
4. `DownloadMessage`: what was fetched (``done``) and what is left to do by hand (``todo``).

`how_to_get` is the one sentence a loader's errors use to name ``densecap-eval download``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from densecap_eval.core.errors import DownloadError

logger = logging.getLogger(__name__)

DOWNLOADS_DIR = ".downloads"

# How a source's bytes become files under the data root.
SourceKind = Literal[
    "file",  # one file, copied into place
    "tar",  # a tar archive (any compression), extracted safely
    "zip",  # a zip archive, extracted safely
    "git-blob",  # one file of a git repository, checked against its blob id at a commit
    "gdrive",  # on Google Drive only: never fetched, the message gives gdown steps
    "hf-gated",  # a gated Hugging Face Hub repository: never fetched, steps only
    "manual",  # licence-bound or by request (photos): never fetched, steps only
]

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Source:
    """One file a benchmark's data comes from.

    ``sha256`` is None when nothing is pinned (the user passes ``--sha256``; ``check`` says
    where to find a trustworthy value); ``commit`` pins files of a git repository, and a
    ``kind="git-blob"`` source is checked against its git ``blob`` id at that commit instead of
    a sha256. ``install`` is where the result goes, relative to the data root ("" for the root
    itself).
    """

    name: str
    url: str
    kind: SourceKind
    install: str = ""
    sha256: str | None = None
    commit: str | None = None
    blob: str | None = None
    size: str = ""  # for people: "7.1 GB"
    check: str = ""  # where a checksum can be found when none is pinned

    @property
    def fetched(self) -> bool:
        """Whether densecap-eval downloads it (False: the message says how to get it)."""
        return self.kind not in ("gdrive", "hf-gated", "manual")


def how_to_get(name: str, root: Path | str, *, what: str = "it", options: str = "") -> str:
    """The sentence a loader's errors end with: ``get <what> with `densecap-eval download
    <name> --root <root><options>```."""
    return f"get {what} with `densecap-eval download {name} --root {root}{options}`"


def url_file_name(url: str) -> str:
    """The file name a URL ends with (query string dropped); "" when it ends with a slash."""
    return posixpath.basename(url.split("?", 1)[0])


def normalize_sha256(value: str) -> str:
    """The lower-case hex digest from ``HEX`` or ``sha256:HEX``; DownloadError otherwise."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256_RE.fullmatch(digest):
        raise DownloadError(f"--sha256 must be 64 hexadecimal digits, got {value!r}")
    return digest


def make_dir(path: Path) -> Path:
    """``path`` created with its parents; the one "cannot create" error otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def url_and_sha256(url: str | None, sha256: str | None, *, pinned: str) -> None:
    """Refuse a ``--url`` without ``--sha256``, and a ``--sha256`` without ``--url`` where the
    default files have their own checksums (``pinned`` says what pins them; "" when a bare
    ``--sha256`` is allowed)."""
    if url is not None and sha256 is None:
        raise DownloadError("--url needs --sha256 (the checksum of the file at that URL)")
    if url is None and sha256 is not None and pinned:
        raise DownloadError(f"--sha256 needs --url: {pinned}")


def sha256_for(source: Source, sha256: str | None) -> str:
    """The checksum to check ``source`` against: the user's, else the pinned one; without
    either, DownloadError naming the file and where a checksum can be found."""
    digest = sha256 or source.sha256
    if digest is None:
        where = f" ({source.check})" if source.check else ""
        raise DownloadError(
            f"{source.name} ({source.url}) has no pinned sha256 in densecap-eval: pass "
            f"--sha256 HEX{where}"
        )
    return digest


def fetch_archive(url: str, sha256: str, *, downloads: Path, progress: bool = True) -> Path:
    """Download ``url`` into ``downloads`` (kept there, so a re-run does not fetch it again)
    and check its sha256; a mismatch deletes the download and raises DownloadError."""
    import pooch
    import requests

    digest = normalize_sha256(sha256)
    fname = url_file_name(url) or "download"
    make_dir(downloads)
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
        raise _value_error(url, digest, exc) from None
    except (requests.exceptions.RequestException, OSError) as exc:
        raise DownloadError(f"cannot download {url}: {exc}") from None
    finally:
        pooch_logger.setLevel(level)
    return Path(path)


def _value_error(url: str, digest: str, exc: ValueError) -> DownloadError:
    if "hash" not in str(exc).lower():
        return DownloadError(f"cannot download {url}: {exc}")
    got = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
    return DownloadError(
        f"checksum mismatch for {url}: expected sha256 {digest}, got "
        f"{got.group(1) if got else 'another'}; the download was deleted and nothing "
        "was extracted (a changed release needs its new --sha256)"
    )


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def fetch_source(
    source: Source, root: Path, *, url: str | None = None, sha256: str | None = None,
    progress: bool = True, downloads: Path | None = None,
) -> Path:  # fmt: skip
    """`fetch_archive` for a declared source (``url``/``sha256``: a mirror of it), into
    ``root/.downloads/`` unless ``downloads`` names another folder."""
    digest = sha256_for(replace(source, url=url or source.url), sha256)
    return fetch_archive(
        url or source.url, digest, downloads=downloads or root / DOWNLOADS_DIR, progress=progress
    )


@contextmanager
def staging(root: Path, *, prefix: str = ".extract-") -> Iterator[Path]:
    """A fresh, empty ``content`` folder inside a private temporary folder in ``root`` (the
    same file system as the target, so the move into place is one rename); removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=make_dir(root)))
    try:
        content = folder / "content"  # mkdtemp's folder is private (0700); this one is not
        content.mkdir()
        yield content
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def install_file(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` through a partial file beside it and one rename, so the
    target is never half written; the one "cannot write" error otherwise."""
    return _install(target, lambda partial: shutil.copyfile(source, partial))


def install_bytes(data: bytes, target: Path) -> Path:
    """`install_file` for bytes already in memory."""
    return _install(target, lambda partial: partial.write_bytes(data))


def _install(target: Path, write: Callable[[Path], object]) -> Path:
    make_dir(target.parent)
    partial = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


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
