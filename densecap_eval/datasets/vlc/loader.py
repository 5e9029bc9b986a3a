"""Read VL-CheckList (Zhao et al. 2022) as the DCI reference runs it, and fetch its annotations.

DCI pins ``om-ai-lab/VL-CheckList`` at commit 3bb214e and runs its ``itc`` evaluation on a fixed
set of annotation files (`DCI_RUNS`, from DCI's ``run_vlc.py``); ``score_vlc`` then averages the
per-file accuracies through ``corpus.json``. This module reads that tree; the averaging lives in
``densecap_eval.datasets.vlc.tasks``.

Layout: the data root holds the VL-CheckList tree: ``corpus.json`` (category -> dataset -> file
keys), ``corpus/v1/<TYPE>/<name>.yaml`` (``ANNO_PATH``: the annotation file below the root,
``IMG_ROOT``: ``vg`` | ``swig`` | ``hake``) and ``data/**.json``, each a list of
``[image_path, {"POS": [text, ...], "NEG": [text, ...]}]``. A run's file key is
``<TYPE with / as _>_<name>`` (``Object_Size_large_vg_obj``), as the peer names its outputs.
Photos are ``images_root/IMG_ROOT/image_path``; ``images_root`` is ``images/`` below the data
root or the loader option ``images_root`` (``--dataset-option images_root=DIR``), laid out as
DCI's download_vl_checklist.sh leaves its data dir: ``vg/VG_100K{,_2}/``, ``swig/`` (flat),
``hake/{hico_20160224_det/images/train2015, vcoco/..., hcvrd, hake_images_20190730,
openimages, pic}/``. VAW uses the VG photos.

The yaml files are read with a small parser for their flat ``KEY: "value"`` lines (every file
of the pinned commit has that form; anything else raises), so PyYAML is not required.

`entries` yields a file's items in file order; an item that is not ``[str, {"POS": [str, ...],
"NEG": [str, ...]}]`` with a non-empty first POS and NEG comes as its `BadRecordError` (the
peer would crash on it), so the task decides where it is counted. Photos are checked by the
task, which also applies the peer's drop-then-cap rule.

Bad input (docs/data.md): an item path that is absolute or climbs out with ``..`` is a bad item,
refused unopened; an ``ANNO_PATH`` that leaves the tree, or a file unreadable as a JSON list, is
`DatasetError` (exit 1).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.archives import extract_zip_safely, find_extracted
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    fetch_source,
    install_bytes,
    staging,
    url_and_sha256,
    url_file_name,
)
from densecap_eval.datasets.guards import unsafe_reason
from densecap_eval.datasets.records import ImageRecord, Text

CORPUS_FILE = "corpus.json"
CONFIG_DIR = Path("corpus", "v1")
IMAGES_DIR = "images"
SPLIT = "test"
IMG_ROOTS: tuple[str, ...] = ("vg", "swig", "hake")

# DCI's run_vlc.py: each YAML config's TYPES x TEST_DATA, in its order (task itc, MAX_NUM 2000).
_OBJECT_NAMES = ("hake", "swig_agent", "swig_destination", "swig_item", "swig_tool", "vg_obj",
                 "vg_subj")  # fmt: skip
DCI_RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((f"Attribute/{t}", ("vg", "vaw")) for t in ("action", "color", "material", "size", "state")),
    *((f"Object/{t}", _OBJECT_NAMES) for t in ("Location/center", "Location/margin",
                                               "Location/mid", "Size/large", "Size/medium",
                                               "Size/small")),
    ("Relation/action", ("vg", "swig", "hake")),
    ("Relation/spatial", ("vg",)),
)  # fmt: skip


@dataclass(frozen=True)
class VLCFile:
    """One annotation file DCI runs: ``corpus/v1/<type>/<name>.yaml`` and what it points to."""

    type: str  # "Object/Size/large"
    name: str  # "vg_obj"

    @property
    def key(self) -> str:
        """The peer's output name, as corpus.json lists it: ``Object_Size_large_vg_obj``."""
        return f"{self.type.replace('/', '_')}_{self.name}"

    @property
    def config(self) -> Path:
        return CONFIG_DIR / self.type / f"{self.name}.yaml"


