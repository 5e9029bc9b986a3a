"""Winoground under bad input: one defect per case, through the CLI (tests/bad_input.py,
docs/data.md). Both layouts: the 2022 one (examples.jsonl with images unzipped, or images.zip)
and the Hub's parquet; examples are named ``ex_<id>``."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import releases
from bad_input import (
    DELETE,
    HTML,
    HUGE_TEXT,
    NOT_UTF8,
    Case,
    Change,
    edit,
    fail,
    family_tests,
    jsonl_append,
    jsonl_edit,
    ok,
    photo_bytes,
    photo_cases,
    png_header,
    put,
    skip,
)
from test_winoground import ROWS

TASK = "winoground"
N = len(ROWS)
LINES = "unzipped/data/examples.jsonl"
PARQUET = "hub/data/test-00000-of-00001.parquet"
FLAT, ZIPPED, HUB = "unzipped", "zipped", "hub"


def _row(index: int, **changes: object) -> Change:
    return jsonl_edit(LINES, index, **changes)


def _hub(column: str, index: int, value: Any) -> Change:
    """Set one cell of the Hub parquet (an image cell takes bytes)."""

    def change(root: Path) -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(root / PARQUET)
        rows = table.to_pylist()
        if column.startswith("image_"):
            rows[index][column] = {"bytes": value, "path": f"x{index}.png"}
        else:
            rows[index][column] = value
        pq.write_table(
            type(table).from_pylist(rows, schema=table.schema),
            root / PARQUET,
        )

    return change


def _schema(root: Path) -> None:
    import pandas as pd

    pd.DataFrame({"id": [0], "text": ["a"]}).to_parquet(root / PARQUET)


def _zip_member(data: bytes) -> Change:
    def change(root: Path) -> None:
        archive = root / ZIPPED / "data" / "images.zip"
        with zipfile.ZipFile(archive) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        members["images/ex_1_img_0.png"] = data
        with zipfile.ZipFile(archive, "w") as zf:
            for name, content in members.items():
                zf.writestr(name, content)

    return change


JPEG = photo_bytes(fmt="JPEG")

CASES: dict[str, Case] = {
    # file level
    "examples.jsonl missing": fail(put(LINES, None), "winoground", data=FLAT),
    "examples.jsonl empty": fail(put(LINES, b""), "no usable record", data=FLAT),
    "truncated mid-record": skip(edit(LINES, lambda d: d[:-20]), N - 1, "row 3", data=FLAT),
    "one line not UTF-8": skip(
        edit(LINES, lambda d: d.replace(b"a blue square", NOT_UTF8)),
        N - 1,
        "row 2",
        "UTF-8",
        data=FLAT,
    ),
    "an HTML page": fail(put(LINES, HTML), "examples.jsonl", "not JSON Lines", data=FLAT),
    "BOM": ok(edit(LINES, lambda d: b"\xef\xbb\xbf" + d), N, data=FLAT),
    "CRLF": ok(edit(LINES, lambda d: d.replace(b"\n", b"\r\n")), N, data=FLAT),
    "images.zip not a zip": fail(put(f"{ZIPPED}/data/images.zip", HTML), "images.zip", data=ZIPPED),
    "parquet that is not parquet": fail(put(PARQUET, HTML), "parquet", data=HUB),
    "parquet of another schema": fail(_schema, "parquet", "caption_0", data=HUB),
    # record level
    "caption missing": skip(_row(1, caption_0=DELETE), N - 1, "ex_1", "caption_0", data=FLAT),
    "caption null": skip(_row(1, caption_1=None), N - 1, "ex_1", "caption_1", data=FLAT),
    "caption a number": skip(_row(1, caption_0=3), N - 1, "ex_1", "caption_0", data=FLAT),
    "caption empty": skip(_row(1, caption_0=""), N - 1, "ex_1", "caption_0", data=FLAT),
    "id missing": skip(_row(1, id=DELETE), N - 1, "row 2", "no id", data=FLAT),
    "200 KB caption": ok(_row(1, caption_0=HUGE_TEXT), N, data=FLAT),
    "id listed twice": skip(
        jsonl_append(
            LINES,
            {
                "id": 1,
                "caption_0": "a",
                "caption_1": "b",
                "image_0": "ex_1_img_0",
                "image_1": "ex_1_img_1",
            },
        ),
        N,
        "ex_1",
        "row 4",
        data=FLAT,
    ),
    "ids colliding after Unicode normalisation": skip(
        jsonl_append(
            LINES,
            {
                "id": "caf\u00e9",
                "caption_0": "a",
                "caption_1": "b",
                "image_0": "ex_1_img_0",
                "image_1": "ex_1_img_1",
            },
            {
                "id": "cafe\u0301",
                "caption_0": "c",
                "caption_1": "d",
                "image_0": "ex_2_img_0",
                "image_1": "ex_2_img_1",
            },
        ),
        N + 1,
        "row 5",
        "repeats",
        data=FLAT,
    ),
    "Unicode id": ok(_row(1, id="\u00e9t\u00e9-1"), N, data=FLAT),
    # image level: unzipped files, zip members and embedded parquet images
    **{
        name: Case(c.change, c.expect, c.scored, c.names, c.n_skipped, data=FLAT)
        for name, c in photo_cases(f"{FLAT}/data/images/ex_1_img_0.png", "ex_1", N).items()
    },
    "zip member truncated": skip(
        _zip_member(JPEG[:300]), N - 1, "ex_1", "images.zip:images/ex_1_img_0.png", data=ZIPPED
    ),
    "zip member 30000x30000": skip(
        _zip_member(png_header(30_000, 30_000)), N - 1, "ex_1", "decompression", data=ZIPPED
    ),
    "embedded image truncated": skip(
        _hub("image_0", 1, JPEG[:300]), N - 1, "ex_1", "test-00000-of-00001.parquet", data=HUB
    ),
    "embedded image not an image": skip(
        _hub("image_1", 1, b"text"), N - 1, "ex_1", "not an image", data=HUB
    ),
    "embedded caption an empty string": skip(
        _hub("caption_0", 2, ""), N - 1, "ex_2", "caption_0", data=HUB
    ),
    # split level
    "Hub snapshot missing a shard": fail(
        lambda root: (root / PARQUET).rename(root / "hub/data/test-00000-of-00002.parquet"),
        "test-00001-of-00002.parquet",
        "incomplete",
        data=HUB,
    ),
    "every example bad": fail(
        edit(LINES, lambda d: d.replace(b'"caption_0"', b'"text"')), "no usable record", data=FLAT
    ),
    "images folder missing": fail(
        lambda root: shutil.rmtree(root / FLAT / "data" / "images"), "images", data=FLAT
    ),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.winoground(tmp_path_factory.mktemp("winoground") / "winoground")


test_winoground_bad_input, test_enough_cases, test_winoground_strict_stops_at_the_bad_record = (
    family_tests(CASES, task=TASK)
)
