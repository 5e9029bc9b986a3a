"""A valid tiny release of every registered dataset, written in its real on-disk format.

`RELEASES` maps each registered dataset (``densecap_eval.datasets.list_datasets()``) to a
`Release`: the function writing it, a task that runs on it, the ``--data-root`` it is read
from, one record-level defect (a change that makes exactly one record bad) and whether its
splits are declared. The contract suite (tests/test_contracts.py) runs every entry; the
bad-input tables (tests/test_bad_input_*.py) start from the same writers. A newly registered
dataset needs an entry here, or the contract suite fails naming this file.

The releases are those of the module tests (their data is imported from there, so each is
written once): small enough that a ``builtin:tiny`` run takes a fraction of a second.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

Change = Callable[[Path], None]


@dataclass(frozen=True)
class Release:
    """How the contract suite writes, runs and breaks one dataset's release."""

    write: Callable[[Path], Path]  # writes the release into a new folder; returns that folder
    task: str  # a registered task of this dataset that runs on the release
    defect: Change  # makes exactly one record of the release bad (skipped, or stops --strict)
    bad: tuple[str, ...]  # words naming that record, in its skip line and its strict error
    data: str = ""  # --data-root relative to the release folder ("": the folder itself)
    splits_declared: bool = True  # the loader lists its splits (an unknown one is refused)
    options: tuple[str, ...] = ()  # extra CLI arguments every run of the release takes


# --- shared writing helpers ---------------------------------------------------------------


def json_file(path: Path, data: Any, **dump: Any) -> None:
    """Write ``data`` as JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, **dump), encoding="utf-8")


def jsonl_file(path: Path, rows: Sequence[Any]) -> None:
    """Write ``rows`` one JSON object a line (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def edit_json(relative: str, fn: Callable[[Any], Any]) -> Change:
    """A change rewriting one JSON file of the release through ``fn`` (parsed -> parsed)."""

    def change(root: Path) -> None:
        path = root / relative
        path.write_text(json.dumps(fn(json.loads(path.read_text(encoding="utf-8")))),
                        encoding="utf-8")  # fmt: skip

    return change


def edit_jsonl(relative: str, index: int, **fields: Any) -> Change:
    """A change setting fields of the ``index``-th line (from 0) of a JSON Lines file."""

    def change(root: Path) -> None:
        path = root / relative
        lines = path.read_text(encoding="utf-8").splitlines()
        lines[index] = json.dumps(json.loads(lines[index]) | fields)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    return change


def _set(data: Any, key: Any, **fields: Any) -> Any:
    data[key].update(fields)
    return data


# --- ARO ------------------------------------------------------------------------------------

ARO_VG_RELATION = "visual_genome_relation.json"
ARO_VG_ATTRIBUTION = "visual_genome_attribution.json"


def aro_vg(root: Path, *, attribution: bool = True) -> Path:
    """VG-Relation (its five good cases) and, with ``attribution``, VG-Attribution, plus the
    photos under ``images/``."""
    from test_aro_vg import RELATION_CASES, _attribution_cases, _photos

    _photos(root / "images")
    (root / ARO_VG_RELATION).write_text(json.dumps(RELATION_CASES[:5]), encoding="utf-8")
    if attribution:
        attributes = _attribution_cases()[24:49]  # one ordered pair of attributes, kept
        (root / ARO_VG_ATTRIBUTION).write_text(json.dumps(attributes), encoding="utf-8")
    return root


def aro_coco(root: Path) -> Path:
    """COCO-Order: ``coco_karpathy_test.json`` and the photos under ``val2014/``."""
    from test_aro_order import make_root

    return make_root(root)


def aro_flickr30k(root: Path) -> Path:
    """Flickr30k-Order: ``flickr30k_test.json`` and the photos under ``flickr30k-images/``."""
    from test_aro_order import make_root

    return make_root(root, flickr=True)


# --- CLIP_benchmark (webdataset copies) -----------------------------------------------------

WDS_SETS = {  # key: (class names, templates)
    "cifar10": (["cat", "dog", "ship", "frog", "truck", "bird"],
                ["a photo of a {c}.", "a blurry photo of the {c}."]),
    "mnist": (["0", "1", "2"], ['a photo of the number: "{c}".']),
}  # fmt: skip


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(root: Path, key: str, n: int, seed: int) -> Path:
    """CLIP_benchmark's ``wds_<name>/`` copy of ``key``: class names, templates and ``n``
    samples (PNG and JPEG, some grey) in two tar shards; returns the folder. Class names and
    templates: `WDS_SETS`, else three placeholder classes."""
    from densecap_eval.datasets.elevater.wds import folder_name

    classes, templates = WDS_SETS.get(key, (["one", "two", "three"], ["a {c}."]))
    folder = root / folder_name(key)
    (folder / "test").mkdir(parents=True)
    (folder / "classnames.txt").write_text("\n".join(classes) + "\n")
    (folder / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    rng = np.random.default_rng(seed)
    shards = 2
    (folder / "test" / "nshards.txt").write_text(f"{shards}\n")
    for shard in range(shards):
        with tarfile.open(folder / "test" / f"{shard}.tar", "w") as tar:
            for i in range(shard, n, shards):
                size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
                img = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))
                if i % 3 == 1:
                    img = img.convert("L")
                buf = io.BytesIO()
                img.save(buf, format="PNG" if i % 2 else "JPEG")
                label = str(int(rng.integers(0, len(classes) - 1))).encode()
                ext = "png" if i % 2 else "jpg"
                _tar_add(tar, f"s{i:04d}.{ext}", buf.getvalue())
                _tar_add(tar, f"s{i:04d}.cls", label)
    return folder