DCI_FILES: tuple[VLCFile, ...] = tuple(VLCFile(t, n) for t, names in DCI_RUNS for n in names)


@dataclass(frozen=True)
class VLCEntry:
    """One item of an annotation file: the photo and the first POS and NEG texts."""

    file: str  # the file key
    index: int  # position in the annotation list (before any drop)
    image: str  # IMG_ROOT joined with the item's path: the photo's identity ("vg/VG_100K/1.jpg")
    path: Path  # where the photo should be
    positive: str
    negative: str

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}"


def parse_flat_yaml(text: str, *, where: str) -> dict[str, str]:
    """The ``KEY: value`` lines of a corpus yaml (values unquoted); DatasetError otherwise."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition(":")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if not sep or not key.strip().isidentifier() or not value:
            raise DatasetError(f"{where}:{number}: expected a flat 'KEY: \"value\"' line")
        out[key.strip()] = value
    return out


class VLCheckListDataset(DatasetBase):
    """The VL-CheckList tree under ``root`` and its photos under ``images_root`` (module doc)."""

    name = "vlc"
    title = "VL-CheckList"
    declared_splits = (SPLIT,)
    get_what = "the annotations"

    def __init__(
        self, root: str | Path, *, strict: bool = False, images_root: str | None = None
    ) -> None:
        super().__init__(root, strict=strict)
        if not (self.root / CORPUS_FILE).is_file():
            raise DatasetError(
                f"{self.root / CORPUS_FILE} not found: the VL-CheckList root holds corpus.json, "
                f"corpus/ and data/; {self.how_to_get(self.root)}"
            )
        self.images_root = (
            Path(images_root).expanduser() if images_root is not None else self.root / IMAGES_DIR
        )
        if not self.images_root.is_dir():
            raise DatasetError(
                f"VL-CheckList photo folder {self.images_root} not found\n"
                + image_steps(self.images_root)
            )
        self._corpus: dict[str, dict[str, list[str]]] | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.root)!r}, strict={self.strict}, "
            f"images_root={str(self.images_root)!r})"
        )

    # --- the tree -----------------------------------------------------------------------------

    def corpus(self) -> dict[str, dict[str, list[str]]]:
        """corpus.json: category -> dataset -> file keys, in the file's order."""
        if self._corpus is None:
            path = self.root / CORPUS_FILE
            try:
                data = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise DatasetError(f"cannot read {path}: {exc}") from None
            ok = isinstance(data, dict) and all(
                isinstance(sets, dict)
                and all(isinstance(f, list) and all(isinstance(k, str) for k in f)
                        for f in sets.values())
                for sets in data.values()
            )  # fmt: skip
            if not ok:
                raise DatasetError(
                    f"{path}: expected {{category: {{dataset: [file key, ...]}}}} as in "
                    "VL-CheckList's corpus.json"
                )
            self._corpus = data
        return self._corpus

    def file_config(self, file: VLCFile) -> tuple[Path, str]:
        """(annotation path, IMG_ROOT) from the file's yaml (DatasetError when unusable)."""
        path = self.root / file.config
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(
                f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}); "
                f"{self.how_to_get(self.root)}"
            ) from None
        config = parse_flat_yaml(text, where=str(path))
        for key in ("ANNO_PATH", "IMG_ROOT"):
            if key not in config:
                raise DatasetError(f"{path}: no {key}")
        img_root = config["IMG_ROOT"].strip("/")
        if img_root not in IMG_ROOTS:
            raise DatasetError(
                f"{path}: IMG_ROOT {config['IMG_ROOT']!r} is none of {', '.join(IMG_ROOTS)}"
            )
        unsafe = unsafe_reason(config["ANNO_PATH"])
        if unsafe is not None:  # a release names only files inside itself
            raise DatasetError(f"{path}: ANNO_PATH {config['ANNO_PATH']!r} {unsafe}")
        return self.root / config["ANNO_PATH"], img_root

    def entries(self, file: VLCFile) -> Iterator[VLCEntry | BadRecordError]:
        """The file's items in order; a malformed item comes as its BadRecordError (module
        doc). An unreadable annotation file raises DatasetError (the peer would crash)."""
        anno, img_root = self.file_config(file)
        try:
            items = json.loads(anno.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:
            raise DatasetError(f"cannot read {anno}: {exc}; {self.how_to_get(self.root)}") from None
        if not isinstance(items, list):
            raise DatasetError(f"{anno}: expected a list of [image, texts] items")
        for index, item in enumerate(items):
            yield self._entry(file, index, item, img_root)

    def _entry(
        self, file: VLCFile, index: int, item: Any, img_root: str
    ) -> VLCEntry | BadRecordError:
        where = f"{file.key}#{index}"
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and item[0] and isinstance(item[1], dict)):  # fmt: skip
            return BadRecordError(where, "item is not [image path, {POS, NEG}]")
        texts: list[str] = []
        for side in ("POS", "NEG"):
            values = item[1].get(side)
            if not isinstance(values, list) or not values or not isinstance(values[0], str):
                return BadRecordError(where, f"{side} is missing, empty or not a list of texts")
            if not values[0].strip():
                return BadRecordError(where, f"the first {side} text is empty")
            texts.append(values[0])
        unsafe = unsafe_reason(item[0])
        if unsafe is not None:  # refused unopened: a release names photos below its IMG_ROOT
            return BadRecordError(where, f"image path {item[0]!r} {unsafe}")
        image = posixpath.join(img_root, item[0])
        return VLCEntry(file.key, index, image, self.images_root / image, texts[0], texts[1])

    # --- the Dataset protocol -----------------------------------------------------------------

    def skip_where(self, error: BadRecordError) -> str:
        return f"{self.root}: {error.image}"

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Every item of every file DCI runs, as a record (no photo is checked)."""
        self.check_split(split)
        entries = (
            (entry.id if isinstance(entry, VLCEntry) else entry.image, entry)
            for file in DCI_FILES
            for entry in self.entries(file)
        )
        return self.iter_parsed(entries, _record)

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """corpus.json and each run's yaml and annotation file (photos unread), named by their
        path below the root."""
        paths = [self.root / CORPUS_FILE]
        for file in DCI_FILES:
            paths.append(self.root / file.config)
            try:
                paths.append(self.file_config(file)[0])
            except DatasetError:
                pass  # the yaml's own bytes (or its absence) are hashed
        return [FingerprintFile(self._label(path), path) for path in paths]

    def _label(self, path: Path) -> str:
        return (
            path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        )


def _record(entry: VLCEntry | BadRecordError) -> ImageRecord:
    """An item as a record; the item's BadRecordError is raised (iter_parsed skips it)."""
    if isinstance(entry, BadRecordError):
        raise entry
    return ImageRecord(
        entry.id,
        entry.path,
        (
            Text(entry.positive, role="positive", kind="vlc"),
            Text(entry.negative, role="negative", kind="vlc"),
        ),
        split=SPLIT,
        meta={"file": entry.file, "index": entry.index, "image": entry.image},
    )


