"""sDCI entries and the four reference subtests on hand-written records (docs/protocols/dci.md).

The scene used throughout (dci_records.scene_record; photo 640 x 480; mask_data order 7, 1, ..., 8):

    7 tree  q0  (400,   0, 640, 300)  240 x 300  subcrop
    1 dog   q0  ( 50, 100, 350, 400)  300 x 300  subcrop, children [2, 3, 99 (missing), 6]
    2 head  q0  small                             children [4]
    3 junk  q2  small                             children [5]   (unusable: 5 is not visited from 1)
    4 ear   q1  small (label only)
    5 nose  q0  small
    6 tail  q0  small
    8 sky   q2  (  0,   0, 640, 480)  640 x 480  subcrop (any quality is cropped)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dci_records import add_sdci, make_mask, make_record, scene_record, write_release

from densecap_eval.datasets import load_dataset
from densecap_eval.datasets.dci.entries import (
    build_entries,
    build_subtest,
    descendant_texts,
    iter_entries,
    long_caption_base,
    long_caption_subcrop,
    subcrop_box,
    subcrop_masks,
)
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.datasets.dci.records import Bounds, Mask, SubtestSpec

ALSO = "\nThe following can also be seen in the image:\n"


def other_record() -> dict:
    record = make_record(
        "sub/other.jpg",
        short_caption="A cup.",
        extra_caption="",
        masks=[
            make_mask(
                1, label="cup", caption="white", bounds=(10, 10, 50, 50), photo_size=(300, 200)
            )
        ],
    )
    return add_sdci(record)


@pytest.fixture
def release(tmp_path: Path) -> DCIDataset:
    root = write_release(
        tmp_path,
        {"scene.json": scene_record(base=5, m_7_sc=7, m_1_sc=4), "other.json": other_record()},
        splits={"test": ["scene.json", "other.json"], "reversed": ["other.json", "scene.json"]},
        photo_sizes={"scene.jpg": (640, 480), "sub/other.jpg": (300, 200)},
    )
    return DCIDataset(root)


BASE_TEXT = (
    "A dog in a park.\nIt is sunny."
    + ALSO
    + "tree: a tall oak\ndog: a brown dog\nhead: the dog's head\near\nnose: wet\ntail: wagging"
)
DOG_TEXT = (
    "This is an image of dog. a brown dog" + ALSO + "head: the dog's head\near\ntail: wagging"
)


# --- long captions --------------------------------------------------------------------------


def test_base_caption_uses_every_mask_in_mask_data_order(release: DCIDataset) -> None:
    assert long_caption_base(release.load_record("scene.json")) == BASE_TEXT


def test_base_caption_without_mask_text_is_short_and_extra_only(tmp_path: Path) -> None:
    rec = make_record(
        "a.jpg", short_caption="S.", extra_caption="E.", masks=[make_mask(1, label="x", quality=2)]
    )
    ds = DCIDataset(write_release(tmp_path, {"a.json": rec}))
    assert long_caption_base(ds.load_record("a.json")) == "S.\nE."


def test_subcrop_caption_walks_descendants_depth_first(release: DCIDataset) -> None:
    record = release.load_record("scene.json")
    assert long_caption_subcrop(record, record.masks[1]) == DOG_TEXT
    # 3 is unusable, so its child 5 ("nose: wet") is never reached; 99 does not exist.
    assert descendant_texts(record, record.masks[1]) == [
        "head: the dog's head",
        "ear",
        "tail: wagging",
    ]
    assert long_caption_subcrop(record, record.masks[7]) == "This is an image of tree. a tall oak"
    assert long_caption_subcrop(record, record.masks[8]) == "This is an image of sky. blue"


def test_empty_label_on_a_low_quality_child_gives_an_empty_line(tmp_path: Path) -> None:
    # The reference keeps '' (it only drops None), so the caption gets an empty line.
    masks = [
        make_mask(1, label="box", caption="red", bounds=(0, 0, 300, 300), children=[2, 3]),
        make_mask(2, label="", quality=1),
        make_mask(3, label="lid", caption=""),
    ]
    ds = DCIDataset(write_release(tmp_path, {"a.json": make_record("a.jpg", masks=masks)}))
    record = ds.load_record("a.json")
    assert (
        long_caption_subcrop(record, record.masks[1])
        == "This is an image of box. red" + ALSO + "\nlid: "
    )


# --- subcrops and boxes ---------------------------------------------------------------------


def test_subcrop_selection_by_raw_bounds(tmp_path: Path) -> None:
    masks = [
        make_mask(5, bounds=(0, 0, 224, 224), quality=2, photo_size=None),  # exactly 224: in
        make_mask(2, bounds=(0, 0, 223, 400), photo_size=None),  # too narrow
        make_mask(3, bounds=(0, 0, 400, 223), photo_size=None),  # too low
        make_mask(4, bounds=(400, 400, 0, 0), photo_size=None),  # inverted: never selected
        make_mask(1, bounds=(-100, -100, 900, 900), quality=1, photo_size=None),  # overruns: in
    ]
    ds = DCIDataset(write_release(tmp_path, {"a.json": make_record("a.jpg", masks=masks)}))
    assert [m.idx for m in subcrop_masks(ds.load_record("a.json"))] == [5, 1]


def _mask(left: int, top: int, right: int, bottom: int) -> Mask:
    return Mask(
        idx=1,
        label="",
        caption="",
        quality=0,
        parent=-1,
        children=(),
        area=0,
        bounds=Bounds(left, top, right, bottom),
    )


@pytest.mark.parametrize(
    ("bounds", "size", "box"),
    [
        ((100, 50, 400, 350), (640, 480), (55, 5, 445, 395)),  # 300 x 300: pad 45 each side
        (
            (100, 100, 325, 330),
            (640, 480),
            (67, 66, 358, 364),
        ),  # 225 x 230: int(33.75)=33, int(34.5)=34
        ((400, 0, 640, 300), (640, 480), (364, 0, 640, 345)),  # clamped at the top and right edges
        ((-20, -30, 300, 260), (640, 480), (0, 0, 348, 303)),  # overruns the edge: clamped (normal)
        ((0, 0, 640, 480), (640, 480), (0, 0, 640, 480)),  # the whole photo
        (
            (700, 500, 1000, 800),
            (640, 480),
            (640, 455, 640, 480),
        ),  # outside: empty box (pad 45 reaches y=455)
        ((-600, 0, -300, 300), (640, 480), (0, 0, 0, 345)),  # outside on the left: empty box
    ],
)
def test_subcrop_box_pads_and_clamps(bounds: tuple, size: tuple, box: tuple) -> None:
    assert subcrop_box(_mask(*bounds), *size) == box


# --- entries --------------------------------------------------------------------------------


def test_build_entries_keys_regions_captions_and_bags(release: DCIDataset) -> None:
    record = release.load_record("scene.json")
    entries = build_entries(release, record, include_subcrops=True)
    photo = str((release.base / "photos" / "scene.jpg").absolute())
    assert [e.key for e in entries] == ["base", "m-7-sc", "m-1-sc", "m-8-sc"]
    assert [e.region.photo for e in entries] == [photo] * 4
    assert [e.region.box for e in entries] == [
        None,
        (364, 0, 640, 345),
        (5, 55, 395, 445),
        (0, 0, 640, 480),
    ]
    assert [e.image for e in entries] == ["scene.json"] * 4
    assert entries[0].long_caption == BASE_TEXT
    assert entries[2].long_caption == DOG_TEXT
    # A list summary is the bag (caption = first); a string is a bag of one.
    assert entries[0].summaries == tuple(f"base summary {i}" for i in range(5))
    assert entries[0].summary_is_list and entries[0].caption == "base summary 0"
    assert entries[3].summaries == ("m-8-sc summary",) and not entries[3].summary_is_list
    assert entries[1].negatives == {
        "swaps": ("m-7-sc swaps 0", "m-7-sc swaps 1"),
        "layout": ("m-7-sc layout 0", "m-7-sc layout 1"),
        "basic": ("m-7-sc basic 0", "m-7-sc basic 1"),
    }
    assert entries[1].clip_scores["swaps_1"] == 21.0
    base_only = build_entries(release, record, include_subcrops=False)
    assert [e.key for e in base_only] == ["base"]


def test_entries_without_summaries_use_the_long_caption(release: DCIDataset) -> None:
    entries = list(iter_entries(release, "test"))
    assert [(e.image, e.key) for e in entries] == [
        ("scene.json", "base"),
        ("scene.json", "m-7-sc"),
        ("scene.json", "m-1-sc"),
        ("scene.json", "m-8-sc"),
        ("other.json", "base"),
    ]
    assert entries[2].summaries == (DOG_TEXT,) and not entries[2].summary_is_list
    assert entries[4].long_caption == "A cup.\n" + ALSO + "cup: white"
    assert entries[4].region.photo.endswith("photos/sub/other.jpg")
    summarised = list(iter_entries(release, "test", include_subcrops=False, use_summaries=True))
    assert [e.caption for e in summarised] == ["base summary 0", "base summary"]


# --- the four subtests ----------------------------------------------------------------------


def _rows(result) -> list[tuple]:
    return [
        (ex.entry.image, ex.entry.key, ex.positives, ex.negative, ex.negative_key)
        for ex in result.examples
    ]


ONE_ENTRY = "negatives for one entry only ('base') while subcrops are loaded"


def test_all_swaps(release: DCIDataset) -> None:
    result = build_subtest(release, "all_swaps")
    # other.json has no subcrop, so its negatives cover `base` only: the reference skips it
    # whenever subcrops are loaded.
    assert [(s.image, s.reason) for s in result.skipped] == [("other.json", ONE_ENTRY)]
    assert _rows(result) == [
        ("scene.json", "base", ("base summary 0",), "base swaps 0", "swaps_0"),
        ("scene.json", "m-7-sc", ("m-7-sc summary 0",), "m-7-sc swaps 0", "swaps_0"),
        ("scene.json", "m-1-sc", ("m-1-sc summary 0",), "m-1-sc swaps 0", "swaps_0"),
        ("scene.json", "m-8-sc", ("m-8-sc summary",), "m-8-sc swaps 0", "swaps_0"),
    ]


def test_pick5_keeps_list_summaries_of_five_or_more_and_takes_the_first_five(
    release: DCIDataset,
) -> None:
    result = build_subtest(release, "dci/all_swaps_pick5")
    five = tuple(f"base summary {i}" for i in range(5))
    first5_of_7 = tuple(f"m-7-sc summary {i}" for i in range(5))
    # m-1-sc has 4 summaries, m-8-sc a single string: left out (other.json is skipped, see above).
    assert _rows(result) == [
        ("scene.json", "base", five, "base swaps 0", "swaps_0"),
        ("scene.json", "m-7-sc", first5_of_7, "m-7-sc swaps 0", "swaps_0"),
    ]


def test_base_swaps(release: DCIDataset) -> None:
    assert _rows(build_subtest(release, "base_swaps")) == [
        ("scene.json", "base", ("base summary 0",), "base swaps 0", "swaps_0"),
        ("other.json", "base", ("base summary",), "base swaps 0", "swaps_0"),
    ]


def test_all_hardest_takes_the_last_of_tied_top_scores(release: DCIDataset) -> None:
    # add_sdci scores {kind}_{i} = 20 + i: swaps_1, layout_1 and basic_1 tie at 21; basic_1 is last.
    rows = _rows(build_subtest(release, "all_hardest"))
    assert [(r[1], r[3], r[4]) for r in rows] == [
        ("base", "base basic 1", "basic_1"),
        ("m-7-sc", "m-7-sc basic 1", "basic_1"),
        ("m-1-sc", "m-1-sc basic 1", "basic_1"),
        ("m-8-sc", "m-8-sc basic 1", "basic_1"),
    ]


def test_hardest_prefers_a_strictly_higher_earlier_candidate(tmp_path: Path) -> None:
    record = scene_record()
    record["clip_scores"]["base"]["swaps_0"] = 25.0
    ds = DCIDataset(write_release(tmp_path, {"a.json": record}))
    example = build_subtest(ds, "all_hardest").examples[0]
    assert (example.entry.key, example.negative, example.negative_key) == (
        "base",
        "base swaps 0",
        "swaps_0",
    )


def test_rand_is_seeded_and_independent_of_iteration_order(release: DCIDataset) -> None:
    spec = SubtestSpec("any_rand", True, "any", "rand", 0)

    def picks(split: str, seed: int) -> dict:
        return {
            (e.entry.image, e.entry.key): e.negative_key
            for e in build_subtest(release, spec, split=split, seed=seed).examples
        }

    first = picks("test", 0)
    assert len(first) == 4
    assert first == picks("test", 0) == picks("reversed", 0)
    assert picks("test", 1) != first  # fixed seeds: a deterministic difference, not a flaky one
    for neg_key in first.values():
        assert neg_key.rsplit("_", 1)[0] in ("swaps", "layout", "basic")


def test_load_dataset_resolves_to_the_dci_loader(release: DCIDataset) -> None:
    ds = load_dataset("dci", root=str(release.root))
    assert isinstance(ds, DCIDataset)
    assert len(build_subtest(ds, "base_swaps").examples) == 2


# --- skip rules -----------------------------------------------------------------------------


def _one(tmp_path: Path, record: dict) -> DCIDataset:
    good = scene_record() | {"image": "good.jpg"}
    return DCIDataset(write_release(tmp_path, {"x.json": record, "good.json": good}))


@pytest.mark.parametrize(
    ("change", "skipped_in", "reason"),
    [
        (
            lambda r: r.pop("summaries"),
            {"all_swaps", "all_swaps_pick5", "base_swaps", "all_hardest"},
            "no summaries",
        ),
        (
            lambda r: r.update(summaries=None),
            {"all_swaps", "all_swaps_pick5", "base_swaps", "all_hardest"},
            "no summaries",
        ),
        (
            lambda r: r.pop("negatives"),
            {"all_swaps", "all_swaps_pick5", "base_swaps", "all_hardest"},
            "no negatives",
        ),
        # Negatives for one entry only: skipped when subcrops are loaded, kept for base_swaps.
        (
            lambda r: r.update(negatives={"base": r["negatives"]["base"]}),
            {"all_swaps", "all_swaps_pick5", "all_hardest"},
            ONE_ENTRY,
        ),
    ],
)
def test_image_skip_rules(
    tmp_path: Path, change, skipped_in: set, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = scene_record()
    change(record)
    ds = _one(tmp_path, record)
    for name in ("all_swaps", "all_swaps_pick5", "base_swaps", "all_hardest"):
        result = build_subtest(ds, name)
        images = {ex.entry.image for ex in result.examples}
        if name in skipped_in:
            assert [(s.image, s.reason) for s in result.skipped] == [("x.json", reason)], name
            assert "x.json" not in images
        else:
            assert result.skipped == [] and "x.json" in images
        if name != "all_swaps_pick5":
            assert "good.json" in images  # the rest of the split still loads
    assert any("x.json" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    # Rule skips are the reference's filter, not bad records: strict mode skips them too.
    strict = DCIDataset(ds.root, strict=True)
    assert build_subtest(strict, "all_swaps").skipped[0].reason == reason
