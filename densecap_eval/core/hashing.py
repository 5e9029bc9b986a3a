"""Content hashes of files (model weights, photos), cheap the second time.

`file_sha256` streams a file through sha256 once and remembers the digest under the file's
(resolved path, size, mtime): in this process, and on disk in a small SQLite table beside the
embedding cache (``<cache root>/file-sha256.sqlite``), so the next run of a 7B model's weights
costs a ``stat`` per file instead of a re-read of every byte. A file that changes in place gets
a new size or mtime and is hashed again. The on-disk memo is an accelerator only: any problem
with it (read-only cache, a locked or corrupt database) falls back to hashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
MEMO_FILE = "file-sha256.sqlite"

# (resolved path, size, mtime_ns) -> sha256, for this process
_memo: dict[tuple[str, int, int], str] = {}


def _memo_path() -> Path:
    from densecap_eval.core.paths import default_cache_dir

    return default_cache_dir() / MEMO_FILE


@contextlib.contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    path = _memo_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=5)
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS files "
            "(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)"
        )
        yield conn
        conn.commit()
    finally:
        conn.close()


def _disk_get(key: tuple[str, int, int]) -> str | None:
    try:
        with _db() as conn:
            row = conn.execute(
                "SELECT sha256 FROM files WHERE path = ? AND size = ? AND mtime_ns = ?", key
            ).fetchone()
    except (OSError, sqlite3.Error) as exc:
        log.debug("file hash memo unavailable (%s); hashing", exc)
        return None
    return str(row[0]) if row else None


def _disk_put(key: tuple[str, int, int], digest: str) -> None:
    with contextlib.suppress(OSError, sqlite3.Error):
        with _db() as conn:
            conn.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (*key, digest))


def file_sha256(path: str | os.PathLike[str], *, persist: bool = True) -> str:
    """sha256 of a file's bytes, memoised by (resolved path, size, mtime).

    ``persist=False`` keeps the memo in this process only (for many small files, such as
    photos, where a database round trip per file costs about what hashing does).
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    digest = _memo.get(key)
    if digest is None and persist:
        digest = _disk_get(key)
    if digest is None:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        if persist:
            _disk_put(key, digest)
    _memo[key] = digest
    return digest


def files_sha256(directory: Path, patterns: Sequence[str]) -> dict[str, str]:
    """sha256 of each file in ``directory`` matching one of ``patterns``, by relative name.

    Symlinks (the hub cache's snapshot layout) are followed: the content is what counts.
    """
    found = sorted({p for pattern in patterns for p in directory.glob(pattern) if p.is_file()})
    return {p.relative_to(directory).as_posix(): file_sha256(p) for p in found}


def clear_process_memo() -> None:
    """Forget this process's memo (tests that rewrite files within one mtime tick)."""
    _memo.clear()