def image_steps(images: Path) -> str:
    """How to put the photos where the loader looks (never downloaded here: several sources,
    ~100 GB with HAKE's COCO copy, some behind Google Drive)."""
    return "\n".join(
        [
            f"Photos (not downloaded): as DCI's download_vl_checklist.sh lays them out, in {images}:",
            "  VG (and VAW): https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip and "
            f"images2.zip, unzipped into {images}/vg/ (VG_100K/, VG_100K_2/)",
            "  SWiG: https://swig-data-weights.s3.us-east-2.amazonaws.com/images_512.zip, "
            f"unzipped and renamed to {images}/swig/ (flat)",
            f"  HAKE: into {images}/hake/: hico_20160224_det (images/train2015), vcoco "
            "(COCO train2017/val2017 zips), hcvrd, hake_images_20190730, hake_images_20200614, "
            "openimages, pic; sources: https://github.com/DirtyHarryLYL/HAKE/tree/master/Images",
            "Or keep them elsewhere and pass --dataset-option images_root=DIR (DIR holds vg/, "
            "swig/, hake/). Items whose photo is missing are dropped as DCI drops them, but "
            "named and counted; empty files (DCI's `find -size 0 -delete`) count as missing.",
        ]
    )


# --- download ---------------------------------------------------------------------------------

