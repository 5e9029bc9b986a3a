"""ARO (VG-Relation) under bad input: one defect per case, through the CLI (tests/bad_input.py,
docs/data.md). Test cases have no id: they are named by ``relation#<index>``."""

from __future__ import annotations

import json
import shutil
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
from test_aro_vg import RELATION_CASES

TASK = "aro/vg_relation"
FILE = "visual_genome_relation.json"
GOOD = RELATION_CASES[:5]
N = len(GOOD)


def _cases(fn: Callable[[list[Any]], list[Any]]) -> Change:
    def change(root: Path) -> None:
        data = json.loads((root / FILE).read_text(encoding="utf-8"))
        (root / FILE).write_text(json.dumps(fn(data)), encoding="utf-8")

    return change


def _set(index: int, **changes: Any) -> Change:
    def fn(data: list[Any]) -> list[Any]:
        for key, value in changes.items():
            if value is _DELETE:
                del data[index][key]
            else:
                data[index][key] = value
        return data

    return _cases(fn)


_DELETE = object()

CASES: dict[str, Case] = {
    # file level
    "annotation file missing": fail(put(FILE, None), "visual_genome_relation"),
    "annotation file empty": fail(put(FILE, b""), FILE),
    "truncated mid-record": fail(edit(FILE, lambda d: d[: len(d) // 2]), FILE, "JSON"),
    "not UTF-8": fail(edit(FILE, lambda d: d.replace(b"the cup", NOT_UTF8)), FILE),
    "HTML error page": fail(put(FILE, HTML), FILE),
    "an object, not a list": fail(put(FILE, json.dumps({"0": GOOD[0]}).encode()), FILE, "list"),
    "a case nested too deeply": fail(
        edit(FILE, lambda d: d.rstrip()[:-1] + b", " + b"[" * 100_000 + b"]" * 100_001), FILE
    ),
    "BOM": ok(edit(FILE, lambda d: b"\xef\xbb\xbf" + d), N),
    "CRLF and indentation": ok(
        edit(FILE, lambda d: json.dumps(json.loads(d), indent=2).replace("\n", "\r\n").encode()),
        N,
    ),
    # record level
    "true_caption missing": skip(_set(1, true_caption=_DELETE), N - 1, "relation#1", "true"),
    "false_caption null": skip(_set(1, false_caption=None), N - 1, "relation#1", "false"),
    "caption a number": skip(_set(1, true_caption=3), N - 1, "relation#1", "true"),
    "caption empty": skip(_set(1, false_caption=""), N - 1, "relation#1", "false"),
    "200 KB caption": ok(_set(1, true_caption=HUGE_TEXT), N),
    "bbox a string": skip(_set(1, bbox_x="0"), N - 1, "relation#1", "bbox_x"),
    "bbox not finite": skip(_set(1, bbox_w=float("inf")), N - 1, "relation#1", "finite"),
    "relation_name missing": skip(_set(1, relation_name=_DELETE), N - 1, "relation#1"),
    "a case that is not an object": skip(_cases(lambda d: [*d, "text"]), N, "relation#5"),
    "bbox of 100k x 100k px": skip(
        _set(1, bbox_w=100_000, bbox_h=100_000), N - 1, "relation#1", "decompression-bomb"
    ),
    "the same case twice": ok(_cases(lambda d: [*d, d[0]]), N + 1),  # no id: both are scored
    # image level
    **photo_cases("images/grey.png", "relation#2", N),
    "image_path climbing out": skip(_set(1, image_path="../../x.png"), N - 1, "../../x.png"),
    "image_path absolute": skip(_set(1, image_path="/etc/hostname"), N - 1, "/etc/hostname"),
    # split level
    "an empty list": fail(put(FILE, b"[]"), "no usable record"),
    "every case bad": fail(_cases(lambda d: [x | {"true_caption": ""} for x in d]), "no usable"),
    "images folder missing": fail(lambda root: shutil.rmtree(root / "images"), "images"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.aro_vg(tmp_path_factory.mktemp("aro") / "aro", attribution=False)


test_aro_bad_input, test_enough_cases, test_aro_strict_stops_at_the_bad_record = family_tests(
    CASES, task=TASK
)
