"""The ``files`` dataset: users' own captioned images through Hugging Face ``datasets``.

Every format (JSONL, CSV, TSV, parquet, imagefolder, save_to_disk with embedded images), the row
-> record mapping, column mapping, each bad-row kind named by its row number, strict, the
whole-input errors, and ``files/retrieval`` end to end against a direct computation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, load_region
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.core.paths import default_cache_dir
from densecap_eval.datasets import load_dataset
from densecap_eval.datasets.files.loader import FilesDataset
from densecap_eval.datasets.hub import IMAGES_DIR
from densecap_eval.datasets.records import ImageRecord, SkippedImage
from densecap_eval.datasets.regions import Region

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


def make_images(folder: Path, names: list[str] | None = None, size: tuple[int, int] = (40, 30)):
    """One plain-colour PNG per name (``<colour>.png``); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for colour in names or COLOURS:
        Image.new("RGB", size, colour).save(folder / f"{colour}.png")
    return folder


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def records(ds: FilesDataset, split: str | None = None) -> list[ImageRecord]:
    return list(ds.records(split))


def texts(record: ImageRecord, role: str) -> list[str]:
    return [t.text for t in record.texts_of(role)]  # type: ignore[arg-type]


# --- the row -> record mapping ------------------------------------------------------------


def test_jsonl_rows_group_by_image_into_records_with_regions(tmp_path: Path) -> None:
    make_images(tmp_path / "img", ["red", "green"], size=(40, 30))
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"image": "img/red.png", "caption": "a red square", "negative": "a blue square"},
            {"image": "img/green.png", "caption": ["green one", "green two"]},
            {"image": "img/red.png", "caption": "top left", "box": [0, 0, 10, 5]},
            {"image": "img/red.png", "caption": ["a red thing"], "negative": ["n1", "n2"]},
            {"image": "img/red.png", "caption": "bottom", "box": [2.5, 10, 100, 100]},
        ],
    )
    ds = load_dataset("files", root=str(path))
    assert isinstance(ds, FilesDataset) and ds.format == "json" and ds.splits() == ["all"]
    red, green = records(ds)
    assert (red.id, green.id) == ("img/red.png", "img/green.png")
    assert red.image == tmp_path / "img" / "red.png" and red.split == "all"
    assert red.meta["rows"] == [1, 3, 4, 5] and red.meta["size"] == [40, 30]
    # Unboxed rows: descriptions and positives of the whole image; negatives paired by row.
    assert texts(red, "description") == ["a red square", "a red thing"]
    assert red.description() == "a red square"
    assert texts(red, "positive") == ["a red square", "a red thing"]
    negs = red.texts_of("negative")
    assert [(n.text, n.meta["row"], n.meta["positive"]) for n in negs] == [
        ("a blue square", 1, 0),
        ("n1", 4, 1),
        ("n2", 4, 1),
    ]
    # Boxed rows: regions, (x, y, w, h) -> (left, top, right, bottom), clamped to 40x30.
    assert [(r.key, r.box) for r in red.regions] == [
        ("row 3", (0, 0, 10, 5)),
        ("row 5", (2, 10, 40, 30)),
    ]
    assert [t.text for t in red.regions[0].texts if t.role == "description"] == ["top left"]
    assert texts(green, "description") == ["green one", "green two"] and green.regions == ()
    assert ds.skipped == []


def test_csv_repeated_rows_give_several_captions_and_string_boxes(tmp_path: Path) -> None:
    make_images(tmp_path / "img", ["red", "blue"])
    path = tmp_path / "data.csv"
    path.write_text(
        "image,caption,negative,box\n"
        'img/red.png,"red, plain",,\n'
        "img/red.png,another red,not red,\n"
        'img/blue.png,a box,,"1 2 3 4"\n'
        'img/blue.png,b box,,"[5, 6, 7, 8]"\n',
        encoding="utf-8",
    )
    red, blue = records(load_dataset("files", root=str(path)))
    assert texts(red, "description") == ["red, plain", "another red"]
    assert [(n.text, n.meta["positive"]) for n in red.texts_of("negative")] == [("not red", 1)]
    assert [r.box for r in blue.regions] == [(1, 2, 4, 6), (5, 6, 12, 14)]
    assert blue.texts == ()


