"""The shared bad-input helpers (densecap_eval/datasets/guards.py), case by case."""

from __future__ import annotations

from pathlib import Path

import pytest

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.guards import (
    SeenIds,
    iter_json_lines,
    missing_shards,
    release_path,
    unsafe_reason,
    user_path,
)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("images/a.jpg", None),
        ("a..b.jpg", None),  # dots inside a name are no climb
        ("\u00e9t\u00e9/\U0001f600.png", None),
        ("", "is empty"),
        ("/etc/passwd", "is absolute"),
        ("C:\\photos\\a.jpg", "is absolute"),
        ("\\\\server\\share\\a.jpg", "is absolute"),
        ("~/a.jpg", "is absolute"),
        ("../x.jpg", "climbs out"),
        ("images/../../x.jpg", "climbs out"),
        ("images\\..\\..\\x.jpg", "climbs out"),
        ("a\0b.jpg", "NUL"),
    ],
)
def test_unsafe_reason(path: str, reason: str | None) -> None:
    got = unsafe_reason(path)
    assert (got is None) if reason is None else (got is not None and reason in got), got


def test_release_path_refuses_without_opening(tmp_path: Path) -> None:
    assert release_path(tmp_path, "a/b.jpg", image="r1", what="image") == tmp_path / "a/b.jpg"
    with pytest.raises(BadRecordError) as info:
        release_path(tmp_path, "../../x.jpg", image="r1", what="image")
    assert info.value.image == "r1" and "'../../x.jpg' climbs out" in info.value.reason
    with pytest.raises(BadRecordError, match="not a string"):
        release_path(tmp_path, 5, image="r1", what="image")


def test_user_path_allows_absolute_and_resolves_relative(tmp_path: Path) -> None:
    assert user_path(tmp_path, "/data/x.jpg") == Path("/data/x.jpg")
    assert user_path(tmp_path, "../x.jpg") == tmp_path / "../x.jpg"


def test_seen_ids_compare_after_nfc() -> None:
    seen = SeenIds("id")
    seen.check("caf\u00e9", where="line 1")
    seen.check("cafe", where="line 2")
    with pytest.raises(BadRecordError, match="repeats the one at line 1") as info:
        seen.check("cafe\u0301", where="line 3")
    assert info.value.image == "cafe\u0301"


def test_json_lines_one_bad_line_each(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"a": 1}\r\n\n[1]\n{"b": \n{"c": "caf\xe9"}\n' + b"[" * 50_000 + b"\n"
    )
    got = [(n, v, p.split(" (")[0] if p else None) for n, v, p in iter_json_lines(path)]
    assert got == [
        (1, {"a": 1}, None),
        (3, None, "not a JSON object"),
        (4, None, "invalid JSON"),
        (5, None, "not UTF-8 text"),
        (6, None, "invalid JSON"),
    ]
    with pytest.raises(DatasetError, match="cannot read"):
        list(iter_json_lines(tmp_path / "missing.jsonl"))


def test_missing_shards() -> None:
    names = [Path(f"test-0000{i}-of-00003.parquet") for i in (0, 2)]
    assert missing_shards(names) == ["test-00001-of-00003.parquet"]
    assert missing_shards([Path("test.parquet"), Path("x-00000-of-00001.parquet")]) == []
