"""`densecap-eval inspect`: `inspect_dci` (counts, skips and token statistics on small
hand-written releases with hand-counted tokens, a synthetic set) and the generic
`inspect_records` profile every dataset gets (in-test datasets, a registered fake, the real
Urban1k layout), with the CLI's formats and errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from dci_records import add_sdci, make_mask, make_record, subcrop_keys, write_release

from densecap_eval.cli.app import main
from densecap_eval.core.errors import BadRecordError, DensecapError
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.datasets.records import ImageRecord, SkippedImage, Text
from densecap_eval.run.inspect import inspect_dci, inspect_records


def tiny_release(root: Path) -> Path:
    """Four test images, chosen so every number below can be counted by hand.

    a.json  ok: base + one subcrop (mask 1, 290 x 290); the subcrop's summary is a bag of 5
    b.json  ok for base_swaps only: no masks, so negatives exist for "base" alone, which the
            reference filters out of the three subtests that load subcrops; a long caption
    c.json  its photo is missing (a bad image)
    d.json  invalid JSON (a bad image)
    """
    a = add_sdci(
        make_record(
            "a.jpg",
            short_caption="A dog.",
            extra_caption="It runs.",
            masks=[make_mask(1, label="dog", caption="brown", bounds=(10, 10, 300, 300))],
        )
    )
    a["summaries"] = {
        "base": "a dog",
        "m-1-sc": ["a dog", "a brown dog", "dog", "the dog runs", "one dog"],
    }
    b = add_sdci(make_record("b.jpg", short_caption="A cat.", extra_caption="cat " * 80))
    b["summaries"] = {"base": "a cat"}
    c = add_sdci(make_record("c.jpg"))
    return write_release(
        root,
        {"a.json": a, "b.json": b, "c.json": c, "d.json": "{not json"},
        photo_files={"c.jpg": None},
    )


# Long captions (tokens counted by hand, start and end tokens included):
#   a base   "A dog.\nIt runs.\nThe following can also be seen in the image:\ndog: brown"
#            a dog . | it runs . | the following can also be seen in the image : | dog : brown
#            = 3 + 3 + 10 + 3 + 2 = 21
#   a m-1-sc "This is an image of dog. brown"     = 8 + 2 = 10
#   b base   "A cat.\n" + "cat " * 80             = 3 + 80 + 2 = 85
# Summaries: a base "a dog" 4; a m-1-sc bag 4, 5, 3, 5, 4; b base "a cat" 4.
EXPECTED_TOKENS = {
    "long_caption": {
        "count": 3,
        "mean": (21 + 10 + 85) / 3,
        "median": 21.0,
        "p90": 21 + (85 - 21) * 0.8,  # sorted [10, 21, 85], position 0.9 * 2 = 1.8
        "max": 85,
        "over_77": 1 / 3,
    },
    "summary": {
        "count": 7,
        "mean": 29 / 7,
        "median": 4.0,
        "p90": 5.0,  # sorted [3, 4, 4, 4, 4, 5, 5], position 5.4
        "max": 5,
        "over_77": 0.0,
    },
}
EXPECTED_SUBTESTS = {
    "all_swaps": {"entries": 2, "skipped": 3},
    "all_swaps_pick5": {"entries": 1, "skipped": 3},
    "base_swaps": {"entries": 2, "skipped": 2},
    "all_hardest": {"entries": 2, "skipped": 3},
}


def _check_tiny_report(report: dict[str, Any], root: Path) -> None:
    assert report["images"] == 4
    assert report["images_usable"] == 1
    assert report["split"] == "test"
    assert report["subtests"] == EXPECTED_SUBTESTS
    assert report["entries"] == 3
    for field, expected in EXPECTED_TOKENS.items():
        assert report["tokens"][field] == pytest.approx(expected), field
    skipped = report["skipped"]
    assert [item["image"] for item in skipped] == ["b.json", "c.json", "d.json"]
    assert all(set(item) == {"image", "reason"} for item in skipped)
    assert skipped[0]["reason"] == (
        "negatives for one entry only ('base') while subcrops are loaded"
    )
    photo = root / "densely_captioned_images" / "photos" / "c.jpg"
    assert str(photo) in skipped[1]["reason"] and "not found" in skipped[1]["reason"]
    assert skipped[2]["reason"].startswith("invalid JSON")


def test_inspect_dci_hand_counted(tmp_path: Path) -> None:
    root = tiny_release(tmp_path)
    report = inspect_dci(DCIDataset(root), split="test")
    _check_tiny_report(report, root)
    # The generic profile of the records that parse (a, b, c; d is invalid JSON):
    #   caption  a "A dog.\nIt runs." 8, b "A cat.\n" + "cat " * 80 = 85,
    #            c "A short caption.\nMore words." = a short caption . | more words . = 9
    #   full     a 21, b 85, c 9 (no masks: the caption alone)
    profile = report["profile"]
    assert (profile["records"], profile["limits"]) == (3, [77, 248])
    assert list(profile["tokens"]) == ["caption", "full"]
    caption, full = profile["tokens"]["caption"], profile["tokens"]["full"]
    assert (caption["min"], caption["median"], caption["max"]) == (8, 9.0, 85)
    assert (caption["p25"], caption["p75"]) == pytest.approx((8.5, 47.0))
    assert (full["min"], full["median"], full["max"]) == (9, 21.0, 85)
    assert (full["over_77"], full["over_248"]) == pytest.approx((1 / 3, 0.0))


def test_cli_json_has_the_documented_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root = tiny_release(tmp_path)
    with caplog.at_level(logging.WARNING):
        code = main(["inspect", "dci", "--root", str(root), "--format", "json"])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert {"images", "skipped", "subtests", "tokens"} <= set(report)
    assert set(report["subtests"]) == {"all_swaps", "all_swaps_pick5", "base_swaps", "all_hardest"}
    for field in ("long_caption", "summary"):
        assert {"mean", "median", "p90", "over_77"} <= set(report["tokens"][field])
    _check_tiny_report(report, root)
    # Loud skips: a warning naming each bad file and its problem, then a count line.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("c.json" in w and "not found" in w for w in warnings)
    assert any("d.json" in w and "invalid JSON" in w for w in warnings)
    assert any("b.json" in w and "negatives for one entry only" in w for w in warnings)
    assert "3 of 4 images skipped" in captured.err
    assert "warning: skipping " in captured.err and "d.json: invalid JSON" in captured.err


def test_cli_strict_stops_at_the_first_bad_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tiny_release(tmp_path)
    code = main(["inspect", "dci", "--root", str(root), "--format", "json", "--strict"])
    assert code == 1  # BadRecordError under --strict: bad data, not a usage error
    captured = capsys.readouterr()
    assert captured.out == ""
    # b.json is filtered the reference's way (a warning, not an error); c.json is the first bad
    # image: one error line, and nothing about d.json after it.
    lines = captured.err.splitlines()
    assert lines[-1].startswith("error: c.json: photo ") and lines[-1].endswith("not found")
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert all(line.startswith("warning: ") and "b.json" in line for line in lines[:-1])
    with pytest.raises(BadRecordError, match=r"c\.json"):
        inspect_dci(DCIDataset(root, strict=True), split="test")


def test_cli_table_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tiny_release(tmp_path)
    assert main(["inspect", "dci", "--root", str(root), "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert "4 images, 3 skipped, 3 entries" in out
    for text in ("all_swaps_pick5", "long_caption", "summary", "33.3%", "Skipped images"):
        assert text in out
    assert "d.json" in out


def test_clean_split_and_root_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record = add_sdci(make_record("z.jpg", masks=[make_mask(3, bounds=(0, 0, 224, 224))]))
    root = write_release(tmp_path, {"z.json": record}, splits={"valid": ["z.json"]})
    monkeypatch.setenv("DENSECAP_EVAL_DATA", str(root))
    assert main(["inspect", "dci", "--split", "valid", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["skipped"], report["entries"]) == (1, [], 2)
    assert report["subtests"]["all_swaps"] == {"entries": 2, "skipped": 0}
    assert report["subtests"]["all_swaps_pick5"] == {"entries": 0, "skipped": 0}


def test_synthetic_set_agrees_with_its_records(tmp_path: Path) -> None:
    from densecap_eval.synth import generate_dci

    generate_dci(tmp_path, images=6, seed=3, split_sizes=(0, 0, 6))
    base = tmp_path / "densely_captioned_images"
    entries = summaries = pick5 = 0
    for name in json.loads((base / "splits.json").read_text())["test"]:
        record = json.loads((base / "complete" / name).read_text())
        for key in subcrop_keys(record):
            bag = record["summaries"][key]
            entries += 1
            summaries += 1 if isinstance(bag, str) else len(bag)
            pick5 += isinstance(bag, list) and len(bag) >= 5

    assert entries > 6 and pick5 > 0  # the set has subcrops and bags of 5+
    report = inspect_dci(DCIDataset(tmp_path), split="test")
    assert (report["images"], report["skipped"]) == (6, [])
    assert report["subtests"]["all_swaps"]["entries"] == entries
    assert report["subtests"]["all_hardest"]["entries"] == entries
    assert report["subtests"]["base_swaps"]["entries"] == 6
    assert report["subtests"]["all_swaps_pick5"]["entries"] == pick5
    assert report["tokens"]["long_caption"]["count"] == entries
    assert report["tokens"]["summary"]["count"] == summaries
    assert report["tokens"]["summary"]["over_77"] == 0.0  # summaries are written to fit


def test_bundled_sample(capsys: pytest.CaptureFixture[str]) -> None:
    from densecap_eval.core.paths import bundled_sample_root

    splits = json.loads(
        (bundled_sample_root() / "densely_captioned_images" / "splits.json").read_text()
    )
    assert main(["inspect", "dci", "--sample", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == len(splits["test"]) > 0
    assert report["skipped"] == []
    assert report["subtests"]["base_swaps"]["entries"] == report["images"]


CLI_ERRORS = [
    (
        ["inspect", "imagenet", "--sample"],
        "unknown dataset 'imagenet'",
        "known: aro-coco, aro-flickr30k, aro-vg, clip_benchmark, dci, docci",
    ),
    (["inspect", "dci", "--sample", "--root", "ROOT"], "give --root or --sample, not both", ""),
    (["inspect", "dci", "--root", "ROOT/none"], "DCI root", "does not exist"),
    (
        ["inspect", "dci", "--root", "ROOT", "--split", "tset"],
        "unknown split 'tset'",
        "known: test",
    ),
    (["inspect", "dci"], "DCI root", "xdg"),  # falls back to the per-user data folder
]


@pytest.mark.parametrize(("argv", "message", "also"), CLI_ERRORS)
def test_cli_errors_are_one_line(
    argv: list[str],
    message: str,
    also: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    root = write_release(tmp_path, {"a.json": add_sdci(make_record("a.jpg"))})
    argv = [a.replace("ROOT", str(root)) for a in argv]
    # usage errors exit 2; a data root or split that is not usable (DatasetError) exits 1
    assert main(argv) == (1 if "DCI root" in message or "split" in message else 2)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err and also in err


# --- the generic profile ------------------------------------------------------------------


class ListDataset:
    """An in-test dataset: records from lists, bad ones skipped the way loaders skip them."""

    name = "listed"

    def __init__(self, root: Path, splits: dict[str, list[Any]], *, strict: bool = False) -> None:
        self.root = root
        self._splits = splits
        self.strict = strict
        self.skipped: list[SkippedImage] = []

    def splits(self) -> list[str]:
        return list(self._splits)

    def records(self, split: str | None = None) -> Any:
        for name in [split] if split else list(self._splits):
            for i, item in enumerate(self._splits[name]):
                if isinstance(item, str):  # a bad image: the reason
                    if self.strict:
                        raise BadRecordError(f"{name}-{i}", item)
                    self.skipped.append(SkippedImage(f"{name}-{i}", item))
                    continue
                yield ImageRecord(f"{name}-{i}", self.root / f"{i}.jpg", tuple(item), split=name)


def cats(n: int, kind: str = "caption", role: Any = "description") -> Text:
    """A text of ``n`` + 2 CLIP tokens ("cat" is one BPE token)."""
    return Text("cat " * n, role=role, kind=kind)


# Token counts: test [4, 12, 82, 252] (captions), one skipped; train [27] and a "full" text.
#   sorted 4, 12, 82, 252: p25 at 0.75 -> 10; median 47; p75 at 2.25 -> 124.5; p90 at 2.7 -> 201
LISTED = {
    "test": [
        [cats(2), cats(80, role="negative")],  # the negative is no description: not counted
        [cats(10)],
        "photo not found",
        [cats(80)],
        [cats(250)],
    ],
    "train": [[cats(25), cats(300, kind="full")]],
}


def test_profile_hand_counted(tmp_path: Path) -> None:
    report = inspect_records(ListDataset(tmp_path, LISTED), split="test")
    assert report["dataset"] == "listed" and report["split"] == "test"
    assert report["splits"] == ["test", "train"]
    assert (report["images"], report["records"]) == (5, 4)
    assert report["skipped"] == [{"image": "test-2", "reason": "photo not found"}]
    assert report["limits"] == [77, 248]
    assert report["tokens"] == {
        "caption": pytest.approx(
            {
                "count": 4,
                "mean": (4 + 12 + 82 + 252) / 4,
                "min": 4,
                "p25": 10.0,
                "median": 47.0,
                "p75": 124.5,
                "p90": 201.0,
                "max": 252,
                "over_77": 0.5,
                "over_248": 0.25,
            }
        )
    }
    assert isinstance(report["tokens"]["caption"]["max"], int)


def test_profile_of_every_split_and_per_kind(tmp_path: Path) -> None:
    report = inspect_records(ListDataset(tmp_path, LISTED), name="mine")
    assert (report["dataset"], report["split"], report["records"]) == ("mine", None, 5)
    assert list(report["tokens"]) == ["caption", "full"]
    assert report["tokens"]["caption"]["count"] == 5
    assert report["tokens"]["full"] == pytest.approx(
        {"count": 1, "mean": 302.0, "min": 302, "p25": 302.0, "median": 302.0, "p75": 302.0,
         "p90": 302.0, "max": 302, "over_77": 1.0, "over_248": 1.0}
    )  # fmt: skip


def test_profile_of_an_empty_split_and_errors(tmp_path: Path) -> None:
    report = inspect_records(ListDataset(tmp_path, {"test": []}), split="test")
    assert (report["images"], report["records"], report["tokens"]) == (0, 0, {})
    with pytest.raises(DensecapError, match=r"unknown split 'tset' .*known: test"):
        inspect_records(ListDataset(tmp_path, {"test": []}), split="tset")
    with pytest.raises(BadRecordError, match="photo not found"):
        inspect_records(ListDataset(tmp_path, LISTED, strict=True), split="test")


def test_profile_streams_the_records(tmp_path: Path) -> None:
    """Records are consumed one at a time: none is alive once the next one is asked for."""
    import weakref

    alive: list[weakref.ref[Any]] = []

    class Streamed(ListDataset):
        def records(self, split: str | None = None) -> Any:
            for i in range(300):
                # Refcounting frees a dropped record at once (records hold no cycles).
                assert sum(ref() is not None for ref in alive) <= 1  # the one being counted
                texts = [_Weak("a photo " + "cat " * (i % 90))]
                alive.append(weakref.ref(texts[0]))
                yield ImageRecord(str(i), self.root / f"{i}.jpg", tuple(texts))

    report = inspect_records(Streamed(tmp_path, {"test": []}))
    assert report["records"] == report["tokens"]["caption"]["count"] == 300
    assert report["tokens"]["caption"]["max"] == 2 + 89 + 2


class _Weak:
    """A Text stand-in that can be weakly referenced (Text has slots)."""

    def __init__(self, text: str) -> None:
        self.text, self.role, self.kind = text, "description", "caption"


@pytest.fixture
def fake_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``inspect fakeset`` loads a ListDataset of LISTED through the dataset registry."""
    from densecap_eval.datasets import DATASETS

    def load(root: Path, *, strict: bool = False) -> ListDataset:
        dataset = ListDataset(root, LISTED, strict=strict)
        dataset.name = "fakeset"
        return dataset

    monkeypatch.setitem(DATASETS._entries, "fakeset", load)
    return tmp_path