def test_tsv(tmp_path: Path) -> None:
    make_images(tmp_path, ["red"])
    path = tmp_path / "data.tsv"
    path.write_text("image\tcaption\nred.png\ta red, plain image\n", encoding="utf-8")
    (record,) = records(load_dataset("files", root=str(path)))
    assert record.description() == "a red, plain image"


def test_parquet_with_lists(tmp_path: Path) -> None:
    import pandas as pd

    make_images(tmp_path / "img", ["red", "green"])
    frame = pd.DataFrame(
        {
            "image": ["img/red.png", "img/green.png", "img/green.png"],
            "caption": [["r1", "r2"], ["g"], ["g box"]],
            "box": [None, None, [1.0, 1.0, 5.0, 5.0]],
        }
    )
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    red, green = records(load_dataset("files", root=str(path)))
    assert texts(red, "description") == ["r1", "r2"]
    assert [(r.key, r.box) for r in green.regions] == [("row 3", (1, 1, 6, 6))]


def test_imagefolder_with_metadata_jsonl(tmp_path: Path) -> None:
    folder = make_images(tmp_path / "folder", ["red", "green"])
    write_jsonl(
        folder / "metadata.jsonl",
        [
            {"file_name": "red.png", "caption": ["a red one"], "box": None},
            {"file_name": "green.png", "caption": ["green box"], "box": [0, 0, 4, 4]},
        ],
    )
    ds = load_dataset("files", root=str(folder))
    assert ds.format == "imagefolder"
    red, green = records(ds)
    assert (red.id, red.image.resolve()) == ("red.png", (folder / "red.png").resolve())
    assert red.description() == "a red one" and green.regions[0].box == (0, 0, 4, 4)
    assert IMAGES_DIR not in red.image.parts  # the user's own files, not copied


def _saved_with_embedded_images(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    import datasets

    src = make_images(tmp_path / "src", ["red", "green"])
    data = {c: (src / f"{c}.png").read_bytes() for c in ("red", "green")}
    table = datasets.Dataset.from_dict(
        {
            "image": [
                {"bytes": data["red"], "path": "red.png"},
                {"bytes": data["green"], "path": "green.png"},
                {"bytes": data["red"], "path": "red.png"},
            ],
            "caption": ["red photo", "green photo", "red crop"],
            "box": [None, None, [0, 0, 8, 8]],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "caption": datasets.Value("string"),
                "box": datasets.Sequence(datasets.Value("float32")),
            }
        ),
    )
    out = tmp_path / "saved"
    table.save_to_disk(str(out))
    for path in src.iterdir():  # the saved folder must not depend on the source files
        path.unlink()
    return out, data


def test_save_to_disk_embedded_images_are_materialised_once_by_content(tmp_path: Path) -> None:
    saved, data = _saved_with_embedded_images(tmp_path)
    ds = load_dataset("files", root=str(saved))
    assert ds.format == "save_to_disk"
    red, green = records(ds)
    assert (red.id, green.id) == ("red.png", "green.png")
    folder = default_cache_dir() / IMAGES_DIR
    assert red.image == folder / f"{hashlib.sha256(data['red']).hexdigest()}.png"
    assert red.image.read_bytes() == data["red"]
    assert red.description() == "red photo" and [r.box for r in red.regions] == [(0, 0, 8, 8)]
    mtime = red.image.stat().st_mtime_ns
    again = records(load_dataset("files", root=str(saved)))
    assert again[0].image == red.image and red.image.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp")) == []


def test_save_to_disk_dataset_dict_keeps_its_splits(tmp_path: Path) -> None:
    import datasets

    make_images(tmp_path, ["red", "green", "blue"])
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"image": ["red.png"], "caption": ["r"]}),
            "test": datasets.Dataset.from_dict(
                {"image": ["green.png", "blue.png"], "caption": ["g", "b"]}
            ),
        }
    ).save_to_disk(str(saved))
    for name in ("red", "green", "blue"):  # string paths are relative to the saved folder
        (tmp_path / f"{name}.png").rename(saved / f"{name}.png")
    ds = load_dataset("files", root=str(saved))
    assert ds.splits() == ["train", "test"]
    assert [r.id for r in ds.records("test")] == ["test/green.png", "test/blue.png"]
    assert [r.id for r in ds.records()] == ["train/red.png", "test/green.png", "test/blue.png"]
    with pytest.raises(DatasetError, match=r"unknown split 'dev' .*known: train, test"):
        records(ds, "dev")


