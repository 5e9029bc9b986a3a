"""`densecap-eval inspect dci` and `inspect_dci`: counts, skips and token statistics on small
hand-written releases (hand-counted tokens), a synthetic set, and the CLI's formats and errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from dci_records import add_sdci, make_mask, make_record, subcrop_keys, write_release

from densecap_eval.cli.app import main
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.errors import BadRecordError
from densecap_eval.inspection import inspect_dci


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
    assert code == 2
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
    from densecap_eval.paths import bundled_sample_root

    splits = json.loads(
        (bundled_sample_root() / "densely_captioned_images" / "splits.json").read_text()
    )
    assert main(["inspect", "dci", "--sample", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == len(splits["test"]) > 0
    assert report["skipped"] == []
    assert report["subtests"]["base_swaps"]["entries"] == report["images"]


CLI_ERRORS = [
    (["inspect", "imagenet", "--sample"], "unknown dataset 'imagenet'", "known: dci"),
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
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err and also in err
