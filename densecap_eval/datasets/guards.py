"""The one policy per kind of defect every loader applies (docs/data.md states it in full).

- `iter_json_lines`: JSON Lines read line by line; a line that is not UTF-8, not JSON or not an
  object is ONE bad record (reported with its line number), never the end of the file. A UTF-8
  byte-order mark and CRLF line ends are accepted.
- `release_path`: a path a published release's annotation names is joined to its folder only
  when it stays inside: absolute paths and ``..`` are refused (a bad record, never opened).
  A user's own manifest (`user_path`) may name absolute paths; relative ones resolve against
  the manifest's folder.
- `missing_shards`: a sharded table (``name-00000-of-00003.parquet``, Hugging Face's naming)
  with a shard absent is incomplete: the release is refused, not half scored.
- `SeenIds`: an id met a second time (after Unicode NFC normalisation, so ``café`` written
  composed or decomposed is one id) is a bad record naming where it was first seen.

Photos are checked by `densecap_eval.datasets.photos.photo_size` (decode check with a
decompression-bomb limit); a release with no usable record left is refused by the evaluation
(`DatasetError`, exit 1).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeGuard

from densecap_eval.core.errors import BadRecordError, DatasetError


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line number, object, None)`` for each line holding a JSON object, ``(number, None,
    problem)`` for any other non-blank line; blank lines are passed over. Numbers start at 1.

    An unreadable file raises `DatasetError` (a whole-input problem)."""
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    with stream:
        try:
            for number, raw in enumerate(stream, 1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    yield number, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
                    continue
                except RecursionError:
                    yield number, None, "invalid JSON (nested too deeply)"
                    continue
                if not isinstance(value, dict):
                    yield number, None, f"not a JSON object (found {type(value).__name__})"
                    continue
                yield number, value, None
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def check_json_lines(path: Path, *, hint: str) -> Iterator[dict[str, Any]]:
    """The objects of ``path`` (a whole-input check, not the records): `DatasetError` naming the
    file, the first problem and ``hint`` when no line holds a JSON object."""
    first_problem: str | None = None
    found = 0
    for number, value, problem in iter_json_lines(path):
        if value is None:
            first_problem = first_problem or f"line {number}: {problem}"
            continue
        found += 1
        yield value
    if not found:
        what = f"first problem: {first_problem}" if first_problem else "the file is empty"
        raise DatasetError(
            f"{path} is not JSON Lines (no line holds a JSON object; {what}); {hint}"
        )


def plain_file_name(name: object) -> TypeGuard[str]:
    """Whether ``name`` is a non-empty string naming a file directly inside a folder."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def annotation_sha256(path: Path) -> str:
    """sha256 of an annotation file (`densecap_eval.core.hashing`, memoised); a read error is the
    dataset's problem, named with the file."""
    from densecap_eval.core.hashing import file_sha256

    try:
        return file_sha256(path, persist=False)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def unsafe_reason(relative: str) -> str | None:
    """Why ``relative`` may not be joined to a release folder (None: it may)."""
    if not relative or "\0" in relative:
        return "is empty" if not relative else "holds a NUL byte"
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or relative.startswith("~"):
        return "is absolute"
    if ".." in posix.parts or ".." in windows.parts:
        return "climbs out of the release folder (..)"
    return None


def release_path(folder: Path, relative: Any, *, image: str, what: str) -> Path:
    """``folder / relative`` for a path a published release names; `BadRecordError` (``image``
    names the record, ``what`` the field) when it is not a string or would leave ``folder``.
    Nothing is opened here: a refused path is never read."""
    if not isinstance(relative, str):
        raise BadRecordError(image, f"{what} is not a string: {relative!r}")
    reason = unsafe_reason(relative)
    if reason is not None:
        raise BadRecordError(
            image, f"{what} {relative!r} {reason}: a release may only name files inside {folder}"
        )
    return folder / relative


def user_path(folder: Path, value: str) -> Path:
    """A path a user's own manifest names: absolute as written, relative to the manifest's
    folder otherwise (``~`` expanded)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def id_key(value: str) -> str:
    """What two ids must differ in to be two records: their Unicode NFC form."""
    return unicodedata.normalize("NFC", value)


class SeenIds:
    """Ids met so far in one split; a repeat (after `id_key`) is a bad record."""

    def __init__(self, what: str = "id") -> None:
        self.what = what
        self._first: dict[str, str] = {}

    def check(self, value: str, *, where: str, image: str | None = None) -> None:
        """Remember ``value`` (met at ``where``); raise `BadRecordError` when already met."""
        key = id_key(value)
        first = self._first.get(key)
        if first is not None:
            raise BadRecordError(
                image or value, f"{where}: {self.what} {value!r} repeats the one at {first}"
            )
        self._first[key] = where


_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})(?P<suffix>\..+)$")


def missing_shards(paths: list[Path]) -> list[str]:
    """The file names a sharded table's names promise but ``paths`` lack (``train-00001-of-00002
    .parquet`` when only ``train-00000-of-00002.parquet`` is there); [] for unsharded names."""
    present = {p.name for p in paths}
    missing: list[str] = []
    for name in sorted(present):
        match = _SHARD.match(name)
        if match is None:
            continue
        stem, total, suffix = match["stem"], int(match["total"]), match["suffix"]
        for index in range(total):
            expected = f"{stem}-{index:05d}-of-{total:05d}{suffix}"
            if expected not in present and expected not in missing:
                missing.append(expected)
    return missing