def test_cli_profile_json_and_table(
    fake_registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(fake_registered)
    assert main(["inspect", "fakeset", "--root", root, "--split", "test", "--format", "json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["dataset"], report["records"], report["tokens"]["caption"]["p75"]) == (
        "fakeset",
        4,
        124.5,
    )
    assert "1 of 5 images skipped" in captured.err
    assert main(["inspect", "fakeset", "--root", root, "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert f"fakeset every split at {root}: 5 records, 1 skipped" in out
    for text in ("p25", ">248", "caption", "full", "184.0", "40.0%", "Skipped images"):
        assert text in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "fakeset", "--root", "ROOT", "--split", "tset"], "unknown split 'tset'"),
        (["inspect", "fakeset", "--sample"], "--sample is the bundled DCI sample"),
    ],
)
def test_cli_profile_errors_are_one_line(
    argv: list[str], message: str, fake_registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([a.replace("ROOT", str(fake_registered)) for a in argv])
    assert code == (1 if "split" in message else 2)  # DatasetError exits 1, usage errors 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_urban1k_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real loader on the release's layout: caption/<n>.txt (first line), image/<n>.jpg."""
    pytest.importorskip("densecap_eval.datasets.urban1k.loader")
    from PIL import Image

    (tmp_path / "image").mkdir()
    (tmp_path / "caption").mkdir()
    for n, words in ((1, 3), (2, 100), (3, 300)):
        Image.new("RGB", (8, 8)).save(tmp_path / "image" / f"{n}.jpg")
        (tmp_path / "caption" / f"{n}.txt").write_text("cat " * words + "\n")
    assert main(["inspect", "urban1k", "--root", str(tmp_path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dataset"], report["records"], report["skipped"]) == ("urban1k", 3, [])
    counts = next(iter(report["tokens"].values()))
    assert (counts["count"], counts["min"], counts["max"]) == (3, 5, 302)
    assert (counts["over_77"], counts["over_248"]) == pytest.approx((2 / 3, 1 / 3))
