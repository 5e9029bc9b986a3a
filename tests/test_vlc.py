"""VL-CheckList as DCI runs it: the tree, drop-then-cap, the strict rule, per-file rounding, the
corpus.json means and the groups (by hand), loud drops, the end-to-end run against a direct
computation, and the pinned download."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
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
from densecap_eval.datasets.regions import Region
from densecap_eval.datasets.vlc import loader as vlc_data
from densecap_eval.datasets.vlc.loader import DCI_FILES, VLCFile, git_blob_id, parse_flat_yaml
from densecap_eval.datasets.vlc.tasks import CAP, Layout, aggregate
from densecap_eval.tasks import get_task
from densecap_eval.tasks.choice import ChoiceExample

PHOTOS = {  # IMG_ROOT-relative paths, as DCI's download script lays them out
    "vg/VG_100K/1.jpg": "red",
    "vg/VG_100K_2/2.jpg": "blue",
    "swig/riding_1.jpg": "green",
    "hake/hico_20160224_det/images/train2015/h1.jpg": "L",  # a greyscale JPEG
}
IMG_ROOT = {"vg": "vg/", "vaw": "vg/", "hake": "hake/"}  # the rest: swig


def _corpus() -> dict[str, dict[str, list[str]]]:
    """corpus.json as VL-CheckList ships it (category -> dataset -> file keys, same order)."""
    out: dict[str, dict[str, list[str]]] = {}
    for kind in ("Size/large", "Size/medium", "Size/small", "Location/center", "Location/mid",
                 "Location/margin"):  # fmt: skip
        out[kind.split("/")[1]] = {
            "vg": [f"Object_{kind.replace('/', '_')}_vg_obj",
                   f"Object_{kind.replace('/', '_')}_vg_subj"],
            "swig": [f"Object_{kind.replace('/', '_')}_swig_{r}"
                     for r in ("agent", "destination", "item", "tool")],
            "hake": [f"Object_{kind.replace('/', '_')}_hake"],
        }  # fmt: skip
    for attr, key in (("color", "color"), ("material", "material"), ("action", "action_a"),
                      ("size", "size"), ("state", "state")):  # fmt: skip
        out[key] = {d: [f"Attribute_{attr}_{d}"] for d in ("vg", "vaw")}
    out["action_r"] = {d: [f"Relation_action_{d}"] for d in ("vg", "swig", "hake")}
    out["spatial"] = {"vg": ["Relation_spatial_vg"]}
    return out


def _rel_photo(file: VLCFile) -> str:
    """A photo below the file's IMG_ROOT for its items."""
    base = file.name.split("_")[0]
    if base == "hake":
        return "hico_20160224_det/images/train2015/h1.jpg"
    if base == "swig":
        return "riding_1.jpg"
    return "VG_100K/1.jpg"


def _write_tree(root: Path, items: dict[str, list[Any]] | None = None) -> Path:
    """The VL-CheckList tree for every file DCI runs (one item each unless ``items`` says)."""
    items = items or {}
    (root / "corpus.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "corpus.json").write_text(json.dumps(_corpus()))
    for file in DCI_FILES:
        anno = f"data/{file.key}.json"
        img_root = IMG_ROOT.get(file.name.split("_")[0], "swig/")
        config = root / file.config
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'ANNO_PATH: "{anno}"\nIMG_ROOT: "{img_root}"\nTYPE: "TUPLE_JSON"\n')
        default = [[_rel_photo(file), {"POS": [f"pos {file.key}"], "NEG": [f"neg {file.key}"]}]]
        (root / anno).parent.mkdir(parents=True, exist_ok=True)
        (root / anno).write_text(json.dumps(items.get(file.key, default)))
    for rel, colour in PHOTOS.items():
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if colour == "L":
            Image.new("L", (10, 16), 70).save(path)
        else:
            Image.new("RGB", (16, 10), colour).save(path)
    return root


def _item(photo: str, pos: str, neg: str) -> list[Any]:
    return [photo, {"POS": [pos, "another positive"], "NEG": [neg, "another negative"]}]