VLC_COMMIT = "3bb214e283726f80cb465f2dfd95dc9dfa32cc08"  # the commit DCI pins
VLC_RAW = f"https://raw.githubusercontent.com/om-ai-lab/VL-CheckList/{VLC_COMMIT}"
# Every file DCI's run reads, with its git blob id in the pinned commit's tree: git's own
# content hash, sha1(b"blob <size>\0" + bytes). The larger annotation files could not be
# copied to compute a sha256, while the tree names every blob; so each download is checked
# against its blob id, which pins exactly the bytes of that commit.
VLC_BLOBS: Mapping[str, str] = {
    "corpus.json": "559add2e078a103e3788cd3948eed81e47c14e96",
    "corpus/v1/Attribute/action/vg.yaml": "4daa861daef4b570685f9228eb4870992241e7ec",
    "data/Attribute/vg/action.json": "fe320cad35d6bb48d9f5570e64727215a565e4ad",
    "corpus/v1/Attribute/action/vaw.yaml": "a11ad34f2210a35858ae138173209b0c04d04a2d",
    "data/Attribute/vaw/action.json": "d51bcb1480727c71d2db0297e493bb5aa5bb4855",
    "corpus/v1/Attribute/color/vg.yaml": "13f82925de0121fa12dec73137fc62f8afba79f6",
    "data/Attribute/vg/color.json": "eef27e4193d4c2027b8f03e7c830f8eedbabfd15",
    "corpus/v1/Attribute/color/vaw.yaml": "5d48c3e71c0a08e80c0446204ddd1545643bf774",
    "data/Attribute/vaw/color.json": "d25a8cc816ac4c309eb91a963053bbf9edb82946",
    "corpus/v1/Attribute/material/vg.yaml": "abeedc176a4d2f8b102e7df3e2bfa454f4d6b212",
    "data/Attribute/vg/material.json": "4c935bb58f88bd76303bf446728dfa84bf944efd",
    "corpus/v1/Attribute/material/vaw.yaml": "1a7dd90fbbe37a960660258d9b3a09645d9b4759",
    "data/Attribute/vaw/material.json": "f6555258db9849b93ce560c0a88f24515ed7e7bc",
    "corpus/v1/Attribute/size/vg.yaml": "556885602e2fbd3fdf3eb75ee87f58be40c120a8",
    "data/Attribute/vg/size.json": "daa254a300c5e03a886a99b460cc4ee55af1896f",
    "corpus/v1/Attribute/size/vaw.yaml": "a6f146192294ffb12c8a2127edfd8491e10fece1",
    "data/Attribute/vaw/size.json": "d1345b9d2815295b3154e5bde936651623fe27dc",
    "corpus/v1/Attribute/state/vg.yaml": "ae2b7b7865ce397df3c48d85e0518c37fc396d59",
    "data/Attribute/vg/state.json": "0aea966461e3adeef17d431034ae6f288b74b29d",
    "corpus/v1/Attribute/state/vaw.yaml": "d8fd8043f0fe732570bf92a1443a1a263e4a84e6",
    "data/Attribute/vaw/state.json": "b8d580607988bc1996f871b7eb046662a7f4c774",
    "corpus/v1/Object/Location/center/hake.yaml": "ec0a8021dbdf619f246fbe23ebbd05278ecc7503",
    "data/Object/Location/hake_location/hake_obj_center.json": "aedb3d24eb43513b51303f4559d444f38b87f9d7",
    "corpus/v1/Object/Location/center/swig_agent.yaml": "62a42d857df00366db61e5edec2277a6071ccb32",
    "data/Object/Location/swig_location/swig_agent/swig_agent_center.json": "e44b1e90734695757beb3f1db7c0e12f0a369ac4",
    "corpus/v1/Object/Location/center/swig_destination.yaml": "4e266083fc174495293547189c6475ff1bf92a33",
    "data/Object/Location/swig_location/swig_destination/swig_destination_center.json": "df4fcf9c75e1d86ea8c630486227d9cdb2fd77e9",
    "corpus/v1/Object/Location/center/swig_item.yaml": "86fa3fcbed82a6c1f6a3a46728a2e265278231ea",
    "data/Object/Location/swig_location/swig_item/swig_item_center.json": "38fbbac6ad1e934123c3fbe47fddc8d5da4eb4f7",
    "corpus/v1/Object/Location/center/swig_tool.yaml": "4c2a94a369f219638b64f738e5e91dff9f7129c8",
    "data/Object/Location/swig_location/swig_tool/swig_tool_center.json": "adc897ace5764c3460edfc5f800dbe44d02b2767",
    "corpus/v1/Object/Location/center/vg_obj.yaml": "090eaa4cac734cf47277ae5a301ceee74a4600d9",
    "data/Object/Location/vg_location/vg_obj_center.json": "a45db2ae476a1e3890dfbb337b766c3cc3b70cf4",
    "corpus/v1/Object/Location/center/vg_subj.yaml": "6a2edb188e3ea46a1f0f45683dd8b6c4f96f849d",
    "data/Object/Location/vg_location/vg_subj_center.json": "71bc4b0552894e71504ad97392bcd4fa75f6d7ad",
    "corpus/v1/Object/Location/margin/hake.yaml": "226e4999423d30ce1c31b0c605395de232dd82f6",
    "data/Object/Location/hake_location/hake_obj_margin.json": "f094711bcbf554ee8a32e3a45f801a128500cfd1",
    "corpus/v1/Object/Location/margin/swig_agent.yaml": "bffff06bd3f97558a3cb1a747ef3b48051b2878a",
    "data/Object/Location/swig_location/swig_agent/swig_agent_margin.json": "1a44a7104c592e33bec17871d22691081bc82032",
    "corpus/v1/Object/Location/margin/swig_destination.yaml": "053e6ecf1614d2345e12a7d9ff6454403036004b",
    "data/Object/Location/swig_location/swig_destination/swig_destination_margin.json": "9c5de39a2cb2a1de2a904eaf26aff29eea73c4b4",
    "corpus/v1/Object/Location/margin/swig_item.yaml": "b1b312ae88307a2ba2fa1f448dc294245074960c",
    "data/Object/Location/swig_location/swig_item/swig_item_margin.json": "1b3ce211fe67e8b98fad856b03df72b680e70349",
    "corpus/v1/Object/Location/margin/swig_tool.yaml": "42d731408bbd059a0eefcfc2bc64731417a56659",
    "data/Object/Location/swig_location/swig_tool/swig_tool_margin.json": "7b1067fb779094b2fccfb14000d2fc47310745d6",
    "corpus/v1/Object/Location/margin/vg_obj.yaml": "38af686df414bc4d2dd42db34ac7a11d4d09895e",
    "data/Object/Location/vg_location/vg_obj_margin.json": "95f5ffb9f95fc59c7bf656b1f875c76422d04ce3",
    "corpus/v1/Object/Location/margin/vg_subj.yaml": "2e1644dfa8595706306365ce2ae3e313afc9e4b5",
    "data/Object/Location/vg_location/vg_subj_margin.json": "db2bd405584dd677892dbb45bf1d2b3b177d917d",
    "corpus/v1/Object/Location/mid/hake.yaml": "93fb21311c30cf5db99a77381b05c451dd9a092d",
    "data/Object/Location/hake_location/hake_obj_mid.json": "f422c754030488be06878359fdf21114afcf444f",
    "corpus/v1/Object/Location/mid/swig_agent.yaml": "a89082a0b93ea9927fce943b70d1a02915d2c39e",
    "data/Object/Location/swig_location/swig_agent/swig_agent_mid.json": "62dd23aff4e19c7e062a0ae66a0b4d999e44ff45",
    "corpus/v1/Object/Location/mid/swig_destination.yaml": "df76c6f94f3c8c9e9e7bf083adc7f99479145d23",
    "data/Object/Location/swig_location/swig_destination/swig_destination_mid.json": "171b33f5ea79f7e10d382fe2e063326cf1e50993",
    "corpus/v1/Object/Location/mid/swig_item.yaml": "c0b20b897f8d8443fa143a52560bc6376ecea3d5",
    "data/Object/Location/swig_location/swig_item/swig_item_mid.json": "f7b48c643f3a8f9385f9b536a0d9af21c5ecacdb",
    "corpus/v1/Object/Location/mid/swig_tool.yaml": "07652a65edf4f0018ae606748250c56edb39c599",
    "data/Object/Location/swig_location/swig_tool/swig_tool_mid.json": "8d28471e5801cd1115b735a4fcb302947b389fb6",
    "corpus/v1/Object/Location/mid/vg_obj.yaml": "3b62dc129fd82b84edc3317a9652c1477bc71ae1",
    "data/Object/Location/vg_location/vg_obj_mid.json": "244f9122d31c1483c9e325fd368b6478ec71e705",
    "corpus/v1/Object/Location/mid/vg_subj.yaml": "91cabaa1208adabbb75090802d41e597d2057767",
    "data/Object/Location/vg_location/vg_subj_mid.json": "ef5db2b6e374e12c2c9f4c40c8568830f38c5974",
    "corpus/v1/Object/Size/large/hake.yaml": "fc65c634a617db84f85e694bea0d13a7cd7dfd41",
    "data/Object/Size/hake_size/hake_obj_large.json": "c813f99ba14f156fc607de3411fc01bfecc3ab08",
    "corpus/v1/Object/Size/large/swig_agent.yaml": "03ad34e724bd0b443859b0117e366d4819457bd7",
    "data/Object/Size/swig_size/swig_agent/swig_agent_large.json": "c93fbc0808a205731a503a6ca20428bca4b5f7e2",
    "corpus/v1/Object/Size/large/swig_destination.yaml": "e0c7fe7fb84ef6d870a38ee8c055a09f3e4b0c8f",
    "data/Object/Size/swig_size/swig_destination/swig_destination_large.json": "45ad8d549ed7d659cba989d64f7aad6ccb93c87b",
    "corpus/v1/Object/Size/large/swig_item.yaml": "d65c4b972cb4dc5974acbb5f4927afb8dc4b8e13",
    "data/Object/Size/swig_size/swig_item/swig_item_large.json": "18ba7cec4ad9d5c5463e1804a5bda5e0d58ce535",
    "corpus/v1/Object/Size/large/swig_tool.yaml": "aaf126354fd3b5928230ee7c5bec15ced75182f1",
    "data/Object/Size/swig_size/swig_tool/swig_tool_large.json": "e2febc328906f236cb1292fbd0f2134cadd13b1d",
    "corpus/v1/Object/Size/large/vg_obj.yaml": "e223af5820951bc74ea92dd3393e56e979179b33",
    "data/Object/Size/vg_size/vg_obj_large.json": "c55b5993c4c12f80bc72552a96642ba86cd1c250",
    "corpus/v1/Object/Size/large/vg_subj.yaml": "d54f13886c5e7a931c25fdd0f64845da4f338fc4",
    "data/Object/Size/vg_size/vg_subj_large.json": "5eb9355e8cc37b078c732854bb792840da40bc2c",
    "corpus/v1/Object/Size/medium/hake.yaml": "9710067bac9d6f890897f14a8c9119863bbbf4b3",
    "data/Object/Size/hake_size/hake_obj_medium.json": "5e0a805f32464c9fe88110bc977de85bf7758bc9",
    "corpus/v1/Object/Size/medium/swig_agent.yaml": "16a3c0588956b7edc8fddd7494cf907ffb39b263",
    "data/Object/Size/swig_size/swig_agent/swig_agent_medium.json": "54401aed14dab7149977b899496e9dd6dd750018",
    "corpus/v1/Object/Size/medium/swig_destination.yaml": "d836350cf878594fefbd3bd59389a1282e4587c9",
    "data/Object/Size/swig_size/swig_destination/swig_destination_medium.json": "b1682991230d6e6ca837f868daac65e64d668564",
    "corpus/v1/Object/Size/medium/swig_item.yaml": "ca37f176a912e47442a76aee8348663552eaf7e2",
    "data/Object/Size/swig_size/swig_item/swig_item_medium.json": "6ee829d2c4fcfc8c6cfcdd12efa2e69ccbf7eb4c",
    "corpus/v1/Object/Size/medium/swig_tool.yaml": "bcde9e6a748d1bf91bde818e1ad006b90dcdc283",
    "data/Object/Size/swig_size/swig_tool/swig_tool_medium.json": "06b6c6dd0fe38bbc01fbab913077cf598f32e658",
    "corpus/v1/Object/Size/medium/vg_obj.yaml": "a8a8dae20726ac4deda728e63b598ffe0fc58747",
    "data/Object/Size/vg_size/vg_obj_medium.json": "0e6f492db9761e2705a586e92213d089795f6c13",
    "corpus/v1/Object/Size/medium/vg_subj.yaml": "7646d33af3a06365d657d5930356586eedb016c9",
    "data/Object/Size/vg_size/vg_subj_medium.json": "3eacdbfa7b4731badd7fcbb8cc475952f07ffa8e",
    "corpus/v1/Object/Size/small/hake.yaml": "8b6606385f0e21a987958f5cd80dc0fda21bc3b9",
    "data/Object/Size/hake_size/hake_obj_small.json": "a32e588693ace2190d8d5624ec918e2f2b7ad595",
    "corpus/v1/Object/Size/small/swig_agent.yaml": "5969b525dc807460c61974fc5115d312e6ce4266",
    "data/Object/Size/swig_size/swig_agent/swig_agent_small.json": "e9ca7e6682581508d209da8011b412332a6cd1e9",
    "corpus/v1/Object/Size/small/swig_destination.yaml": "97a32c1160e55c39c662d366b143d8680626b0cf",
    "data/Object/Size/swig_size/swig_destination/swig_destination_small.json": "a63793e3c8b360dd2ac8070d933691ed8aadf3ff",
    "corpus/v1/Object/Size/small/swig_item.yaml": "a876d366a25f13c8f45c6da785a5d56ca8e80861",
    "data/Object/Size/swig_size/swig_item/swig_item_small.json": "a7fd62be5c3d57ab57ed558132c1ad824556189c",
    "corpus/v1/Object/Size/small/swig_tool.yaml": "b0fe39db52c97da16e7e326996aa6de887cc0322",
    "data/Object/Size/swig_size/swig_tool/swig_tool_small.json": "dc498b9f7487252449b251b35738e0236f6eb856",
    "corpus/v1/Object/Size/small/vg_obj.yaml": "8a4eba0df1d79f907a95b5bf11fbcecc89479b26",
    "data/Object/Size/vg_size/vg_obj_small.json": "4a6655ad40192093d612c7463311036e8048cbd1",
    "corpus/v1/Object/Size/small/vg_subj.yaml": "a673fe268e25bba83d4c59dea7c2463c27498da7",
    "data/Object/Size/vg_size/vg_subj_small.json": "fa2eeed930d0d1dbf26a8466b1ccec1d776cc3f2",
    "corpus/v1/Relation/action/vg.yaml": "341f657427855d72394ddafda9b9873023497e3a",
    "data/Relation/vg/action.json": "0e4c40fbb8fdc737c4f4535dbb059efb691ca078",
    "corpus/v1/Relation/action/swig.yaml": "5691e67223851e60835420b95ae6cbd7348a2234",
    "data/Relation/swig_action.json": "27f41d28e61a03e738df75d92c50bc5928a78ee4",
    "corpus/v1/Relation/action/hake.yaml": "3a3203a77ac42164287abba47ef26b6832a3878e",
    "data/Relation/hake_action.json": "9c9488a53ed732338ca65fb2d934cb6d0889755a",
    "corpus/v1/Relation/spatial/vg.yaml": "32c1cd5834729777b736f810c63514324dea5511",
    "data/Relation/vg/spatial.json": "b5358a330599ee9ecbbce0f6ec267bfea8efbb84",
}  # fmt: skip