def clip_benchmark(root: Path) -> Path:
    """A ``wds_<name>`` copy of every CLIP_benchmark set the tasks name (six samples each)."""
    from densecap_eval.datasets.elevater.wds import CLIP_BENCHMARK_NAMES

    for seed, key in enumerate(CLIP_BENCHMARK_NAMES):
        write_wds(root, key, 6, seed)
    return root


def _wds_bad_sample(root: Path) -> None:
    """cifar10's sample s0001 (second shard) with a class that is not an integer."""
    from densecap_eval.datasets.elevater.wds import folder_name

    shard = root / folder_name("cifar10") / "test" / "1.tar"
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            _tar_add(tar, name, b"x" if name == "s0001.cls" else data)


# --- DCI ------------------------------------------------------------------------------------


def dci(root: Path) -> Path:
    """``densely_captioned_images/`` as ``densecap-eval synth`` writes it (six small images)."""
    from densecap_eval.synth import generate_dci

    generate_dci(root, images=6, seed=0, split_sizes=(1, 1, 4))
    return root


def _dci_bad_record(root: Path) -> None:
    """The first test record without its ``mask_data`` (a record the reference cannot use)."""
    base = root / "densely_captioned_images"
    name = json.loads((base / "splits.json").read_text(encoding="utf-8"))["test"][0]
    edit_json(f"densely_captioned_images/complete/{name}",
              lambda r: {k: v for k, v in r.items() if k != "mask_data"})(root)  # fmt: skip


# --- the long-caption retrieval sets --------------------------------------------------------


def docci(root: Path) -> Path:
    """``docci_descriptions.jsonlines`` and ``images/``."""
    from test_datasets_docci import write_release

    return write_release(root)


def iiw(root: Path, *, twins: bool = True) -> Path:
    """The three pool subsets' ``data.jsonl`` (the GitHub layout) and their photos; with
    ``twins``, two more photos whose names differ only in Unicode normalisation."""
    from test_datasets_docci import write_photo
    from test_datasets_iiw import write_iiw

    write_iiw(root)
    if twins:
        for name in ("caf\u00e9.jpg", "cafe\u0301.jpg"):
            write_photo(root / "docci_aar" / name, 7)
    return root


def urban1k(root: Path) -> Path:
    """``Urban1k/{image,caption}/`` (12 good captions); returns the folder holding Urban1k/."""
    from test_datasets_urban1k import CAPTIONS, write_urban1k

    root.mkdir(parents=True, exist_ok=True)
    write_urban1k(root, dict(CAPTIONS))
    return root