def test_column_mapping(tmp_path: Path) -> None:
    make_images(tmp_path, ["red"])
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"path": "red.png", "text": "red", "bad": "blue", "xywh": [0, 0, 2, 2]},
            {"path": "red.png", "text": "whole red", "bad": None, "xywh": None},
        ],
    )
    ds = load_dataset(
        "files",
        root=str(path),
        image_column="path",
        caption_column="text",
        negative_column="bad",
        box_column="xywh",
    )
    (record,) = records(ds)
    assert [r.box for r in record.regions] == [(0, 0, 2, 2)]
    assert record.description() == "whole red"
    # A column turned off: the box column is ignored, every row describes the whole image.
    off = load_dataset("files", root=str(path), image_column="path", caption_column="text",
                       box_column=None)  # fmt: skip
    (record,) = records(off)
    assert texts(record, "description") == ["red", "whole red"] and record.regions == ()
    assert off.fingerprint(["all"]) != ds.fingerprint(["all"])


def test_fingerprint_follows_the_annotation_bytes(tmp_path: Path) -> None:
    make_images(tmp_path, ["red"])
    path = write_jsonl(tmp_path / "d.jsonl", [{"image": "red.png", "caption": "red"}])
    first = load_dataset("files", root=str(path)).fingerprint(["all"])
    assert load_dataset("files", root=str(path)).fingerprint(["all"]) == first
    write_jsonl(path, [{"image": "red.png", "caption": "a red"}])
    assert load_dataset("files", root=str(path)).fingerprint(["all"]) != first


COLUMNS = {
    "image_column": "image",
    "caption_column": "caption",
    "negative_column": "negative",
    "box_column": "box",
}


def test_fingerprint_formula_is_the_one_stored_runs_hold(tmp_path: Path) -> None:
    """The digest predates DatasetBase and is kept (FingerprintFile.header), so the fingerprints
    in stored run cards still match: a file's bytes unframed; a folder's metadata by relative
    path and bytes, every other file by ``[path, size]``."""
    make_images(tmp_path, ["red"])
    path = write_jsonl(tmp_path / "d.jsonl", [{"image": "red.png", "caption": "red"}])
    head = json.dumps(["json", COLUMNS, ["all"]]).encode()
    expected = hashlib.sha256(head + path.read_bytes()).hexdigest()
    assert load_dataset("files", root=str(path)).fingerprint(["all"]) == expected

    folder = make_images(tmp_path / "folder", ["red"])
    meta = write_jsonl(folder / "metadata.jsonl", [{"file_name": "red.png", "caption": "r"}])
    size = (folder / "red.png").stat().st_size
    body = b"metadata.jsonl" + meta.read_bytes() + json.dumps(["red.png", size]).encode()
    head = json.dumps(["imagefolder", COLUMNS, ["all"]]).encode()
    expected = hashlib.sha256(head + body).hexdigest()
    assert load_dataset("files", root=str(folder)).fingerprint(["all"]) == expected


# --- bad rows -----------------------------------------------------------------------------

