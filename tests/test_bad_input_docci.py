"""DOCCI under bad input: one defect per case, through the CLI (tests/bad_input.py, docs/data.md)."""

from __future__ import annotations

import json
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
from test_datasets_docci import DESCRIPTIONS, RECORDS, rec

TASK = "docci/retrieval"
N = 4  # test records of the valid release


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _record(target: str, /, **changes: object) -> Change:
    """Rewrite the line of ``example_id`` (a field set to ..., deleted with a DELETE value)."""

    def fn(data: bytes) -> bytes:
        out = []
        for line in _lines(data):
            raw = json.loads(line)
            if raw["example_id"] == target:
                for key, value in changes.items():
                    if value is DELETE:
                        del raw[key]
                    else:
                        raw[key] = value
                line = (json.dumps(raw) + "\n").encode()
            out.append(line)
        return b"".join(out)

    return edit(DESCRIPTIONS, fn)


DELETE = object()


def _append(*lines: bytes) -> Change:
    return edit(DESCRIPTIONS, lambda data: data + b"".join(lines))


def _dup_line(example_id: str, **changes: object) -> Change:
    raw = next(r for r in RECORDS if r["example_id"] == example_id) | changes
    return _append((json.dumps(raw) + "\n").encode())


CASES: dict[str, Case] = {
    # file level
    "descriptions missing": fail(put(DESCRIPTIONS, None), DESCRIPTIONS, "not found"),
    "descriptions empty": fail(put(DESCRIPTIONS, b""), DESCRIPTIONS, "empty"),
    "HTML error page": fail(put(DESCRIPTIONS, HTML), DESCRIPTIONS, "not JSON Lines"),
    "one JSON array instead of lines": fail(
        put(DESCRIPTIONS, json.dumps(RECORDS).encode()), DESCRIPTIONS
    ),
    "UTF-16": fail(edit(DESCRIPTIONS, lambda d: d.decode().encode("utf-16")), DESCRIPTIONS),
    "truncated mid-record": skip(
        edit(DESCRIPTIONS, lambda d: d[: d.rindex(b'"description"') + 20]), N - 1, "line 7"
    ),
    "one line not UTF-8": skip(
        edit(DESCRIPTIONS, lambda d: d.replace(b"Four green", NOT_UTF8)),
        N - 1,
        "line 7",
        "UTF-8",
    ),
    "a line nested too deeply": skip(
        edit(DESCRIPTIONS, lambda d: d + b"[" * 100_000 + b"]" * 100_000 + b"\n"),
        N,
        "line 8",
        "nested",
    ),
    "BOM": ok(edit(DESCRIPTIONS, lambda d: b"\xef\xbb\xbf" + d), N),
    "CRLF": ok(edit(DESCRIPTIONS, lambda d: d.replace(b"\n", b"\r\n")), N),
    # record level
    "description missing": skip(_record("test_00001", description=DELETE), N - 1, "test_00001"),
    "description null": skip(_record("test_00001", description=None), N - 1, "test_00001"),
    "description a number": skip(_record("test_00001", description=42), N - 1, "test_00001"),
    "example_id a list": skip(_record("test_00001", example_id=["x"]), N - 1, "line 3"),
    "description empty": skip(_record("test_00001", description=""), N - 1, "test_00001"),
    "200 KB description": ok(_record("test_00001", description=HUGE_TEXT), N),
    "duplicate example_id": skip(_dup_line("test_00001"), N, "test_00001", "line 8"),
    "id colliding after Unicode normalisation": skip(
        _append(
            (json.dumps(rec("test_caf\u00e9", "A cup.", "test_00000.jpg")) + "\n").encode(),
            (json.dumps(rec("test_cafe\u0301", "A mug.", "test_00000.jpg")) + "\n").encode(),
        ),
        N + 1,
        "line 9",
    ),
    "Unicode id": ok(_record("test_00001", example_id="test_\u00e9t\u00e9_01"), N),
    # image level
    **photo_cases("images/test_00000.jpg", "test_00000", N),
    "image_file climbing out": skip(
        _record("test_00000", image_file="../../x.jpg"), N - 1, "test_00000", "../../x.jpg"
    ),
    "image_file absolute": skip(
        _record("test_00000", image_file="/etc/hostname"), N - 1, "test_00000", "/etc/hostname"
    ),
    # split level
    "no test record": fail(
        edit(DESCRIPTIONS, lambda d: d.replace(b'"split": "test"', b'"split": "tesst"')),
        DESCRIPTIONS,
        "test",
    ),
    "every test record bad": fail(
        edit(DESCRIPTIONS, lambda d: d.replace(b'"description": "', b'"description": 1, "x": "')),
        DESCRIPTIONS,
        "no usable record",
    ),
    "photo folder missing": fail(lambda root: shutil.rmtree(root / "images"), "images"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.docci(tmp_path_factory.mktemp("docci") / "docci")


test_docci_bad_input, test_enough_cases, test_docci_strict_stops_at_the_bad_record = family_tests(
    CASES, task=TASK
)
