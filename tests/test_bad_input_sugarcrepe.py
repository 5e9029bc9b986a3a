"""SugarCrepe under bad input: one defect per case, through the CLI (tests/bad_input.py,
docs/data.md). Items are named ``<category>/<key>``."""

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
from test_sugarcrepe import SWAP_ATT

TASK = "sugarcrepe/swap_att"
FILE = "data/swap_att.json"
N = len(SWAP_ATT)
PHOTOS = "coco/images/val2017"


def _items(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Change:
    def change(root: Path) -> None:
        data = json.loads((root / FILE).read_text(encoding="utf-8"))
        (root / FILE).write_text(json.dumps(fn(data)), encoding="utf-8")

    return change


def _set(key: str, field: str, value: Any) -> Change:
    def fn(data: dict[str, Any]) -> dict[str, Any]:
        if value is _DELETE:
            del data[key][field]
        else:
            data[key][field] = value
        return data

    return _items(fn)


_DELETE = object()


def _rename_7(data: dict[str, Any]) -> dict[str, Any]:
    return {("\u00e9t\u00e9" if key == "7" else key): value for key, value in data.items()}


def _repeat_key(data: bytes) -> bytes:
    """The item of key "7" written again under key "2" (json.dumps cannot repeat a key)."""
    return data.rstrip()[:-1] + b', "2": ' + json.dumps(SWAP_ATT["7"]).encode() + b"}"


CASES: dict[str, Case] = {
    # file level
    "category file missing": fail(put(FILE, None), "SugarCrepe"),
    "category file empty": fail(put(FILE, b""), "swap_att.json"),
    "truncated mid-record": fail(edit(FILE, lambda d: d[: len(d) // 2]), "swap_att.json"),
    "not UTF-8": fail(edit(FILE, lambda d: d.replace(b"green leaves", NOT_UTF8)), "swap_att.json"),
    "HTML error page": fail(put(FILE, HTML), "swap_att.json"),
    "a list, not an object": fail(
        put(FILE, json.dumps(list(SWAP_ATT.values())).encode()), "swap_att.json", "object"
    ),
    "BOM": ok(edit(FILE, lambda d: b"\xef\xbb\xbf" + d), N),
    "CRLF and indentation": ok(
        edit(FILE, lambda d: json.dumps(json.loads(d), indent=2).replace("\n", "\r\n").encode()),
        N,
    ),
    # record level
    "caption missing": skip(_set("7", "caption", _DELETE), N - 1, "swap_att/7", "caption"),
    "negative_caption null": skip(
        _set("7", "negative_caption", None), N - 1, "swap_att/7", "negative_caption"
    ),
    "caption a number": skip(_set("7", "caption", 7), N - 1, "swap_att/7", "caption"),
    "caption empty": skip(_set("7", "caption", " "), N - 1, "swap_att/7", "caption"),
    "item a string": skip(_items(lambda d: d | {"7": "x"}), N - 1, "swap_att/7", "str"),
    "200 KB caption": ok(_set("7", "caption", HUGE_TEXT), N),
    "a key listed twice": skip(edit(FILE, _repeat_key), N, "swap_att/2", "twice"),
    "keys colliding after Unicode normalisation": skip(
        _items(lambda d: d | {"caf\u00e9": SWAP_ATT["7"], "cafe\u0301": SWAP_ATT["0"]}),
        N + 1,
        "cafe\u0301",
        "repeats",
    ),
    "Unicode key": ok(_items(_rename_7), N),
    # image level
    **photo_cases(f"{PHOTOS}/000000000003.png", "swap_att/7", N),
    "filename climbing out": skip(
        _set("7", "filename", "../../../x.png"), N - 1, "swap_att/7", "../../../x.png"
    ),
    "filename absolute": skip(
        _set("7", "filename", "/etc/hostname"), N - 1, "swap_att/7", "/etc/hostname"
    ),
    # split level
    "an empty object": fail(put(FILE, b"{}"), "no usable record"),
    "every item bad": fail(_items(lambda d: {k: {} for k in d}), "no usable record"),
    "photo folder missing": fail(lambda root: shutil.rmtree(root / "coco"), "val2017"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sugarcrepe") / "sugarcrepe"
    return releases.sugarcrepe(root, categories=["swap_att"])


test_sugarcrepe_bad_input, test_enough_cases, test_sugarcrepe_strict_stops_at_the_bad_record = (
    family_tests(CASES, task=TASK)
)
