"""IIW under bad input: one defect per case, through the CLI (tests/bad_input.py, docs/data.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import releases
from bad_input import (
    DELETE,
    HTML,
    HUGE_TEXT,
    NOT_UTF8,
    Case,
    edit,
    fail,
    family_tests,
    jsonl_append,
    jsonl_edit,
    ok,
    photo_cases,
    put,
    skip,
)
from test_datasets_iiw import DATA

TASK = "iiw/retrieval"
N = 7  # the pool of the valid release
FILE = "datasets/IIW-400/data.jsonl"
IIW400 = DATA["IIW-400"]


def _row(index: int, **changes: object) -> object:
    return jsonl_edit(FILE, index, **changes)


CASES: dict[str, Case] = {
    # file level: one subset file unusable refuses the release (the pool needs all three)
    "subset file missing": fail(put(FILE, None), "IIW-400", "data.jsonl"),
    "subset file empty": fail(put(FILE, b""), "IIW-400/data.jsonl"),
    "HTML error page": fail(put(FILE, HTML), "IIW-400/data.jsonl", "not JSON Lines"),
    "one JSON array": fail(put(FILE, json.dumps(IIW400).encode()), "IIW-400/data.jsonl"),
    "truncated mid-record": skip(edit(FILE, lambda d: d[:-30]), N - 1, "IIW-400", "line 3"),
    "one line not UTF-8": skip(
        edit(FILE, lambda d: d.replace(b"orange cat", NOT_UTF8)), N - 1, "line 3", "UTF-8"
    ),
    "BOM": ok(edit(FILE, lambda d: b"\xef\xbb\xbf" + d), N),
    "CRLF": ok(edit(FILE, lambda d: d.replace(b"\n", b"\r\n")), N),
    # record level
    "IIW missing": skip(_row(2, IIW=DELETE), N - 1, "aar_test_04602", "missing field IIW"),
    "IIW null": skip(_row(2, IIW=None), N - 1, "aar_test_04602", "not a string"),
    "IIW a number": skip(_row(2, IIW=3.5), N - 1, "aar_test_04602", "not a string"),
    "IIW empty": skip(_row(2, IIW="  "), N - 1, "aar_test_04602", "empty"),
    "photo name a list": skip(_row(2, **{"image/key": ["x"]}), N - 1, "line 3"),
    "200 KB IIW": ok(_row(2, IIW=HUGE_TEXT), N),
    "photo listed twice": skip(jsonl_append(FILE, IIW400[2]), N, "aar_test_04602", "line 4"),
    "photo name colliding after Unicode normalisation": skip(
        jsonl_append(
            FILE,
            {"IIW": "A caf\u00e9.", "image/key": "caf\u00e9"},
            {"IIW": "A cafe.", "image/key": "cafe\u0301"},
        ),
        N + 1,
        "line 5",
    ),
    # image level
    **photo_cases("docci_aar/aar_test_04602.jpg", "aar_test_04602", N),
    "photo name climbing out": skip(
        _row(2, **{"image/key": "../../x"}), N - 1, "line 3", "../../x"
    ),
    "photo name absolute": skip(_row(2, **{"image/key": "/etc/hostname"}), N - 1, "line 3"),
    # split level
    "photo folder missing": fail(lambda root: shutil.rmtree(root / "docci_aar"), "docci_aar"),
    "every record of the split bad": fail(
        put(FILE, b'{"IIW": ""}\n'), "no usable record", args=("--split", "IIW-400")
    ),
    "unknown split": fail(lambda root: None, "IIW-4000", args=("--split", "IIW-4000")),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.iiw(tmp_path_factory.mktemp("iiw") / "iiw")


test_iiw_bad_input, test_enough_cases, test_iiw_strict_stops_at_the_bad_record = family_tests(
    CASES, task=TASK
)
