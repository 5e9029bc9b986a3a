"""ShareGPT4V under bad input: one defect per case, through the CLI (tests/bad_input.py,
docs/data.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from test_datasets_sharegpt4v import CAPTIONER, GOOD_CAPTIONER, _record, _save_photo

TASK = "sharegpt4v/retrieval-1k"
N = len(GOOD_CAPTIONER)


def _records(fn: Callable[[list[Any]], list[Any]]) -> Change:
    """Rewrite the annotation array through ``fn`` (a copy of the records)."""

    def change(root: Path) -> None:
        records = json.loads((root / CAPTIONER).read_text(encoding="utf-8"))
        text = json.dumps(fn(records), indent=4, ensure_ascii=False)
        (root / CAPTIONER).write_text(text, encoding="utf-8")

    return change


def _set(index: int, key: str, value: Any) -> Change:
    def fn(records: list[Any]) -> list[Any]:
        if value is _DELETE:
            del records[index][key]
        else:
            records[index][key] = value
        return records

    return _records(fn)


def _caption(index: int, value: Any) -> Change:
    def fn(records: list[Any]) -> list[Any]:
        records[index]["conversations"][1]["value"] = value
        return records

    return _records(fn)


_DELETE = object()
SA2 = "sam/images/sa_2.jpg"  # record 4


def _nfc_twins(root: Path) -> None:
    for image in ("sam/images/caf\u00e9.jpg", "sam/images/cafe\u0301.jpg"):
        _save_photo(root / image, (10, 20, 30))
    _records(
        lambda r: [
            *r,
            _record("c1", "sam/images/caf\u00e9.jpg", "A caf\u00e9."),
            _record("c2", "sam/images/cafe\u0301.jpg", "Another caf\u00e9."),
        ]
    )(root)


CASES: dict[str, Case] = {
    # file level
    "annotation file missing": fail(put(CAPTIONER, None), "share-captioner"),
    "annotation file empty": fail(put(CAPTIONER, b""), CAPTIONER),
    "truncated mid-record": fail(edit(CAPTIONER, lambda d: d[: len(d) // 2]), CAPTIONER),
    "not UTF-8": fail(edit(CAPTIONER, lambda d: d.replace(b"harbour", NOT_UTF8)), CAPTIONER),
    "HTML error page": fail(put(CAPTIONER, HTML), CAPTIONER),
    "an object, not an array": fail(
        put(CAPTIONER, json.dumps({"data": GOOD_CAPTIONER}).encode()), CAPTIONER
    ),
    "an element nested too deeply": fail(
        edit(CAPTIONER, lambda d: d.rstrip()[:-1] + b", " + b"[" * 100_000 + b"]" * 100_001),
        CAPTIONER,
        "nested",
    ),
    "BOM": ok(edit(CAPTIONER, lambda d: b"\xef\xbb\xbf" + d), N),
    "CRLF": ok(edit(CAPTIONER, lambda d: d.replace(b"\n", b"\r\n")), N),
    # record level
    "image field missing": skip(_set(4, "image", _DELETE), N - 1, "sa_2", "no image path"),
    "image null": skip(_set(4, "image", None), N - 1, "sa_2", "no image path"),
    "conversations a string": skip(_set(4, "conversations", "hi"), N - 1, SA2, "gpt turn"),
    "caption null": skip(_caption(4, None), N - 1, SA2, "no text value"),
    "caption a number": skip(_caption(4, 7), N - 1, SA2, "no text value"),
    "caption empty": skip(_caption(4, ""), N - 1, SA2, "empty"),
    "200 KB caption": ok(_caption(4, HUGE_TEXT), N),
    "image listed twice": skip(
        _records(lambda r: [*r, r[4]]), N, SA2, "record 7", "repeats the one at record 4"
    ),
    "image colliding after Unicode normalisation": skip(_nfc_twins, N + 1, "record 8"),
    "Unicode id": ok(_set(4, "id", "\u00e9t\u00e9-\U0001f600"), N),
    # image level
    **photo_cases(SA2, SA2, N),
    "image climbing out": skip(_set(4, "image", "../../x.jpg"), N - 1, "../../x.jpg"),
    "image absolute": skip(_set(4, "image", "/etc/hostname"), N - 1, "/etc/hostname"),
    # split level
    "every record bad": fail(
        _records(lambda r: [{"id": x["id"]} for x in r]), "no usable record", "no image path"
    ),
    "an empty array": fail(put(CAPTIONER, b"[]"), "no usable record"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.sharegpt4v(tmp_path_factory.mktemp("sharegpt4v") / "data", sam10k=False)


test_sharegpt4v_bad_input, test_enough_cases, test_sharegpt4v_strict_stops_at_the_bad_record = (
    family_tests(CASES, task=TASK)
)
