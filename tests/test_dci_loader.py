"""Reading the DCI release: layout checks, record parsing, masks, laziness (docs/protocols/dci.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from dci_records import add_sdci, bounds_dict, make_mask, make_record, write_release
from PIL import Image

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.datasets.dci.masks import decode_mask, parse_bounds
from densecap_eval.datasets.dci.records import Bounds

# --- the release as a whole -----------------------------------------------------------------


def _good(tmp_path: Path) -> Path:
    return write_release(tmp_path / "root", {"a.json": make_record("a.jpg")})


def _rm(rel: str):
    def change(root: Path) -> None:
        target = root / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return change


def _write(rel: str, text: str):
    def change(root: Path) -> None:
        (root / rel).write_text(text)

    return change


SPLITS = "densely_captioned_images/splits.json"


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (_rm(""), "", "does not exist"),
        (_rm("densely_captioned_images"), "densely_captioned_images", "not found"),
        (_rm(SPLITS), SPLITS, "not found"),
        (_write(SPLITS, "{nope"), SPLITS, "not valid JSON"),
        (_write(SPLITS, "[]"), SPLITS, "must be a JSON object"),
        (_write(SPLITS, '{"test": [1]}'), SPLITS, "split 'test' must be a list"),
        (
            _rm("densely_captioned_images/complete"),
            "densely_captioned_images/complete",
            "needs complete/",
        ),
        (
            _rm("densely_captioned_images/photos"),
            "densely_captioned_images/photos",
            "needs photos/",
        ),
    ],
)
def test_release_problems_raise_at_once(tmp_path: Path, change, where: str, problem: str) -> None:
    root = _good(tmp_path)
    change(root)
    with pytest.raises(DatasetError) as info:
        DCIDataset(root)
    message = str(info.value)
    assert str(root / where) in message and problem in message


def test_splits_and_unknown_split(tmp_path: Path) -> None:
    root = write_release(
        tmp_path,
        {"a.json": make_record("a.jpg"), "b.json": make_record("b.jpg")},
        splits={"train": ["b.json"], "valid": [], "test": ["a.json", "b.json"]},
    )
    ds = DCIDataset(str(root))
    assert ds.base == root / "densely_captioned_images"
    assert ds.split_members() == {"train": ["b.json"], "valid": [], "test": ["a.json", "b.json"]}
    assert ds.splits() == ["train", "valid", "test"]
    assert ds.split("test") == ["a.json", "b.json"]
    assert ds.record_path("a.json") == root / "densely_captioned_images/complete/a.json"
    with pytest.raises(DatasetError, match=r"unknown split 'dev'.*known: test, train, valid"):
        ds.split("dev")


def test_fingerprint_is_splits_bytes_and_record_sizes(tmp_path: Path) -> None:
    root = write_release(
        tmp_path / "a",
        {"a.json": make_record("a.jpg"), "b.json": make_record("b.jpg"), "gone.json": None},
        splits={"train": ["b.json"], "test": ["a.json", "gone.json"]},
    )
    ds = DCIDataset(root)
    base = root / "densely_captioned_images"
    expected = hashlib.sha256((base / "splits.json").read_bytes())
    for split, name in [("test", "a.json"), ("test", "gone.json"), ("train", "b.json")]:
        path = base / "complete" / name
        size = path.stat().st_size if path.exists() else -1  # a missing record counts as -1
        expected.update(json.dumps([split, name, size]).encode("utf-8"))
    got = ds.fingerprint(["train", "test", "test"])  # sorted and deduplicated
    assert got == expected.hexdigest()
    # Copying the release elsewhere keeps it; a record that changes size, or another split, not.
    shutil.copytree(root, tmp_path / "copy")
    assert DCIDataset(tmp_path / "copy").fingerprint(["test", "train"]) == got
    assert ds.fingerprint(["test"]) != got
    (base / "complete" / "b.json").write_text(json.dumps(make_record("b.jpg")) + " ")
    assert ds.fingerprint(["test", "train"]) != got
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        ds.fingerprint(["dev"])


# --- one record -----------------------------------------------------------------------------


def test_load_record_parses_every_field(tmp_path: Path) -> None:
    masks = [
        make_mask(
            9,
            label="cat",
            caption="grey",
            bounds=(5, 6, 300, 310),
            children=[2, "2", "02", 7, None],
        ),
        make_mask(2, label="paw", quality=1, parent=9, bounds=(10, 20, 30, 40)),
    ]
    record = add_sdci(
        make_record("dir/a.jpg", short_caption="S", extra_caption="E", masks=masks),
        bags={"base": 2},
    )
    del record["mask_keys"]  # never read by the reference: optional
    ds = DCIDataset(write_release(tmp_path, {"a.json": record}))
    rec = ds.load_record("a.json")
    assert (rec.name, rec.image, rec.short_caption, rec.extra_caption) == (
        "a.json",
        "dir/a.jpg",
        "S",
        "E",
    )
    assert list(rec.masks) == [9, 2]  # mask_data order, not sorted
    assert rec.mask_keys == ("9", "2")
    cat = rec.masks[9]
    assert (cat.idx, cat.label, cat.caption, cat.quality, cat.parent) == (9, "cat", "grey", 0, -1)
    assert cat.bounds == Bounds(5, 6, 300, 310) and cat.bounds_error is None
    # Children as the reference looks them up (str(item) in mask_data): "02" and None never match.
    assert cat.children == (2, 2, 7)
    assert rec.masks[2].quality == 1 and rec.masks[2].parent == 9
    assert rec.summaries == {
        "base": ["base summary 0", "base summary 1"],
        "m-9-sc": "m-9-sc summary",
    }
    assert rec.negatives is not None and rec.negatives["base"]["layout"] == [
        "base layout 0",
        "base layout 1",
    ]
    assert rec.clip_scores is not None and rec.clip_scores["m-9-sc"]["basic_1"] == 21.0
    assert photo_of(ds, rec) == ds.base / "photos/dir/a.jpg"


def photo_of(ds: DCIDataset, rec) -> Path:
    return ds.photo_path(rec)


def test_optional_sdci_fields_may_be_absent_or_null(tmp_path: Path) -> None:
    ds = DCIDataset(write_release(tmp_path, {"a.json": make_record("a.jpg", summaries=None)}))
    rec = ds.load_record("a.json")
    assert (rec.summaries, rec.negatives, rec.clip_scores) == (None, None, None)


@pytest.mark.parametrize(
    ("raw", "bounds", "problem"),
    [
        (bounds_dict(1, 2, 300, 400), Bounds(1, 2, 300, 400), None),
        (
            bounds_dict(400, 300, 2, 1),
            Bounds(400, 300, 2, 1),
            None,
        ),  # inverted: kept, never a subcrop
        (bounds_dict(-50, -60, 5000, 6000), Bounds(-50, -60, 5000, 6000), None),  # overruns: kept
        (
            bounds_dict(1.5, 2.0, 100.9, 50.2),
            Bounds(1, 2, 100, 50),
            None,
        ),  # non-integer, too small to crop
        (bounds_dict(float("nan"), 0, 10, 10), Bounds(0, 0, 0, 10), None),
        (
            bounds_dict(0.5, 0, 300.5, 300),
            None,
            "non-integer bounds",
        ),  # would be cropped: numpy refuses
        (bounds_dict("1", 2, 300, 400), None, "non-numeric bounds"),
        (bounds_dict(None, 2, 300, 400), None, "non-numeric bounds"),
        ({"topLeft": {"x": 1}}, None, "bounds missing or malformed"),
        (None, None, "bounds missing or malformed"),
    ],
)
def test_parse_bounds(raw: object, bounds: Bounds | None, problem: str | None) -> None:
    got, error = parse_bounds(raw)
    if problem is None:
        assert (got, error) == (bounds, None)
    else:
        assert error is not None and problem in error


def test_decode_mask_on_demand(tmp_path: Path) -> None:
    mask = make_mask(1, bounds=(2, 1, 5, 3), photo_size=(8, 6))
    ds = DCIDataset(write_release(tmp_path, {"a.json": make_record("a.jpg", masks=[mask])}))
    decoded = decode_mask(ds.load_record("a.json").masks[1])
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:3, 2:5] = True
    assert decoded.dtype == np.bool_ and np.array_equal(decoded, expected)


@pytest.mark.parametrize("outer", ["", "not base64 at all!", "aGVsbG8="])
def test_decode_mask_errors_name_the_mask(tmp_path: Path, outer: str) -> None:
    mask = make_mask(4, bounds=(0, 0, 2, 2), photo_size=None) | {"outer_mask": outer}
    ds = DCIDataset(write_release(tmp_path, {"a.json": make_record("a.jpg", masks=[mask])}))
    with pytest.raises(BadRecordError, match=r"a\.json: mask 4"):
        decode_mask(ds.load_record("a.json").masks[4], image="a.json")


# --- laziness -------------------------------------------------------------------------------


def test_iter_records_never_opens_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_release(tmp_path, {f"{i}.json": make_record(f"{i}.jpg") for i in range(3)})
    for photo in (root / "densely_captioned_images/photos").iterdir():
        photo.unlink()

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("a photo was opened")

    monkeypatch.setattr(Image, "open", no_open)
    ds = DCIDataset(root)
    assert [r.name for r in ds.iter_records("test")] == ["0.json", "1.json", "2.json"]
    assert ds.skipped == []


def test_iterating_keeps_memory_flat(tmp_path: Path) -> None:
    # 60 records of ~200 kB each: holding them would take ~12 MB; iterating must hold about one.
    big = "x" * 200_000
    root = write_release(
        tmp_path, {f"{i}.json": make_record("p.jpg", extra_caption=big) for i in range(60)}
    )
    ds = DCIDataset(root)
    tracemalloc.start()
    try:
        count = sum(1 for _ in ds.iter_records("test"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 60
    assert peak < 3_000_000


def test_skipped_lists_an_image_once(tmp_path: Path) -> None:
    ds = DCIDataset(write_release(tmp_path, {"a.json": "{", "b.json": make_record("b.jpg")}))
    for _ in range(2):
        assert [r.name for r in ds.iter_records("test")] == ["b.json"]
    assert [s.image for s in ds.skipped] == ["a.json"]
    assert ds.skipped[0].to_dict()["reason"].startswith("invalid JSON")


def test_records_are_plain_json(tmp_path: Path) -> None:
    # The helper writes exactly the release's JSON (a sanity check the other tests rely on).
    root = write_release(
        tmp_path, {"a.json": make_record("a.jpg", masks=[make_mask(3, photo_size=None)])}
    )
    raw = json.loads((root / "densely_captioned_images/complete/a.json").read_text())
    assert raw["mask_data"]["3"]["bounds"] == {
        "topLeft": {"x": 0, "y": 0},
        "bottomRight": {"x": 10, "y": 10},
    }
    assert sorted(raw) == ["extra_caption", "image", "mask_data", "mask_keys", "short_caption"]
