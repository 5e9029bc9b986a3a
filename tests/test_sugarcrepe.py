"""SugarCrepe: the released layout, file-order items, photo regions shared, loud skips, the strict
rule, the end-to-end run against a direct computation, and the pinned download."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, load_region
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets import load_dataset
from densecap_eval.datasets.regions import Region
from densecap_eval.datasets.sugarcrepe import loader as sc
from densecap_eval.engine.plan import ScoringPlan
from densecap_eval.tasks import get_task

COLOURS = {"000000000001.jpg": "red", "000000000002.jpg": "blue", "000000000003.png": "green"}


def _photos(images: Path) -> None:
    images.mkdir(parents=True, exist_ok=True)
    for name, colour in COLOURS.items():
        Image.new("RGB", (20, 14), colour).save(images / name)
    # COCO holds greyscale JPEGs; main_eval.py opens them without convert().
    Image.new("L", (12, 18), 90).save(images / "000000000004.jpg")


SWAP_ATT = {  # keys not contiguous, and not in numeric order in the file
    "0": {"filename": "000000000001.jpg", "caption": "a red square on white",
          "negative_caption": "a white square on red"},
    "2": {"filename": "000000000002.jpg", "caption": "a blue sky over grass",
          "negative_caption": "a green sky over blue grass"},
    "10": {"filename": "000000000001.jpg", "caption": "the red wall",
           "negative_caption": "the red wall"},  # a tie: wrong under the strict rule
    "5": {"filename": "000000000004.jpg", "caption": "a grey photo",
          "negative_caption": "a colourful photo"},
    "7": {"filename": "000000000003.png", "caption": "green leaves",
          "negative_caption": "red leaves"},
}  # fmt: skip


def _root(tmp_path: Path, *, data_dir: bool = True, items: dict[str, Any] | None = None) -> Path:
    root = tmp_path / "sugarcrepe"
    folder = root / "data" if data_dir else root
    folder.mkdir(parents=True)
    (folder / "swap_att.json").write_text(json.dumps(items if items is not None else SWAP_ATT))
    (folder / "add_obj.json").write_text(json.dumps({"0": SWAP_ATT["0"]}))
    _photos(root / "coco" / "images" / "val2017")
    return root


def test_items_in_file_order_with_options_and_answer(tmp_path: Path) -> None:
    root = _root(tmp_path)
    ds = load_dataset("sugarcrepe", root=str(root))
    assert ds.splits() == ["add_obj", "swap_att"]
    inst = get_task("sugarcrepe/swap_att").prepare(ds)
    assert [ex.id for ex in inst.examples] == [f"swap_att/{k}" for k in ("0", "2", "10", "5", "7")]
    first = inst.examples[0]
    assert first.options == ("a red square on white", "a white square on red")
    assert first.answer == 0 and first.image == "000000000001.jpg" and first.group == "swap_att"
    assert inst.spec.rule == "strict" and inst.split == "swap_att" and inst.skipped == []


def test_root_level_files_and_images_root_option(tmp_path: Path) -> None:
    root = _root(tmp_path, data_dir=False)
    ds = load_dataset("sugarcrepe", root=str(root))
    assert ds.data_dir == root
    elsewhere = tmp_path / "coco-val"
    _photos(elsewhere)
    ds = load_dataset("sugarcrepe", root=str(root), images_root=str(elsewhere))
    record = next(iter(ds.records("swap_att")))
    assert record.image == elsewhere / "000000000001.jpg"


def test_a_repeated_photo_is_one_region(tmp_path: Path) -> None:
    inst = get_task("sugarcrepe/swap_att").prepare(
        load_dataset("sugarcrepe", root=str(_root(tmp_path)))
    )
    plan = ScoringPlan()
    inst.add_to_plan(plan)
    assert len(inst.examples) == 5 and len(plan.regions) == 4  # 000000000001.jpg twice
    assert all(r.box is None for r in plan.regions)


def test_missing_photo_and_bad_record_skipped_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = dict(SWAP_ATT)
    items["11"] = {"filename": "000000000099.jpg", "caption": "x", "negative_caption": "y"}
    items["12"] = {"filename": "000000000001.jpg", "caption": "x"}  # no negative_caption
    root = _root(tmp_path, items=items)
    with caplog.at_level(logging.WARNING, logger="densecap_eval.datasets"):
        inst = get_task("sugarcrepe/swap_att").prepare(load_dataset("sugarcrepe", root=str(root)))
    assert len(inst.examples) == 5
    ds_skipped = [s.image for s in inst.skipped]
    assert ds_skipped == ["swap_att/11"]  # named by the item; the reason names the photo
    assert "000000000099.jpg" in inst.skipped[0].reason
    text = caplog.text
    assert "000000000099.jpg" in text and "not found" in text
    assert "swap_att/12" in text and "negative_caption" in text
    strict = load_dataset("sugarcrepe", root=str(root), strict=True)
    with pytest.raises(BadRecordError, match="000000000099"):  # the first problem stops
        get_task("sugarcrepe/swap_att").prepare(strict)
    del items["11"]
    root = _root(tmp_path / "again", items=items)
    strict = load_dataset("sugarcrepe", root=str(root), strict=True)
    with pytest.raises(BadRecordError, match="swap_att/12"):
        get_task("sugarcrepe/swap_att").prepare(strict)


def test_missing_files_and_photo_folder_raise(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="download sugarcrepe"):
        load_dataset("sugarcrepe", root=str(empty))
    root = _root(tmp_path)
    with pytest.raises(DatasetError, match=r"val2017\.zip"):
        load_dataset("sugarcrepe", root=str(root), images_root=str(tmp_path / "nowhere"))
    ds = load_dataset("sugarcrepe", root=str(root))
    with pytest.raises(DatasetError, match=r"replace_rel\.json not found"):
        get_task("sugarcrepe/replace_rel").prepare(ds)


def _direct(root: Path, items: dict[str, Any]) -> list[bool]:
    """main_eval.py's loop, with the fake scorer's own scores: pos > neg per item."""
    scorer = FakeEmbeddingScorer()
    out = []
    for value in items.values():
        photo = root / "coco" / "images" / "val2017" / value["filename"]
        s = scorer.score([load_region(Region(str(photo)))],
                         [value["caption"], value["negative_caption"]]).numpy()[0]  # fmt: skip
        out.append(bool(s[0] > s[1]))
    return out


def test_evaluate_equals_a_direct_computation(tmp_path: Path) -> None:
    root = _root(tmp_path)
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "sugarcrepe/swap_att", data_root=root, n_boot=0, use_cache=False
    )
    want = _direct(root, SWAP_ATT)
    assert want[2] is False  # the tie counts wrong
    metrics = result.metrics["sugarcrepe/swap_att"]
    assert metrics["accuracy"] == pytest.approx(np.mean(want))
    assert metrics["n"] == 5 and metrics["rule"] == "strict" and metrics["ties"] == 1
    assert result.examples["accuracy_correct"].tolist() == want


# --- download ---------------------------------------------------------------------------------


def _serve(served: Path, monkeypatch: pytest.MonkeyPatch, base: str) -> dict[str, bytes]:
    (served / "data").mkdir()
    files = {}
    digests = {}
    for c in sc.CATEGORIES:
        data = json.dumps({"0": SWAP_ATT["0"], "c": c}).encode()
        (served / "data" / f"{c}.json").write_bytes(data)
        files[c], digests[c] = data, hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(sc, "SOURCES", {**sc.SOURCES, **sc.category_sources(base, digests)})
    return files


def test_download_fetches_the_seven_pinned_files(
    tmp_path: Path, server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, base = server
    files = _serve(served, monkeypatch, base)
    root = tmp_path / "root"
    message = sc.download(root, progress=False)
    for c, data in files.items():
        assert (root / "data" / f"{c}.json").read_bytes() == data
    assert "val2017.zip" in message.todo and str(root / "data") in message.done


def test_download_checksum_mismatch_and_url_mode(
    tmp_path: Path, server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, base = server
    files = _serve(served, monkeypatch, base)
    digests = {c: hashlib.sha256(data).hexdigest() for c, data in files.items()}
    bad = sc.category_sources(base, {**digests, "swap_obj": "0" * 64})
    monkeypatch.setattr(sc, "SOURCES", {**sc.SOURCES, **bad})
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        sc.download(root, progress=False)
    assert not (root / "data" / "swap_obj.json").exists()
    url = f"{base}/data/swap_att.json"
    sc.download(root, url=url, sha256=hashlib.sha256(files["swap_att"]).hexdigest(), progress=False)
    assert (root / "data" / "swap_att.json").read_bytes() == files["swap_att"]
    with pytest.raises(DownloadError, match="does not name"):
        sc.download(root, url=f"{base}/data/other.json", sha256="0" * 64, progress=False)


def test_pinned_digests_cover_every_category() -> None:
    assert set(sc.SUGARCREPE_SHA256) == set(sc.CATEGORIES)
    assert sc.SUGARCREPE_RAW.endswith(sc.SUGARCREPE_COMMIT) and len(sc.SUGARCREPE_COMMIT) == 40
