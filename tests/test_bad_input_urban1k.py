"""Urban1k under bad input: one defect per case, through the CLI (tests/bad_input.py, docs/data.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import releases
from bad_input import (
    HTML,
    HUGE_TEXT,
    NOT_UTF8,
    Case,
    Change,
    edit,
    fail,
    family_tests,
    ok,
    photo_cases,
    put,
    skip,
)
from test_datasets_urban1k import CAPTIONS

TASK = "urban1k/retrieval"
N = len(CAPTIONS)


def _caption(n: int | str, data: bytes | None) -> Change:
    return put(f"caption/{n}.txt", data)


def _loop(root: Path) -> None:
    (root / "caption" / "4.txt").unlink()
    os.symlink("4.txt", root / "caption" / "4.txt")  # points at itself


def _all_empty(root: Path) -> None:
    for path in (root / "caption").glob("*.txt"):
        path.write_bytes(b"\n")


def _nfc_twins(root: Path) -> None:
    src = root / "image" / "9.jpg"
    for name in ("caf\u00e9", "cafe\u0301"):
        (root / "caption" / f"{name}.txt").write_text(f"A {name} on a corner.\n", encoding="utf-8")
        shutil.copy(src, root / "image" / f"{name}.jpg")


CASES: dict[str, Case] = {
    # file level
    "caption folder missing": fail(lambda root: shutil.rmtree(root / "caption"), "caption"),
    "no caption file": fail(
        lambda root: [p.unlink() for p in (root / "caption").glob("*.txt")] and None,
        "caption",
        "no .txt",
    ),
    "image folder missing": fail(lambda root: shutil.rmtree(root / "image"), "image"),
    "caption not UTF-8": skip(_caption(4, NOT_UTF8), N - 1, "4.jpg", "not UTF-8"),
    "caption file a symlink loop": skip(_loop, N - 1, "4.jpg", "4.txt"),
    "caption with a BOM": ok(edit("caption/4.txt", lambda d: b"\xef\xbb\xbf" + d), N),
    "caption with CRLF": ok(edit("caption/4.txt", lambda d: d + b"\r\nMore.\r\n"), N),
    "caption an HTML page": ok(_caption(4, HTML), N),  # text all the same: scored as written
    # record level
    "caption empty": skip(_caption(4, b""), N - 1, "4.jpg", "empty"),
    "caption blank": skip(_caption(4, b" \n\t\n"), N - 1, "4.jpg", "empty"),
    "200 KB caption": ok(_caption(4, HUGE_TEXT.encode()), N),
    "a folder named like a caption": ok(lambda root: (root / "caption" / "99.txt").mkdir(), N),
    "caption names colliding after Unicode normalisation": skip(
        _nfc_twins, N + 1, "caf", "repeats"
    ),
    "Unicode caption name": ok(
        lambda root: (
            [
                (root / "caption" / "4.txt").rename(root / "caption" / "\u00e9t\u00e9.txt"),
                (root / "image" / "4.jpg").rename(root / "image" / "\u00e9t\u00e9.jpg"),
            ]
            and None
        ),
        N,
    ),
    # image level
    **photo_cases("image/7.jpg", "7.jpg", N),
    "caption without its photo": skip(_caption(13, b"A lonely caption.\n"), N, "13.jpg"),
    # split level
    "every caption empty": fail(_all_empty, "no usable record", "Urban1k"),
    "unknown split": fail(lambda root: None, "val", args=("--split", "val")),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.urban1k(tmp_path_factory.mktemp("urban1k")) / "Urban1k"


test_urban1k_bad_input, test_enough_cases, test_urban1k_strict_stops_at_the_bad_record = (
    family_tests(CASES, task=TASK)
)
