"""VL-CheckList under bad input: one defect per case, through the CLI (tests/bad_input.py,
docs/data.md). ``vlc/relation`` reads four annotation files; the damaged one is
Relation_spatial_vg (three items; the other three files hold one item each). Items have no id:
they are named ``<file key>#<index>``."""

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
    run_case,
    skip,
)
from test_vlc import _item

TASK = "vlc/relation"
KEY = "Relation_spatial_vg"
FILE = f"data/{KEY}.json"
ITEMS = [
    _item("VG_100K_2/2.jpg", "a cup on a table", "a table on a cup"),
    _item("VG_100K/1.jpg", "a hat on a man", "a man on a hat"),
    _item("VG_100K/1.jpg", "a dog near a cat", "a cat near a dog"),
]
N = len(ITEMS) + 3


def _items(fn: Callable[[list[Any]], list[Any]]) -> Change:
    def change(root: Path) -> None:
        data = json.loads((root / FILE).read_text(encoding="utf-8"))
        (root / FILE).write_text(json.dumps(fn(data)), encoding="utf-8")

    return change


def _texts(index: int, side: str, value: Any) -> Change:
    def fn(data: list[Any]) -> list[Any]:
        if value is _DELETE:
            del data[index][1][side]
        else:
            data[index][1][side] = value
        return data

    return _items(fn)


def _path(index: int, value: str) -> Change:
    def fn(data: list[Any]) -> list[Any]:
        data[index][0] = value
        return data

    return _items(fn)


_DELETE = object()
YAML = "corpus/v1/Relation/spatial/vg.yaml"  # the file's config in the pinned tree


def _anno_path(value: str) -> Change:
    def change(root: Path) -> None:
        path = root / YAML
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(f'"{FILE}"', f'"{value}"'), encoding="utf-8")

    return change


CASES: dict[str, Case] = {
    # file level
    "annotation file missing": fail(put(FILE, None), KEY),
    "annotation file empty": fail(put(FILE, b""), KEY),
    "truncated mid-record": fail(edit(FILE, lambda d: d[: len(d) // 2]), KEY),
    "not UTF-8": fail(edit(FILE, lambda d: d.replace(b"a cup", NOT_UTF8)), KEY),
    "HTML error page": fail(put(FILE, HTML), KEY),
    "an object, not a list": fail(put(FILE, json.dumps({"0": ITEMS[0]}).encode()), KEY, "list"),
    "BOM": ok(edit(FILE, lambda d: b"\xef\xbb\xbf" + d), N),
    "CRLF and indentation": ok(
        edit(FILE, lambda d: json.dumps(json.loads(d), indent=2).replace("\n", "\r\n").encode()),
        N,
    ),
    "corpus.json missing": fail(put("corpus.json", None), "corpus.json"),
    "ANNO_PATH climbing out": fail(_anno_path("../../outside.json"), "ANNO_PATH", ".."),
    # record level
    "POS missing": skip(_texts(1, "POS", _DELETE), N - 1, f"{KEY}#1", "POS"),
    "NEG null": skip(_texts(1, "NEG", None), N - 1, f"{KEY}#1", "NEG"),
    "POS a number": skip(_texts(1, "POS", [5]), N - 1, f"{KEY}#1", "POS"),
    "first NEG empty": skip(_texts(1, "NEG", [""]), N - 1, f"{KEY}#1", "NEG"),
    "item a string": skip(_items(lambda d: [d[0], "x", d[2]]), N - 1, f"{KEY}#1"),
    "200 KB text": ok(_texts(1, "POS", [HUGE_TEXT]), N),
    "the same item twice": ok(_items(lambda d: [*d, d[1]]), N + 1),  # no id: both scored
    # image level
    **photo_cases("images/vg/VG_100K_2/2.jpg", f"{KEY}#0", N),
    "image path climbing out": skip(_path(1, "../../../x.jpg"), N - 1, f"{KEY}#1", ".."),
    "image path absolute": skip(_path(1, "/etc/hostname"), N - 1, f"{KEY}#1", "/etc/hostname"),
    # split level
    "every photo missing": fail(
        lambda root: [p.unlink() for p in (root / "images").rglob("*.jpg")] and None,
        "no usable record",
    ),
    "images folder missing": fail(lambda root: shutil.rmtree(root / "images"), "images"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.vlc(tmp_path_factory.mktemp("vlc") / "vlc")


test_vlc_bad_input, test_enough_cases, test_vlc_strict_stops_at_the_bad_record = family_tests(
    CASES, task=TASK
)


def test_a_suite_member_with_nothing_left_leaves_the_others_scored(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vlc`` runs three tasks; the object and attribute files hold no item: those two are
    reported failed (exit 1, one line each and a summary), and relation is still scored and
    stored."""
    from densecap_eval.datasets.vlc.loader import DCI_FILES

    def empty_but_relation(root: Path) -> None:
        for file in DCI_FILES:
            if not file.key.startswith("Relation"):
                (root / "data" / f"{file.key}.json").write_text("[]", encoding="utf-8")

    case = Case(empty_but_relation, "fail")
    outcome = run_case(release, tmp_path, case, task="vlc", capsys=capsys)
    assert outcome.code == 1 and "Traceback" not in outcome.err, outcome.err
    errors = [line for line in outcome.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, outcome.err  # one per task, and the summary
    assert "vlc/object: no usable record" in errors[0]
    assert "vlc/attribute: no usable record" in errors[1]
    assert "the other tasks ran and are stored" in errors[2]
    (run,) = outcome.runs
    assert run["status"] == "complete" and run["n_examples"] == N
