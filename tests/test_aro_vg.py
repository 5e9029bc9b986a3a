"""ARO VG-Relation / VG-Attribution: the loader, the DCI protocol's averages, end to end."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, load_region
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets import load_dataset
from densecap_eval.datasets.aro.loader import GDRIVE_IDS, AROVGDataset, download, pil_box
from densecap_eval.datasets.aro.tasks import (
    SYMMETRIC_RELATIONS,
    VG_ATTRIBUTION,
    VG_RELATION,
    attribution_metrics,
    relation_metrics,
)
from densecap_eval.datasets.regions import Region
from densecap_eval.tasks.choice import ChoiceExample

# --- data in ARO's layout -------------------------------------------------------------------


def _photos(images: Path) -> None:
    rng = np.random.default_rng(0)
    images.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / "1.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / "2.jpg")
    grey = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(images / "grey.png")  # ARO converts to RGB


def _case(image: str, box: tuple[float, ...], true: str, false: str, **extra: Any) -> dict:
    x, y, w, h = box
    return {"image_id": "vg-1", "image_path": image, "bbox_x": x, "bbox_y": y, "bbox_w": w,
            "bbox_h": h, "true_caption": true, "false_caption": false, **extra}  # fmt: skip


ON, ABOVE, NEXT, BEHIND = ({"relation_name": r} for r in ("on", "above", "next to", "behind"))
RELATION_CASES = [
    _case("1.png", (0, 0, 20, 15), "the cup is on the table", "the table is on the cup", **ON),
    _case("1.png", (10, 5, 25, 20), "the hat is on the man", "the man is on the hat", **ON),
    _case("grey.png", (2.5, 1.5, 20.0, 12.0), "a lamp above a bed", "a bed above a lamp", **ABOVE),
    # 3: reaches outside the photo (Pillow pads with black); "next to" is symmetric
    _case("2.jpg", (12, 12, 20, 20), "a dog next to a cat", "a cat next to a dog", **NEXT),
    # 4: the same caption twice, a tie: argmax picks the negative
    _case("2.jpg", (0, 0, 24, 24), "a car behind a tree", "a car behind a tree", **BEHIND),
    _case("missing.jpg", (0, 0, 5, 5), "a b", "b a", **ON),  # 5: no photo
    _case("1.png", (0, 0, -3, 5), "a b", "b a", **ON),  # 6: negative width
    _case("1.png", (0, 0, 5, 5), "a b", "", **ON),  # 7: blank caption
    _case("1.png", (0, 0, 5, 5), "a b", "b a"),  # 8: no relation_name
    _case("1.png", (0, "0", 5, 5), "a b", "b a", **ON),  # 9: bbox not a number
]
BAD_RELATION = [5, 6, 7, 8, 9]


def _attribution_cases() -> list[dict]:
    """24 "red_blue" (dropped), 25 "blue_red" (kept): the ordered pair is the key."""
    cases = []
    for i in range(49):
        pair = ["red", "blue"] if i < 24 else ["blue", "red"]
        image = ("1.png", "2.jpg", "grey.png")[i % 3]
        box = (i % 7, i % 5, 10 + i % 4, 8 + i % 6)
        true, false = f"the {pair[0]} shirt {i}", f"the {pair[1]} shirt {i}"
        cases.append(_case(image, box, true, false, attributes=pair))
    cases.append(_case("1.png", (0, 0, 5, 5), "a", "b", attributes=["red"]))  # 49: one attribute
    return cases


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "aro"
    _photos(root / "images")
    (root / "visual_genome_relation.json").write_text(json.dumps(RELATION_CASES))
    (root / "visual_genome_attribution.json").write_text(json.dumps(_attribution_cases()))
    return root


# --- the loader -----------------------------------------------------------------------------


def test_items_are_typed_and_bad_cases_are_named_by_index(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = AROVGDataset(root)
    assert ds.splits() == ["relation", "attribution"]
    with caplog.at_level(logging.WARNING, logger="densecap_eval.datasets"):
        items = list(ds.items("relation", check_photos=True))
    assert [it.index for it in items] == [0, 1, 2, 3, 4]
    first = items[0]
    assert (first.image, first.box, first.group) == ("1.png", (0, 0, 20, 15), "on")
    assert (first.true_caption, first.false_caption) == (
        "the cup is on the table",
        "the table is on the cup",
    )
    assert items[2].bbox == (2.5, 1.5, 20.0, 12.0) and items[2].box == (2, 2, 22, 14)
    assert [s.image for s in ds.skipped] == [f"relation#{i}" for i in BAD_RELATION]
    reasons = " | ".join(s.reason for s in ds.skipped)
    for word in ("not found", "negative", "false_caption", "relation_name", "bbox_y"):
        assert word in reasons
    assert "visual_genome_relation.json[5]" in caplog.text
    attribution = list(ds.items("attribution"))
    assert len(attribution) == 49 and attribution[0].group == "red_blue"
    assert ds.skipped[-1].image == "attribution#49"


def test_strict_stops_at_the_first_bad_case(root: Path) -> None:
    ds = load_dataset("aro-vg", root=str(root), strict=True)
    with pytest.raises(BadRecordError, match=r"relation#5: photo .*missing\.jpg not found"):
        list(ds.items("relation", check_photos=True))
    with pytest.raises(BadRecordError, match="relation#6"):
        list(ds.records("relation"))  # records do not check photos


def test_records_hold_the_crop_and_both_captions(root: Path) -> None:
    ds = AROVGDataset(root)
    rec = next(iter(ds.records("relation")))
    assert rec.id == "relation#0" and rec.image == root / "images" / "1.png"
    (region,) = rec.regions
    assert region.box == (0, 0, 20, 15)
    assert [(t.role, t.text) for t in region.texts] == [
        ("positive", "the cup is on the table"),
        ("negative", "the table is on the cup"),
    ]


@pytest.mark.parametrize(
    ("bbox", "box"),
    [
        ((0, 0, 20, 15), (0, 0, 20, 15)),
        ((2.5, 1.5, 20.0, 12.0), (2, 2, 22, 14)),  # round half to even, after the sum
        ((0.5, 0.4, 1.0, 0.2), (0, 0, 2, 1)),  # x + w = 1.5 -> 2, not round(0.5) + round(1.0)
        ((12, 12, 20, 20), (12, 12, 32, 32)),  # outside the photo: Pillow pads, kept as is
    ],
)
def test_box_is_what_pillow_crops_for_aro(
    root: Path, bbox: tuple[float, float, float, float], box: tuple[int, ...]
) -> None:
    assert pil_box(*bbox) == box
    x, y, w, h = bbox
    for name in ("1.png", "2.jpg", "grey.png"):
        path = root / "images" / name
        aro = Image.open(path).convert("RGB").crop((x, y, x + w, y + h))  # ARO's __getitem__
        ours = load_region(Region(str(path), pil_box(*bbox)))  # the engine's crop
        assert ours.size == aro.size and ours.tobytes() == aro.tobytes()


def test_missing_images_or_json_say_how_to_get_them(tmp_path: Path) -> None:
    (tmp_path / "visual_genome_relation.json").write_text("[]")
    with pytest.raises(DatasetError, match=r"images/ .*densecap-eval download aro-vg") as err:
        AROVGDataset(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "visual_genome_relation.json").unlink()
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"neither visual_genome_relation\.json"):
        AROVGDataset(tmp_path)
    (tmp_path / "visual_genome_relation.json").write_text("[]")
    ds = AROVGDataset(tmp_path)
    assert ds.splits() == ["relation"]
    with pytest.raises(DatasetError, match=GDRIVE_IDS["visual_genome_attribution.json"]):
        list(ds.items("attribution"))
    (tmp_path / "visual_genome_relation.json").write_text('{"a": 1}')
    with pytest.raises(DatasetError, match="not a JSON list"):
        list(AROVGDataset(tmp_path).items("relation"))


# --- the averages, by hand ------------------------------------------------------------------


def _ex(group: str, i: int) -> ChoiceExample:
    return ChoiceExample(f"x#{i}", "p.jpg", Region("p.jpg"), ("f", "t"), 1, group)


def _groups(*groups: tuple[str, list[bool]]) -> tuple[np.ndarray, list[ChoiceExample]]:
    flags = [c for _, cs in groups for c in cs]
    names = [g for g, cs in groups for _ in cs]
    return np.array(flags), [_ex(g, i) for i, g in enumerate(names)]


def test_relation_macro_drops_symmetric_relations() -> None:
    assert "next to" in SYMMETRIC_RELATIONS and "on" not in SYMMETRIC_RELATIONS
    correct, examples = _groups(
        ("on", [True, False]), ("above", [True]), ("next to", [False, False, False])
    )
    m = relation_metrics(correct, examples)
    assert m["macro_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["accuracy"] == pytest.approx(2 / 6)
    assert (m["groups"], m["groups_dropped"], m["n_macro"]) == (2, 1, 3)
    assert m["by_group"] == {
        "above": {"accuracy": 1.0, "n": 1, "used": True},
        "next to": {"accuracy": 0.0, "n": 3, "used": False},
        "on": {"accuracy": 0.5, "n": 2, "used": True},
    }
    assert list(m["by_group"]) == ["above", "next to", "on"]  # np.unique's order


def test_attribution_macro_needs_25_examples_per_ordered_pair() -> None:
    correct, examples = _groups(
        ("red_blue", [True] * 24), ("blue_red", [True] * 5 + [False] * 20), ("a_b", [False] * 30)
    )
    m = attribution_metrics(correct, examples)
    assert m["macro_accuracy"] == pytest.approx((5 / 25 + 0.0) / 2)
    assert (m["groups"], m["groups_dropped"], m["n_macro"]) == (2, 1, 55)
    assert m["by_group"]["red_blue"] == {"accuracy": 1.0, "n": 24, "used": False}
    assert "note" not in m


def test_attribution_without_a_group_of_25_has_no_macro() -> None:
    correct, examples = _groups(("red_blue", [True] * 24))
    m = attribution_metrics(correct, examples)
    assert m["macro_accuracy"] is None and m["groups"] == 0 and m["groups_dropped"] == 1
    assert "crashes" in m["note"] and m["accuracy"] == 1.0


# --- end to end -----------------------------------------------------------------------------


def _direct(root: Path, file: str, bad: list[int], key: Any, keep: Any) -> dict[str, Any]:
    """ARO + run_aro.py on the fake's own scores (the ``bad`` cases left out): PIL crop of the
    stored numbers, options [false, true], correct iff argmax == 1, macro over kept groups."""
    scorer = FakeEmbeddingScorer()
    groups: dict[str, list[bool]] = {}
    flags = []
    for i, case in enumerate(json.loads((root / file).read_text())):
        if i in bad:
            continue
        x, y, w, h = (case[k] for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
        path = root / "images" / case["image_path"]
        image = Image.open(path).convert("RGB").crop((x, y, x + w, y + h))
        s = scorer.score([image], [case["false_caption"], case["true_caption"]]).numpy()[0]
        flags.append(bool(np.argmax(s) == 1))
        groups.setdefault(key(case), []).append(flags[-1])
    kept = [np.mean(v) for g, v in sorted(groups.items()) if keep(g, len(v))]
    return {"macro_accuracy": float(np.mean(kept)), "accuracy": float(np.mean(flags)),
            "flags": flags}  # fmt: skip


def test_evaluate_vg_relation_equals_the_reference_computation(root: Path) -> None:
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "aro/vg_relation", data_root=root, n_boot=0, use_cache=False
    )
    m = result.metrics["aro/vg_relation"]
    want = _direct(root, "visual_genome_relation.json", BAD_RELATION, lambda c: c["relation_name"],
                   lambda g, n: g not in SYMMETRIC_RELATIONS)  # fmt: skip
    assert m["macro_accuracy"] == pytest.approx(want["macro_accuracy"])
    assert m["accuracy"] == pytest.approx(want["accuracy"])
    assert result.examples["accuracy_correct"].tolist() == want["flags"]
    assert (m["n"], m["groups"], m["groups_dropped"], m["rule"]) == (5, 3, 1, "first")
    assert not m["by_group"]["next to"]["used"]
    # the tie (the same caption twice) picks the negative
    assert m["ties"] == 1 and m["by_group"]["behind"]["accuracy"] == 0.0
    tie_row = result.examples.set_index("entry_key").loc["relation#4"]
    assert bool(tie_row["accuracy_tie"]) and not bool(tie_row["accuracy_correct"])
    assert sorted(s.image for s in result.skipped) == [f"relation#{i}" for i in BAD_RELATION]
    assert VG_RELATION.protocol == "dci-aro"


def test_evaluate_vg_attribution_equals_the_reference_computation(root: Path) -> None:
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "aro/vg_attribution", data_root=root, n_boot=0, use_cache=False
    )
    m = result.metrics["aro/vg_attribution"]
    want = _direct(root, "visual_genome_attribution.json", [49],
                   lambda c: f"{c['attributes'][0]}_{c['attributes'][1]}",
                   lambda g, n: n >= 25)  # fmt: skip
    assert m["macro_accuracy"] == pytest.approx(want["macro_accuracy"])
    assert m["macro_accuracy"] == pytest.approx(m["by_group"]["blue_red"]["accuracy"])
    assert m["accuracy"] == pytest.approx(want["accuracy"])
    assert (m["n"], m["groups"], m["groups_dropped"]) == (49, 1, 1)
    assert [s.image for s in result.skipped] == ["attribution#49"]


def test_a_task_reads_only_its_own_split(root: Path) -> None:
    ds = AROVGDataset(root)
    with pytest.raises(DatasetError, match="reads split 'attribution'"):
        VG_ATTRIBUTION.prepare(ds, split="relation")


# --- download -------------------------------------------------------------------------------


def test_download_without_a_mirror_prints_the_gdown_steps(tmp_path: Path) -> None:
    message = download(tmp_path / "aro")
    for file_id in GDRIVE_IDS.values():
        assert f"gdown {file_id}" in message.todo  # type: ignore[attr-defined]
    assert "vgr_vga_images.zip" in message and "images/" in message
    assert not (tmp_path / "aro").exists()  # nothing fetched, nothing created
    with pytest.raises(DownloadError, match="--url needs --sha256"):
        download(tmp_path, url="http://127.0.0.1:9/vgr_vga_images.zip")


def test_download_from_a_mirror_extracts_images(server: tuple[Path, str], tmp_path: Path) -> None:
    served, base = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images/1.png", b"png bytes")
        zf.writestr("visual_genome_relation.json", "[]")
    (served / "vgr_vga_images.zip").write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    root = tmp_path / "aro"
    message = download(root, url=f"{base}/vgr_vga_images.zip", sha256=sha, progress=False)
    assert (root / "images" / "1.png").read_bytes() == b"png bytes"
    assert (root / "visual_genome_relation.json").is_file()
    assert "visual_genome_attribution.json" in message.todo  # type: ignore[attr-defined]
    assert AROVGDataset(root).splits() == ["relation"]