def sharegpt4v(root: Path, *, sam10k: bool = True) -> Path:
    """Long-CLIP's ``data/``: the share-captioner JSON and the photos it names; with
    ``sam10k``, LoTLIP's ``share4v_sam_10k.json`` too (its photos in the SA-1B layout)."""
    from test_datasets_sharegpt4v import (
        CAPTIONER,
        GOOD_CAPTIONER,
        GOOD_SAM,
        SAM10K,
        _colour,
        _save_photo,
    )

    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(GOOD_CAPTIONER, indent=4, ensure_ascii=False)
    (root / CAPTIONER).write_text(text, encoding="utf-8")
    for i, rec in enumerate(GOOD_CAPTIONER):
        _save_photo(root / rec["image"], _colour(i))
    if sam10k:
        (root / SAM10K).write_text(json.dumps(GOOD_SAM), encoding="utf-8")
        for i, rec in enumerate(GOOD_SAM):
            _save_photo(root / rec["image"], _colour(50 + i))
    return root


def _sharegpt4v_empty_caption(root: Path) -> None:
    from test_datasets_sharegpt4v import CAPTIONER

    def fn(records: list[Any]) -> list[Any]:
        records[1]["conversations"][1]["value"] = ""
        return records

    edit_json(CAPTIONER, fn)(root)


# --- ELEVATER -------------------------------------------------------------------------------


def elevater(root: Path) -> Path:
    """Every ELEVATER test split ``densecap-eval synth --elevater`` writes (four photos each)."""
    from densecap_eval.datasets.elevater.synth import write_release

    write_release(root, images=4)
    return root


def _elevater_bad_label(root: Path) -> None:
    """cifar10's first index line with a label outside its classes."""
    from densecap_eval.datasets.elevater import catalog

    path = root / catalog.spec("cifar10").root_folder / catalog.spec("cifar10").test_index
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " 10"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- users' own files -----------------------------------------------------------------------

FILES_COLOURS = ["red", "green", "blue", "yellow"]
FILES_ROWS = [
    {"image": f"images/{c}.png", "caption": f"a plain {c} picture"} for c in FILES_COLOURS
]
FILES_BOXED_ROWS = [  # two regions of one photo, for files/regions
    {"image": "images/red.png", "caption": "the top left corner", "box": [0, 0, 8, 8]},
    {"image": "images/red.png", "caption": "the bottom right corner", "box": [8, 8, 8, 8]},
]


def files(root: Path, *, formats: bool = True, extras: bool = False) -> Path:
    """``data.jsonl`` naming four photos under ``images/`` (with ``extras``: negatives and boxed
    rows too, for ``files/negatives`` and ``files/regions``); with ``formats`` the same table as
    ``data.csv`` and ``data.parquet``, an imagefolder ``folder/`` and a ``saved/`` folder written
    by ``Dataset.save_to_disk``."""
    from test_datasets_files import make_images

    make_images(root / "images", FILES_COLOURS)
    rows = FILES_ROWS
    if extras:
        striped = [r | {"negative": r["caption"].replace("plain", "striped")} for r in FILES_ROWS]
        rows = striped + FILES_BOXED_ROWS
    jsonl_file(root / "data.jsonl", rows)
    if not formats:
        return root
    import datasets
    import pandas as pd

    pd.DataFrame(FILES_ROWS).to_csv(root / "data.csv", index=False)
    pd.DataFrame(FILES_ROWS).to_parquet(root / "data.parquet")
    make_images(root / "folder", FILES_COLOURS)
    meta = [{"file_name": f"{c}.png", "caption": f"a plain {c} picture"} for c in FILES_COLOURS]
    jsonl_file(root / "folder" / "metadata.jsonl", meta)
    saved = [
        {"image": str((root / r["image"]).resolve()), "caption": r["caption"]} for r in FILES_ROWS
    ]
    datasets.Dataset.from_list(saved).save_to_disk(str(root / "saved"))
    return root


# --- compositional benchmarks ---------------------------------------------------------------


def sugarcrepe(root: Path, *, categories: Sequence[str] | None = None) -> Path:
    """``data/<category>.json`` (every category unless ``categories`` says; each holds
    tests/test_sugarcrepe.py's swap_att items) and the COCO photos under
    ``coco/images/val2017/``."""
    from test_sugarcrepe import SWAP_ATT, _photos

    from densecap_eval.datasets.sugarcrepe.categories import CATEGORIES

    for category in CATEGORIES if categories is None else categories:
        json_file(root / "data" / f"{category}.json", SWAP_ATT)
    _photos(root / "coco" / "images" / "val2017")
    return root


VLC_KEY = "Relation_spatial_vg"


