"""Bad input (issue 2, item 7): each case in default mode (skipped loudly) and strict mode (raises).

A release holds ``bad.json`` (the scene of test_dci_entries.py with one thing broken) and
``good.json`` (the same scene, intact). For each case and each way of reading the split, the
image is bad exactly where the reference would crash or drop it, and harmless elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dci_records import bounds_dict, photo_bytes, scene_record, write_release

from densecap_eval.core.errors import BadRecordError
from densecap_eval.datasets.dci.entries import build_subtest, iter_entries
from densecap_eval.datasets.dci.loader import DCIDataset

SUBTESTS = ("all_swaps", "all_swaps_pick5", "base_swaps", "all_hardest")
APIS = ("records", "entries", *SUBTESTS)
EVERYWHERE = frozenset(APIS)
WITH_PHOTO = frozenset(("entries", *SUBTESTS))  # iter_records never opens a photo
WITH_SUBCROPS = frozenset(("entries", "all_swaps", "all_swaps_pick5", "all_hardest"))
SDCI_SUBCROPS = frozenset(("all_swaps", "all_swaps_pick5", "all_hardest"))

Record = dict[str, Any]
Files = dict[str, bytes | None]


def _bounds(idx: str, *values: Any) -> Callable[[Record, Files], Any]:
    def change(rec: Record, files: Files) -> Any:
        rec["mask_data"][idx]["bounds"] = bounds_dict(*values)
        return rec

    return change


def _set(path: tuple[str, ...], value: Any) -> Callable[[Record, Files], Any]:
    def change(rec: Record, files: Files) -> Any:
        target = rec
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return rec

    return change


def _delete(*path: str) -> Callable[[Record, Files], Any]:
    def change(rec: Record, files: Files) -> Any:
        target = rec
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]
        return rec

    return change


def _photo(data: bytes | None) -> Callable[[Record, Files], Any]:
    def change(rec: Record, files: Files) -> Any:
        files["bad.jpg"] = data
        return rec

    return change


_JPEG = photo_bytes(640, 480)

# name -> (change, where the image is bad, words of the reason)
BAD: dict[str, tuple[Callable[[Record, Files], Any], frozenset[str], str]] = {
    "invalid JSON": (lambda r, f: '{"image": "bad.jpg",', EVERYWHERE, "invalid JSON"),
    "not an object": (lambda r, f: "[1, 2]", EVERYWHERE, "not a JSON object (found list)"),
    "missing field": (_delete("mask_data"), EVERYWHERE, "missing required field(s): mask_data"),
    "mask missing a field": (
        _delete("mask_data", "2", "label"),
        EVERYWHERE,
        "mask_data['2'] is missing label",
    ),
    "caption not text": (
        _set(("short_caption",), None),
        EVERYWHERE,
        "short_caption is not a string",
    ),
    "summaries malformed": (_set(("summaries",), ["x"]), EVERYWHERE, "summaries is not an object"),
    "no record file": (
        lambda r, f: None,
        EVERYWHERE,
        "listed in splits.json but there is no such record file",
    ),
    "photo missing": (_photo(None), WITH_PHOTO, "bad.jpg not found"),
    "photo empty": (_photo(b""), WITH_PHOTO, "bad.jpg is an empty file"),
    "photo truncated": (
        _photo(_JPEG[: len(_JPEG) // 2]),
        WITH_PHOTO,
        "bad.jpg is truncated or corrupt",
    ),
    "photo not an image": (_photo(b"GIF? no, just text"), WITH_PHOTO, "bad.jpg is not an image"),
    # The reference reads every mask's bounds to select subcrops: one unreadable value drops it.
    "bounds non-numeric": (
        _bounds("2", "60", 110, 160, 210),
        WITH_SUBCROPS,
        "mask_data['2']: non-numeric bounds",
    ),
    "bounds missing": (
        _delete("mask_data", "4", "bounds"),
        WITH_SUBCROPS,
        "mask_data['4']: bounds missing",
    ),
    # A subcrop-sized mask outside the photo: the reference's empty crop crashes the processor.
    "bounds outside the photo": (
        _bounds("7", 700, 500, 1000, 800),
        WITH_SUBCROPS,
        "mask 7: crop box (640, 455, 640, 480) is empty",
    ),
    # 1 -> 6 -> 1: the reference recurses without end from subcrop 1.
    "cyclic mask tree": (
        _set(("mask_data", "6", "requirements"), [1]),
        WITH_SUBCROPS,
        "cyclic mask tree (1 -> 6 -> 1)",
    ),
    "self cycle": (
        _set(("mask_data", "7", "requirements"), [7]),
        WITH_SUBCROPS,
        "cyclic mask tree (7 -> 7)",
    ),
    "empty summary list": (
        _set(("summaries", "m-1-sc"), []),
        SDCI_SUBCROPS,
        "empty summary list for entry 'm-1-sc'",
    ),
    "empty base summary list": (
        _set(("summaries", "base"), []),
        frozenset(SUBTESTS),
        "empty summary list for entry 'base'",
    ),
    "summary missing": (
        _delete("summaries", "m-7-sc"),
        SDCI_SUBCROPS,
        "no summary for entry 'm-7-sc'",
    ),
    "negatives missing": (
        _delete("negatives", "m-8-sc"),
        SDCI_SUBCROPS,
        "no negatives for entry 'm-8-sc'",
    ),
    "no negatives at all for base": (
        _set(("negatives",), {}),
        frozenset(SUBTESTS),
        "no negatives for entry 'base'",
    ),
    # `any` takes whatever kinds exist, so only the swaps subtests need the swaps list.
    "swaps kind missing": (
        _delete("negatives", "base", "swaps"),
        frozenset(SUBTESTS) - {"all_hardest"},
        "entry 'base': no 'swaps' negatives",
    ),
    "swaps list empty": (
        _set(("negatives", "m-1-sc", "swaps"), []),
        SDCI_SUBCROPS - {"all_hardest"},
        "entry 'm-1-sc': no 'swaps' negatives to choose from",
    ),
    # The reference reads clip_scores[entry] whatever the strategy.
    "clip_scores missing": (_delete("clip_scores"), frozenset(SUBTESTS), "no clip_scores"),
    "clip_scores missing for an entry": (
        _delete("clip_scores", "m-7-sc"),
        SDCI_SUBCROPS,
        "no clip_scores for entry 'm-7-sc'",
    ),
    "hardest score missing": (
        _delete("clip_scores", "base", "layout_1"),
        frozenset({"all_hardest"}),
        "entry 'base': no clip_scores for layout_1",
    ),
}

# What the reference accepts must load everywhere.
HARMLESS: dict[str, Callable[[Record, Files], Any]] = {
    "inverted bounds on a small mask": _bounds("2", 160, 210, 60, 110),
    "small mask outside the photo": _bounds("5", 5000, 5000, 5010, 5010),
    "subcrop overrunning the edge": _bounds("1", -40, -40, 700, 520),
    "non-integer bounds on a small mask": _bounds("6", 300.5, 200, 340.25, 260),
    "cycle through an unusable mask": _set(("mask_data", "5", "requirements"), [3]),  # 3 (q2) <-> 5
    "empty label on a low-quality mask": _set(("mask_data", "4", "label"), ""),
    "empty label and caption on an unusable mask": _set(("mask_data", "3", "caption"), ""),
}


def _release(tmp_path: Path, change: Callable[[Record, Files], Any]) -> Path:
    files: Files = {}
    bad = change(scene_record(base=5) | {"image": "bad.jpg"}, files)
    good = scene_record(base=5) | {"image": "good.jpg"}
    return write_release(tmp_path, {"bad.json": bad, "good.json": good}, photo_files=files)


def _run(ds: DCIDataset, api: str) -> tuple[set[str], list[tuple[str, str]]]:
    """(images that yielded something, skipped (image, reason)) of one way of reading the split."""
    if api == "records":
        images = {r.name for r in ds.iter_records("test")}
        return images, [(s.image, s.reason) for s in ds.skipped]
    if api == "entries":
        images = {e.image for e in iter_entries(ds, "test")}
        return images, [(s.image, s.reason) for s in ds.skipped]
    result = build_subtest(ds, api)
    return {ex.entry.image for ex in result.examples}, [(s.image, s.reason) for s in result.skipped]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_is_skipped_loudly(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    change, bad_in, reason = BAD[case]
    root = _release(tmp_path, change)
    for api in APIS:
        caplog.clear()
        images, skipped = _run(DCIDataset(root), api)
        assert "good.json" in images, api  # the rest of the split still loads
        if api in bad_in:
            assert "bad.json" not in images, api
            assert [image for image, _ in skipped] == ["bad.json"], api
            assert reason in skipped[0][1], (api, skipped)
            warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert any("complete/bad.json" in m and reason in m for m in warnings), (api, warnings)
        else:
            assert "bad.json" in images and skipped == [], (api, skipped)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_stops_strict_mode(tmp_path: Path, case: str) -> None:
    change, bad_in, reason = BAD[case]
    root = _release(tmp_path, change)
    for api in APIS:
        ds = DCIDataset(root, strict=True)
        if api in bad_in:
            with pytest.raises(BadRecordError) as info:
                _run(ds, api)
            assert info.value.image == "bad.json" and reason in info.value.reason, api
            assert str(info.value).startswith("bad.json: ")
        else:
            images, skipped = _run(ds, api)
            assert images == {"bad.json", "good.json"} and skipped == [], api


@pytest.mark.parametrize("case", list(HARMLESS))
@pytest.mark.parametrize("strict", [False, True])
def test_what_the_reference_accepts_loads(tmp_path: Path, case: str, strict: bool) -> None:
    root = _release(tmp_path, HARMLESS[case])
    for api in APIS:
        images, skipped = _run(DCIDataset(root, strict=strict), api)
        assert images == {"bad.json", "good.json"} and skipped == [], (api, skipped)


def test_overrunning_subcrop_is_clamped(tmp_path: Path) -> None:
    root = _release(tmp_path, HARMLESS["subcrop overrunning the edge"])
    # 740 x 560 bounds: pad 111 / 84, clamped to the 640 x 480 photo.
    boxes = {
        e.key: e.region.box for e in iter_entries(DCIDataset(root), "test") if e.image == "bad.json"
    }
    assert boxes["m-1-sc"] == (0, 0, 640, 480)