def blob_sources(raw_base: str, blobs: Mapping[str, str]) -> dict[str, Source]:
    """One `Source` per file of the pinned tree (``raw_base``: the repository at the commit)."""
    return {
        rel: Source(rel, f"{raw_base}/{rel}", "git-blob", install=rel, commit=VLC_COMMIT, blob=blob)
        for rel, blob in blobs.items()
    }


SOURCES: dict[str, Source] = blob_sources(VLC_RAW, VLC_BLOBS)


def git_blob_id(data: bytes) -> str:
    """git's object id of a file with these bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def download(
    root: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch the files DCI's run reads (`VLC_BLOBS`) into ``root``, each checked against its
    git blob id at `VLC_COMMIT`; a mismatch raises and nothing is installed.

    Without ``url``: each file from its raw GitHub URL pinned to the commit (113 small
    requests, ~60 MB). With ``url`` and ``sha256``: a zip archive of the repository (e.g. a
    GitHub codeload zip you checksummed yourself: those have no stable published sha256),
    fetched with pooch, extracted safely, and the same files taken from it and checked the
    same way. Photos are never downloaded: the message says how to get them.
    """
    root = Path(root).expanduser()
    url_and_sha256(
        url, sha256,
        pinned="the VL-CheckList files are pinned by their git blob ids at the commit DCI uses",
    )  # fmt: skip
    if url is not None:
        files = _files_from_archive(root, url, str(sha256), progress=progress)
    else:
        files = {rel: _fetch_raw(source.url, progress=progress) for rel, source in SOURCES.items()}
    _check_blobs(files)
    for rel, data in files.items():  # all checked: now install, each file atomically
        install_bytes(data, root / SOURCES[rel].install)
    return DownloadMessage(
        f"VL-CheckList annotations (commit {VLC_COMMIT[:7]}, the {len(DCI_FILES)} files DCI "
        f"runs, corpus.json and their yaml) saved to {root}; the repository has no licence "
        f"file; evaluate with --data-root {root}",
        image_steps(root / IMAGES_DIR),
    )