def test_dci_runs_match_the_pinned_tree() -> None:
    assert len(DCI_FILES) == 56 and len({f.key for f in DCI_FILES}) == 56
    pinned = set(vlc_data.VLC_BLOBS)
    assert {f.config.as_posix() for f in DCI_FILES} <= pinned
    assert {k for keys in _corpus().values() for ks in keys.values() for k in ks} == {
        f.key for f in DCI_FILES
    }
    assert VLCFile("Object/Size/large", "vg_obj").key == "Object_Size_large_vg_obj"
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


def test_flat_yaml_parser() -> None:
    text = 'ANNO_PATH: "data/Relation/vg/spatial.json"\nIMG_ROOT: "vg/"\nTYPE: "TUPLE_JSON"\n'
    assert parse_flat_yaml(text, where="x") == {
        "ANNO_PATH": "data/Relation/vg/spatial.json", "IMG_ROOT": "vg/", "TYPE": "TUPLE_JSON",
    }  # fmt: skip
    with pytest.raises(DatasetError, match="x:1"):
        parse_flat_yaml("DATA:\n  - a\n", where="x")


def test_entries_resolve_photos_below_img_root(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "vlc")
    ds = load_dataset("vlc", root=str(root))
    file = next(f for f in DCI_FILES if f.key == "Object_Location_center_hake")
    (entry,) = ds.entries(file)
    assert entry.image == "hake/hico_20160224_det/images/train2015/h1.jpg"
    assert entry.path == root / "images" / entry.image and entry.path.is_file()
    assert (entry.positive, entry.negative) == (f"pos {file.key}", f"neg {file.key}")
    other = tmp_path / "photos"
    (root / "images").rename(other)
    with pytest.raises(DatasetError, match="images_512"):
        load_dataset("vlc", root=str(root))
    ds = load_dataset("vlc", root=str(root), images_root=str(other))
    assert next(iter(ds.entries(file))).path == other / entry.image  # type: ignore[union-attr]


