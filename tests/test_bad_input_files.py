"""Users' own files (``files``) under bad input: one defect per case, through the CLI
(tests/bad_input.py, docs/data.md). The same four captioned images as a JSONL, CSV and parquet
table, an imagefolder and a save_to_disk folder; each case damages one of them.

A user's own manifest may name absolute paths and paths outside its folder (relative ones
resolve against the manifest's folder): those are scored, unlike in a published release.
"""

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
    Change,
    edit,
    fail,
    family_tests,
    jsonl_append,
    jsonl_edit,
    ok,
    photo_bytes,
    photo_cases,
    put,
    skip,
)

TASK = "files/retrieval"
COLOURS = ["red", "green", "blue", "yellow"]
ROWS = [{"image": f"images/{c}.png", "caption": f"a plain {c} picture"} for c in COLOURS]
N = len(ROWS)
JSONL, CSV, PARQUET = "data.jsonl", "data.csv", "data.parquet"


def _row(index: int, **changes: object) -> Change:
    return jsonl_edit(JSONL, index, **changes)


def _absolute(root: Path) -> None:
    jsonl_edit(JSONL, 2, image=str((root / "images" / "blue.png").resolve()))(root)


def _outside(root: Path) -> None:
    outside = root.parent / "elsewhere"
    outside.mkdir()
    shutil.copy(root / "images" / "blue.png", outside / "blue.png")
    jsonl_edit(JSONL, 2, image="../elsewhere/blue.png")(root)


def _unicode_name(root: Path) -> None:
    (root / "images" / "blue.png").rename(root / "images" / "bl\u00e9u \U0001f600.png")
    jsonl_edit(JSONL, 2, image="images/bl\u00e9u \U0001f600.png")(root)


def _parquet(**columns: list[object]) -> Change:
    def change(root: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), root / PARQUET)

    return change


def _drop_shard(root: Path) -> None:
    (shard,) = (root / "saved").glob("*.arrow")
    shard.unlink()


CASES: dict[str, Case] = {
    # file level: JSONL
    "JSONL missing": fail(put(JSONL, None), JSONL, "no such file", data=JSONL),
    "JSONL empty": fail(put(JSONL, b""), JSONL, "no rows", data=JSONL),
    "JSONL truncated mid-record": skip(edit(JSONL, lambda d: d[:-12]), N - 1, "row 4", data=JSONL),
    "JSONL line not UTF-8": skip(
        edit(JSONL, lambda d: d.replace(b"plain green", NOT_UTF8)),
        N - 1,
        "row 2",
        "UTF-8",
        data=JSONL,
    ),
    "JSONL an HTML page": fail(put(JSONL, HTML), JSONL, "not JSON Lines", data=JSONL),
    "JSONL one array": fail(put(JSONL, json.dumps(ROWS).encode()), JSONL, data=JSONL),
    "JSONL BOM": ok(edit(JSONL, lambda d: b"\xef\xbb\xbf" + d), N, data=JSONL),
    "JSONL CRLF": ok(edit(JSONL, lambda d: d.replace(b"\n", b"\r\n")), N, data=JSONL),
    # record level
    "caption missing": skip(_row(1, caption=DELETE), N - 1, "row 2", "caption", data=JSONL),
    "caption null": skip(_row(1, caption=None), N - 1, "row 2", "caption", data=JSONL),
    "caption a number": skip(_row(1, caption=5), N - 1, "row 2", "caption", data=JSONL),
    "caption empty": skip(_row(1, caption=""), N - 1, "row 2", "caption", data=JSONL),
    "image a number": skip(_row(1, image=12), N - 1, "row 2", "image", data=JSONL),
    "200 KB caption": ok(_row(1, caption=HUGE_TEXT), N, data=JSONL),
    # rows naming one image are one record with several captions (module doc of files)
    "an image on two rows": ok(jsonl_append(JSONL, ROWS[1] | {"caption": "again"}), N, data=JSONL),
    "Unicode image name": ok(_unicode_name, N, data=JSONL),
    # image level
    **{
        name: Case(c.change, c.expect, c.scored, c.names, c.n_skipped, data=JSONL)
        for name, c in photo_cases("images/blue.png", "blue.png", N).items()
    },
    "absolute image path (allowed in a user's manifest)": ok(_absolute, N, data=JSONL),
    "image path outside the manifest's folder (allowed)": ok(_outside, N, data=JSONL),
    "absolute path to a file that is no image": skip(
        _row(2, image="/etc/hostname"), N - 1, "row 3", "/etc/hostname", data=JSONL
    ),
    "every row bad": fail(
        edit(JSONL, lambda d: d.replace(b'"caption"', b'"text"')), "caption", data=JSONL
    ),
    # CSV
    "CSV header only": fail(put(CSV, b"image,caption\n"), CSV, "no rows", data=CSV),
    "CSV BOM": ok(edit(CSV, lambda d: b"\xef\xbb\xbf" + d), N, data=CSV),
    "CSV CRLF": ok(edit(CSV, lambda d: d.replace(b"\n", b"\r\n")), N, data=CSV),
    "CSV row with an extra field": skip(
        edit(CSV, lambda d: d.replace(b"green picture", b"green picture,extra")),
        N - 1,
        "row 2",
        "fields",
        data=CSV,
    ),
    "CSV row not UTF-8": skip(
        edit(CSV, lambda d: d.replace(b"plain green", NOT_UTF8)), N - 1, "row 2", "UTF-8", data=CSV
    ),
    "CSV truncated inside a quoted caption": skip(
        edit(CSV, lambda d: d + b'images/red.png,"a red picture that sto'), N, "row 5", data=CSV
    ),
    "CSV 200 KB caption": ok(
        edit(CSV, lambda d: d.replace(b"a plain green picture", f'"{HUGE_TEXT}"'.encode())),
        N,
        data=CSV,
    ),
    "CSV without the caption column": fail(
        edit(CSV, lambda d: d.replace(b"caption", b"text", 1)), CSV, "caption column", data=CSV
    ),
    # parquet
    "parquet that is not parquet": fail(put(PARQUET, HTML), PARQUET, data=PARQUET),
    "parquet with an int caption column": fail(
        _parquet(image=[r["image"] for r in ROWS], caption=[1, 2, 3, 4]),
        "no usable record",
        "caption",
        data=PARQUET,
    ),
    "parquet of another schema": fail(
        _parquet(path=[r["image"] for r in ROWS], caption=["a"] * 4),
        PARQUET,
        "image column",
        data=PARQUET,
    ),
    # imagefolder and save_to_disk
    "imagefolder row naming a missing file": skip(
        put("folder/green.png", None), N - 1, "green.png", data="folder"
    ),
    "imagefolder photo truncated": skip(
        put("folder/green.png", photo_bytes(fmt="JPEG")[:200]), N - 1, "green.png", data="folder"
    ),
    "save_to_disk missing its shard": fail(_drop_shard, "saved", data="saved"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.files(tmp_path_factory.mktemp("files") / "files")


test_files_bad_input, test_enough_cases, test_files_strict_stops_at_the_bad_record = family_tests(
    CASES, task=TASK
)