def _files_from_archive(root: Path, url: str, sha256: str, *, progress: bool) -> dict[str, bytes]:
    """The pinned tree's files, read from a zip of the repository (checked by the caller)."""
    mirror = Source(url_file_name(url), url, "zip")
    archive = fetch_source(mirror, root, sha256=sha256, progress=progress)
    with staging(root, prefix=".vlc-") as content:
        extract_zip_safely(archive, content)
        source = find_extracted(content, lambda folder: (folder / CORPUS_FILE).is_file())
        if source is None:
            raise DownloadError(
                f"{archive.name} holds no corpus.json: is it a VL-CheckList archive?"
            )
        files = {rel: (source / rel).read_bytes() for rel in SOURCES if (source / rel).is_file()}
    missing = [rel for rel in SOURCES if rel not in files]
    if missing:
        raise DownloadError(f"{archive.name} lacks {len(missing)} files, e.g. {missing[0]}")
    return files


def _check_blobs(files: Mapping[str, bytes]) -> None:
    """Every file's git blob id against the pinned one; DownloadError (nothing installed)."""
    for rel, data in files.items():
        got, pinned = git_blob_id(data), SOURCES[rel].blob
        if got != pinned:
            raise DownloadError(
                f"{rel}: git blob id {got} is not {pinned} (the file at commit "
                f"{VLC_COMMIT[:7]}); nothing was installed"
            )


def _fetch_raw(url: str, *, progress: bool) -> bytes:
    """One file's bytes over HTTP(S) (checked by the caller against its blob id)."""
    import requests

    del progress  # small files: no progress bar
    try:
        response = requests.get(url, timeout=60)
        response.raise_for_status()
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"cannot download {url}: {exc}") from None
    return response.content