def test_drop_missing_then_cap_at_1000(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    photos = ["VG_100K/1.jpg", "VG_100K_2/2.jpg"]
    items = [_item(photos[i % 2], f"pos {i}", f"neg {i}") for i in range(1003)]
    items[3][0] = "VG_100K/missing.jpg"  # dropped before the cap: 1001 kept items remain
    items[1002][0] = "VG_100K/never_read.jpg"  # after the 1000th kept item: never read
    root = _write_tree(tmp_path / "vlc", {"Relation_spatial_vg": items})
    ds = load_dataset("vlc", root=str(root))
    with caplog.at_level(logging.WARNING):
        inst = get_task("vlc/relation").prepare(ds)
    spatial = [ex for ex in inst.examples if ex.group == "Relation_spatial_vg"]
    assert len(spatial) == CAP == 1000
    indices = [ex.meta["index"] for ex in spatial]
    assert indices == [i for i in range(1001) if i != 3]  # item 1001 is past the cap
    assert spatial[0].options == ("pos 0", "neg 0") and spatial[0].answer == 0
    assert [s.image for s in inst.skipped] == ["Relation_spatial_vg#3"]  # the item
    assert "vg/VG_100K/missing.jpg" in inst.skipped[0].reason  # and its photo
    assert "missing.jpg" in caplog.text and "never_read" not in caplog.text
    assert "Relation_spatial_vg: 1 item(s) dropped" in caplog.text
    with pytest.raises(BadRecordError, match=r"missing\.jpg"):
        get_task("vlc/relation").prepare(load_dataset("vlc", root=str(root), strict=True))


def _examples(outcomes: dict[str, list[bool]]) -> tuple[np.ndarray, list[ChoiceExample]]:
    examples, correct = [], []
    for key, oks in outcomes.items():
        for i, ok in enumerate(oks):
            examples.append(ChoiceExample(f"{key}#{i}", "p", Region("p"), ("a", "b"), 0, key))
            correct.append(ok)
    return np.array(correct, dtype=bool), examples


def test_rounding_and_means_by_hand() -> None:
    layout = Layout(
        {"large": {"vg": ("f1", "f2"), "hake": ("f3",)}, "spatial": {"vg": ("f4",)}},
        {"f1": 2},
    )
    correct, examples = _examples(
        {"f1": [True, True, False], "f2": [True], "f3": [False, True, False], "f4": [False] * 2}
    )
    got = aggregate(correct, examples, layout=layout)
    # total_acc: f1 round(2/3, 4) = 0.6667, f2 1.0, f3 round(1/3, 4) = 0.3333, f4 0.0
    assert got["by_file"] == {
        "f1": {"accuracy": 0.6667, "n": 3, "dropped": 2},
        "f2": {"accuracy": 1.0, "n": 1, "dropped": 0},
        "f3": {"accuracy": 0.3333, "n": 3, "dropped": 0},
        "f4": {"accuracy": 0.0, "n": 2, "dropped": 0},
    }
    # large = mean(vg: (0.6667 + 1.0) / 2, hake: 0.3333) = 0.583325; unrounded 0.58333...
    assert got["by_category"]["large"] == pytest.approx(0.583325, abs=1e-12)
    assert got["by_category"]["spatial"] == 0.0
    assert got["accuracy"] == pytest.approx(0.2916625, abs=1e-12)
    assert got["empty_files"] == []


def test_a_file_with_no_item_left_is_none_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    layout = Layout({"action_r": {"vg": ("a",), "swig": ("b",)}, "spatial": {"vg": ("c",)}}, {})
    correct, examples = _examples({"a": [True], "c": [True, False]})
    with caplog.at_level(logging.WARNING):
        got = aggregate(correct, examples, layout=layout)
    assert got["by_file"]["b"] == {"accuracy": None, "n": 0, "dropped": 0}
    assert got["by_category"] == {"action_r": None, "spatial": 0.5}
    assert got["accuracy"] is None and got["empty_files"] == ["b"]
    assert "divide by zero" in caplog.text


def test_a_dataset_without_files_scores_zero_as_the_peer() -> None:
    layout = Layout({"spatial": {"vg": ("c",), "swig": ()}}, {})
    correct, examples = _examples({"c": [True]})
    assert aggregate(correct, examples, layout=layout)["by_category"]["spatial"] == 0.5


def _direct(root: Path, categories: tuple[str, ...]) -> tuple[float, dict[str, float]]:
    """DCI's run and score_vlc, with the fake scorer's own scores."""
    scorer = FakeEmbeddingScorer()
    corpus = json.loads((root / "corpus.json").read_text())
    by_key = {f.key: f for f in DCI_FILES}
    total_acc: dict[str, float] = {}
    for category in categories:
        for keys in corpus[category].values():
            for key in keys:
                config = parse_flat_yaml((root / by_key[key].config).read_text(), where=key)
                kept = []
                for photo, texts in json.loads((root / config["ANNO_PATH"]).read_text()):
                    path = root / "images" / posixpath.join(config["IMG_ROOT"], photo)
                    if path.exists():
                        kept.append((path, texts))
                right = 0
                for path, texts in kept[:1000]:
                    image = load_region(Region(str(path)))
                    s = scorer.score([image], [texts["POS"][0], texts["NEG"][0]]).numpy()[0]
                    right += bool(s[0] > s[1])
                total_acc[key] = round(float(right) / len(kept[:1000]), 4)
    scores = {}
    for category in categories:
        data_score = [sum(total_acc[k] for k in keys) / len(keys)
                      for keys in corpus[category].values()]  # fmt: skip
        scores[category] = sum(data_score) / len(data_score)
    return sum(scores.values()) / len(scores), scores


def test_evaluate_equals_a_direct_computation(tmp_path: Path) -> None:
    items = {
        "Relation_action_vg": [
            _item("VG_100K/1.jpg", "a man riding a horse", "a horse riding a man"),
            _item("VG_100K/gone.jpg", "x", "y"),  # dropped
            _item("VG_100K_2/2.jpg", "a cat on a mat", "a cat on a mat"),  # a tie: wrong
            _item("VG_100K_2/2.jpg", "blue sky", "sky blue"),
        ],
        "Relation_action_hake": [
            _item("hico_20160224_det/images/train2015/h1.jpg", "grey person", "red person"),
            _item("hico_20160224_det/images/train2015/h1.jpg", "person eats", "person sleeps"),
            _item("hico_20160224_det/images/train2015/h1.jpg", "a b c", "c b a"),
        ],
    }
    root = _write_tree(tmp_path / "vlc", items)
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "vlc/relation", data_root=root, n_boot=0, use_cache=False
    )
    metrics = result.metrics["vlc/relation"]
    accuracy, by_category = _direct(root, ("action_r", "spatial"))
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert metrics["by_category"] == pytest.approx(by_category, abs=1e-12)
    assert metrics["by_file"]["Relation_action_vg"]["n"] == 3
    assert metrics["by_file"]["Relation_action_vg"]["dropped"] == 1
    assert metrics["n"] == 3 + 1 + 3 + 1 and metrics["ties"] >= 1 and metrics["rule"] == "strict"
    assert [s.image for s in result.skipped] == ["Relation_action_vg#1"]
    assert "vg/VG_100K/gone.jpg" in result.skipped[0].reason