BAD_ROWS = [
    ({"image": "missing.png", "caption": "x"}, r"image missing\.png not found"),
    ({"image": "notimage.png", "caption": "x"}, r"not an image Pillow can read"),
    ({"image": None, "caption": "x"}, r"no image"),
    ({"image": "red.png", "caption": ""}, r"empty caption"),
    ({"image": "red.png", "caption": "   "}, r"empty caption"),
    ({"image": "red.png", "caption": []}, r"empty caption"),
    ({"image": "red.png", "caption": ["ok", ""]}, r"empty caption 2 of 2"),
    ({"image": "red.png", "caption": None}, r"empty caption"),
    ({"image": "red.png", "caption": "x", "negative": [""]}, r"empty negative"),
    ({"image": "red.png", "caption": "x", "box": [1, 2, 3]}, r"box .* not four numbers"),
    ({"image": "red.png", "caption": "x", "box": "a b c d"}, r"box .* not four numbers"),
    ({"image": "red.png", "caption": "x", "box": [0, 0, 0, 5]}, r"width or height <= 0"),
    ({"image": "red.png", "caption": "x", "box": [50, 0, 5, 5]}, r"lies outside the 40x30 image"),
    ({"image": "red.png", "caption": "x", "box": [-9, -9, 9, 9]}, r"lies outside"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_ROWS)
def test_each_bad_row_is_skipped_by_row_number(
    tmp_path: Path, bad: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_images(tmp_path, ["red", "green"])
    (tmp_path / "notimage.png").write_text("not a png")
    good = {"image": "green.png", "caption": "green", "box": None, "negative": None}
    path = write_jsonl(tmp_path / "d.jsonl", [good, {"box": None, "negative": None, **bad}, good])
    ds = load_dataset("files", root=str(path))
    with caplog.at_level(logging.WARNING, logger="densecap_eval.datasets"):
        (record,) = records(ds)
    assert record.id == "green.png" and record.meta["rows"] == [1, 3]
    assert [s.image for s in ds.skipped] == ["row 2"]
    assert re.search(reason, ds.skipped[0].reason), ds.skipped[0].reason
    assert f"{path} row 2" in caplog.text
    with pytest.raises(BadRecordError, match=rf"row 2: .*{reason}"):
        records(load_dataset("files", root=str(path), strict=True))


def test_bad_rows_of_one_image_leave_its_good_rows(tmp_path: Path) -> None:
    make_images(tmp_path, ["red"])
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"image": "red.png", "caption": "a", "box": [0, 0, 5, 5]},
            {"image": "red.png", "caption": 7, "box": [0, 0, 5, 5]},
            {"image": "red.png", "caption": "c", "box": [5, 5, 5, 5]},
        ],
    )
    ds = load_dataset("files", root=str(path))
    (record,) = records(ds)
    assert [r.key for r in record.regions] == ["row 1", "row 3"]
    assert ds.skipped == [
        SkippedImage("row 2", "caption is not a string or a list of strings (found int)")
    ]
    records(ds)  # a second pass (another task) reports each bad row once
    assert len(ds.skipped) == 1


def test_embedded_bytes_that_are_no_image(tmp_path: Path) -> None:
    import datasets

    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(
        {"image": [{"bytes": b"nope", "path": "x.png"}], "caption": ["x"]},
        features=datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Value("string")}
        ),
    ).save_to_disk(str(saved))
    ds = load_dataset("files", root=str(saved))
    assert records(ds) == []
    assert ds.skipped == [
        SkippedImage("row 1", "embedded image x.png is not an image Pillow can read")
    ]


# --- whole-input errors -------------------------------------------------------------------


def test_whole_input_errors(tmp_path: Path) -> None:
    make_images(tmp_path, ["red"])
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset("files", root=str(tmp_path / "nope.jsonl"))
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DatasetError, match=r"unknown file format '\.xlsx' .*\.jsonl"):
        load_dataset("files", root=str(tmp_path / "data.xlsx"))
    with pytest.raises(DatasetError, match=r"neither an imagefolder .* nor a save_to_disk"):
        load_dataset("files", root=str(tmp_path))
    # One broken JSONL line is one bad row (the shared JSON Lines policy), not the whole file.
    (tmp_path / "broken.jsonl").write_text('{"image": "red.png", "caption": "r"}\n{not json\n')
    broken = load_dataset("files", root=str(tmp_path / "broken.jsonl"))
    assert [r.id for r in broken.records()] == ["red.png"]
    assert [s.image for s in broken.skipped] == ["row 2"]
    assert "line 2: invalid JSON" in broken.skipped[0].reason
    (tmp_path / "page.jsonl").write_text("<html><body>Not found</body></html>\n")
    with pytest.raises(DatasetError, match=r"page\.jsonl is not JSON Lines"):
        load_dataset("files", root=str(tmp_path / "page.jsonl"))
    (tmp_path / "empty.csv").write_text("image,caption\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    for name in ("empty.csv", "empty.jsonl"):
        with pytest.raises(DatasetError, match=rf"{name} has no rows"):
            load_dataset("files", root=str(tmp_path / name))
    import pandas as pd

    pd.DataFrame({"image": [], "caption": []}).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match="has no rows"):
        load_dataset("files", root=str(tmp_path / "empty.parquet"))