def vlc_items() -> list[Any]:
    from test_vlc import _item

    return [
        _item("VG_100K_2/2.jpg", "a cup on a table", "a table on a cup"),
        _item("VG_100K/1.jpg", "a hat on a man", "a man on a hat"),
        _item("VG_100K/1.jpg", "a dog near a cat", "a cat near a dog"),
    ]


def _vlc_no_negative(items: list[Any]) -> list[Any]:
    items[1][1]["NEG"] = None
    return items


def vlc(root: Path) -> Path:
    """The VL-CheckList tree of every file DCI runs (three items in ``Relation_spatial_vg``)."""
    from test_vlc import _write_tree

    return _write_tree(root, {VLC_KEY: vlc_items()})


def winoground(root: Path, *, layouts: bool = True) -> Path:
    """The Hub's 2022 layout (``data/examples.jsonl`` + ``data/images.zip``); with ``layouts``
    the release folder holds it as ``zipped/``, beside ``unzipped/`` (the zip extracted) and
    ``hub/`` (the current parquet layout)."""
    import zipfile

    from test_winoground import write_jsonl, write_parquet

    if not layouts:
        return write_jsonl(root)
    write_jsonl(root / "zipped")
    write_jsonl(root / "unzipped")
    with zipfile.ZipFile(root / "unzipped" / "data" / "images.zip") as zf:
        zf.extractall(root / "unzipped" / "data")
    (root / "unzipped" / "data" / "images.zip").unlink()
    write_parquet(root / "hub")
    return root


# --- the table ------------------------------------------------------------------------------

RELEASES: dict[str, Release] = {
    "aro-coco": Release(
        aro_coco, "aro/coco_order",
        edit_json("coco_karpathy_test.json", lambda d: _set(d, 1, caption=[])), ("record 1",),
    ),
    "aro-flickr30k": Release(
        aro_flickr30k, "aro/flickr30k_order",
        edit_json("flickr30k_test.json", lambda d: _set(d, 1, caption=[])), ("record 1",),
    ),
    "aro-vg": Release(
        aro_vg, "aro/vg_relation",
        edit_json(ARO_VG_RELATION, lambda d: _set(d, 1, true_caption="")), ("relation#1",),
    ),
    "clip_benchmark": Release(
        clip_benchmark, "clip_benchmark/cifar10", _wds_bad_sample, ("1.tar#s0001",),
    ),
    "dci": Release(
        dci, "dci/retrieval", _dci_bad_record, ("synth_000000.json", "mask_data"),
        splits_declared=False,
    ),
    "docci": Release(
        docci, "docci/retrieval",
        edit_jsonl("docci_descriptions.jsonlines", 1, description=""),
        ("test_00000", "docci_descriptions.jsonlines line 2"),
        splits_declared=False,
    ),
    "elevater": Release(
        elevater, "elevater/cifar10", _elevater_bad_label, ("test.txt line 1", "outside"),
    ),
    "files": Release(
        lambda root: files(root, formats=False, extras=True), "files/retrieval",
        edit_jsonl("data.jsonl", 1, caption=""), ("row 2",), data="data.jsonl",
        splits_declared=False,
    ),
    "iiw": Release(
        lambda root: iiw(root, twins=False), "iiw/retrieval",
        edit_jsonl("datasets/IIW-400/data.jsonl", 0, IIW=""), ("IIW-400/data.jsonl line 1",),
    ),
    "sharegpt4v": Release(
        sharegpt4v, "sharegpt4v/retrieval-1k", _sharegpt4v_empty_caption,
        ("coco/train2017/000000000009.jpg", "share-captioner"),
    ),
    "sugarcrepe": Release(
        sugarcrepe, "sugarcrepe/swap_att",
        edit_json("data/swap_att.json", lambda d: _set(d, "2", caption="")), ("swap_att/2",),
    ),
    "urban1k": Release(
        urban1k, "urban1k/retrieval",
        lambda root: (root / "Urban1k" / "caption" / "4.txt").write_bytes(b""), ("4.jpg", "4.txt"),
    ),
    "vlc": Release(
        vlc, "vlc/relation",
        edit_json(f"data/{VLC_KEY}.json", _vlc_no_negative), (f"{VLC_KEY}#1",),
    ),
    "winoground": Release(
        lambda root: winoground(root, layouts=False), "winoground",
        edit_jsonl("data/examples.jsonl", 1, caption_0=""), ("ex_1",),
    ),
}  # fmt: skip