def test_object_group_end_to_end(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "vlc")
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "vlc/object", data_root=root, n_boot=0, use_cache=False
    )
    metrics = result.metrics["vlc/object"]
    accuracy, by_category = _direct(root, ("large", "medium", "small", "center", "mid", "margin"))
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert metrics["by_category"] == pytest.approx(by_category, abs=1e-12)
    assert len(metrics["by_file"]) == 42 and metrics["n"] == 42


def test_unknown_corpus_file_raises(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "vlc")
    corpus = _corpus()
    corpus["spatial"]["vg"].append("Relation_spatial_swig")
    (root / "corpus.json").write_text(json.dumps(corpus))
    with pytest.raises(DatasetError, match="Relation_spatial_swig"):
        get_task("vlc/relation").prepare(load_dataset("vlc", root=str(root)))


# --- download ---------------------------------------------------------------------------------

SMALL = {
    "corpus.json": b'{"spatial": {"vg": ["Relation_spatial_vg"]}}',
    "corpus/v1/Relation/spatial/vg.yaml": b'ANNO_PATH: "data/Relation/vg/spatial.json"\n',
    "data/Relation/vg/spatial.json": b'[["VG_100K/1.jpg", {"POS": ["a"], "NEG": ["b"]}]]',
}


def test_download_checks_git_blob_ids(
    tmp_path: Path, server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, base = server
    for rel, data in SMALL.items():
        (served / rel).parent.mkdir(parents=True, exist_ok=True)
        (served / rel).write_bytes(data)
    blobs = {r: git_blob_id(d) for r, d in SMALL.items()}
    monkeypatch.setattr(vlc_data, "SOURCES", vlc_data.blob_sources(base, blobs))
    root = tmp_path / "root"
    message = vlc_data.download(root, progress=False)
    for rel, data in SMALL.items():
        assert (root / rel).read_bytes() == data
    assert "images_512.zip" in message.todo
    (served / "data/Relation/vg/spatial.json").write_bytes(b"[]")
    other = tmp_path / "other"
    with pytest.raises(DownloadError, match="git blob id"):
        vlc_data.download(other, progress=False)
    assert not (other / "corpus.json").exists()  # nothing installed


def test_download_from_an_archive(
    tmp_path: Path, server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, base = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for rel, data in SMALL.items():
            zf.writestr(f"VL-CheckList-3bb214e/{rel}", data)
    (served / "vlc.zip").write_bytes(buffer.getvalue())
    blobs = {r: git_blob_id(d) for r, d in SMALL.items()}
    monkeypatch.setattr(vlc_data, "SOURCES", vlc_data.blob_sources(base, blobs))
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    root = tmp_path / "root"
    vlc_data.download(root, url=f"{base}/vlc.zip", sha256=digest, progress=False)
    assert (root / "data/Relation/vg/spatial.json").read_bytes() == SMALL[
        "data/Relation/vg/spatial.json"
    ]
    with pytest.raises(DownloadError, match="pinned"):
        vlc_data.download(root, sha256=digest, progress=False)