def test_missing_column_names_the_columns_and_the_option(tmp_path: Path) -> None:
    make_images(tmp_path, ["red"])
    path = write_jsonl(tmp_path / "d.jsonl", [{"file": "red.png", "text": "red"}])
    with pytest.raises(DatasetError) as info:
        load_dataset("files", root=str(path))
    message = str(info.value)
    assert "no image column 'image' (columns: file, text)" in message
    assert "image_column" in message and "\n" not in message
    with pytest.raises(
        DatasetError, match=r"no caption column 'caption' \(columns: file, text\).*caption_column"
    ):
        load_dataset("files", root=str(path), image_column="file")
    # An optional column under its default name may be absent; a mapped one may not.
    assert records(
        load_dataset("files", root=str(path), image_column="file", caption_column="text")
    )
    with pytest.raises(DatasetError, match=r"no negative column 'neg'.*negative_column"):
        load_dataset("files", root=str(path), image_column="file", caption_column="text",
                     negative_column="neg")  # fmt: skip


# --- end to end ---------------------------------------------------------------------------


def _direct_recalls(
    scorer: FakeEmbeddingScorer, photos: list[Path], captions: list[str]
) -> dict[str, float]:
    """R@k both ways from the fake scorer's own score matrix (pessimistic ties: >= counts)."""
    images = [load_region(Region(str(p.absolute()))) for p in photos]
    scores = scorer.score(images, captions).numpy().astype(np.float64)
    own = np.diag(scores)
    i2t = (scores >= own[:, None]).sum(axis=1)  # the own text counts itself: rank >= 1
    t2i = (scores >= own[None, :]).sum(axis=0)
    out = {}
    for k in (1, 5, 10):
        out[f"i2t_r{k}"] = float((i2t <= k).mean())
        out[f"t2i_r{k}"] = float((t2i <= k).mean())
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_files_retrieval_end_to_end_matches_a_direct_computation(tmp_path: Path, fmt: str) -> None:
    make_images(tmp_path / "img", COLOURS)
    captions = [f"a {c} picture" for c in COLOURS]
    rows = [
        {"image": f"img/{c}.png", "caption": cap} for c, cap in zip(COLOURS, captions, strict=True)
    ]
    rows.insert(3, {"image": "img/missing.png", "caption": "gone"})  # row 4: skipped
    rows.append({"image": "img/red.png", "caption": "red box", "box": [0, 0, 5, 5]})  # a region
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", rows)
    else:
        path = tmp_path / "d.csv"
        lines = ["image,caption,box"] + [
            f"{r['image']},{r['caption']},{' '.join(map(str, r.get('box') or []))}" for r in rows
        ]
        path.write_text("\n".join(lines) + "\n")
    scorer = FakeEmbeddingScorer()
    result = densecap_eval.evaluate(
        scorer, "files/retrieval", data_root=path, n_boot=0, use_cache=False
    )
    metrics = result.metrics["files/retrieval"]
    assert metrics["n"] == metrics["gallery"] == len(COLOURS)
    expected = _direct_recalls(scorer, [tmp_path / "img" / f"{c}.png" for c in COLOURS], captions)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name
    assert 0 < metrics["i2t_r1"] < 1  # the check means something
    assert result.examples["image"].tolist() == [f"img/{c}.png" for c in COLOURS]
    assert result.examples["text"].tolist() == captions  # the first (whole-image) caption
    assert result.config["dataset"] == "files" and result.config["dataset_fingerprint"]


def test_files_negatives_pair_each_negative_with_its_rows_first_caption(tmp_path: Path) -> None:
    make_images(tmp_path, ["red", "green"])
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"image": "red.png", "caption": ["a red one", "red again"], "negative": "a blue one"},
            {"image": "red.png", "caption": "second red row", "negative": ["x", "y"]},
            {"image": "green.png", "caption": "green", "negative": None},
            {"image": "green.png", "caption": "green box", "negative": "z", "box": [0, 0, 4, 4]},
        ],
    )
    scorer = FakeEmbeddingScorer()
    result = densecap_eval.evaluate(
        scorer, "files/negatives", data_root=path, n_boot=0, use_cache=False
    )
    frame = result.examples
    pairs = list(zip(frame["positive"], frame["negative"], strict=True))
    assert pairs == [("a red one", "a blue one"), ("second red row", "x"), ("second red row", "y")]
    red = load_region(Region(str((tmp_path / "red.png").absolute())))
    scores = scorer.score([red], [p for p, _ in pairs] + [n for _, n in pairs]).numpy()[0]
    expected = scores[:3] > scores[3:]
    assert frame["neg_correct"].tolist() == expected.tolist()
    metrics = result.metrics["files/negatives"]
    assert metrics["neg"] == pytest.approx(expected.mean())
    assert metrics["images_without_negatives"] == 1  # green: its only negative is a region's
