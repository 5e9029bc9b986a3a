"""ELEVATER's test splits on disk (the vision-datasets 0.2.x layout), read natively.

A dataset lives at ``ROOT/<root_folder>/`` (``classification/cifar_10_20211007`` ...) with its
test index, the zip(s) holding the photos and, for iris, the label map:

- **iris**: ``labels.txt`` (``labelmap.txt`` for gtsrb) has one class per line (stripped, blank
  lines dropped). Index lines are ``<zip>@<member> <l1[,l2...]>`` (split at the LAST space,
  0-based labels); the order of the lines is the order of the samples.
- **coco**: a JSON manifest with ``images [{id, file_name, zip_file}]``, ``annotations
  [{image_id, category_id}]`` and ``categories [{id, name}]``; categories sorted by id give
  the label order, images sorted by id the sample order, and a photo is ``zip_file@file_name``.

A photo reference ``zip@member`` is split at its first ``@`` (as vision-datasets does). A
missing or unreadable index, label map or zip makes the dataset unusable (`DatasetError`); one
bad line or image entry is a bad record (`BadRecordError`, passed to ``skip``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.elevater.catalog import ElevaterSpec
from densecap_eval.datasets.guards import unsafe_reason

Skip = Callable[[BadRecordError], object]


@dataclass(frozen=True, slots=True)
class Sample:
    """One test image: where it is (``zip@member``) and its labels (one for multiclass)."""

    ref: str
    zip_name: str
    member: str
    labels: tuple[int, ...]


def dataset_dir(root: Path, spec: ElevaterSpec) -> Path:
    return root / spec.root_folder


def required_files(spec: ElevaterSpec) -> list[str]:
    """The files of the test split (relative to the dataset folder): index, zips, label map."""
    out = [spec.test_index, *spec.test_files]
    if spec.labelmap:
        out.append(spec.labelmap)
    return out


def present(root: Path, spec: ElevaterSpec) -> bool:
    """Whether the dataset's folder exists (its files are checked when it is read)."""
    return dataset_dir(root, spec).is_dir()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def split_ref(ref: str, *, image: str) -> tuple[str, str]:
    """``zip@member`` -> (zip, member), refusing paths that would leave the dataset folder."""
    zip_name, at, member = ref.partition("@")
    if not at or not zip_name or not member:
        raise BadRecordError(image, f"photo reference {ref!r} is not <zip>@<member>")
    for part, what in ((zip_name, "zip"), (member, "member")):
        reason = unsafe_reason(part)
        if reason is not None:
            raise BadRecordError(image, f"{what} {part!r} {reason}")
    return zip_name, member


def read_labelmap(folder: Path, spec: ElevaterSpec) -> list[str]:
    """The release's own class list (iris); the names ELEVATER prompts with come from the
    catalog, this only checks the release has as many classes."""
    assert spec.labelmap is not None
    path = folder / spec.labelmap
    names = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if len(names) != len(spec.classes):
        raise DatasetError(
            f"{path} lists {len(names)} classes; ELEVATER's {spec.elevater_name} has "
            f"{len(spec.classes)}: not this dataset's label map, re-download it"
        )
    return names


def _labels(text: str, n_classes: int, *, image: str, multilabel: bool) -> tuple[int, ...]:
    try:
        labels = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise BadRecordError(image, f"labels {text!r} are not integers") from None
    bad = [x for x in labels if not 0 <= x < n_classes]
    if bad:
        raise BadRecordError(image, f"label {bad[0]} is outside 0..{n_classes - 1}")
    if not multilabel and len(labels) != 1:
        raise BadRecordError(image, f"{len(labels)} labels for a single-label dataset")
    return labels


def read_iris(folder: Path, spec: ElevaterSpec, skip: Skip) -> list[Sample]:
    read_labelmap(folder, spec)
    index = folder / spec.test_index
    out: list[Sample] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(_read_text(index).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{spec.test_index} line {n}"
        try:
            ref, sep, label_text = line.rpartition(" ")
            if not sep or not ref.strip():
                raise BadRecordError(where, "is not '<zip>@<member> <labels>'")
            ref = ref.strip()
            zip_name, member = split_ref(ref, image=where)
            labels = _labels(label_text, len(spec.classes), image=where,
                             multilabel=spec.multilabel)  # fmt: skip
            if ref in seen:
                raise BadRecordError(where, f"{ref} repeats line {seen[ref]}")
        except BadRecordError as exc:
            skip(exc)
            continue
        seen[ref] = n
        out.append(Sample(ref, zip_name, member, labels))
    return out


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} holds a {type(data).__name__}, not a COCO manifest object")
    for field in ("images", "annotations", "categories"):
        if not isinstance(data.get(field), list):
            raise DatasetError(f"{path} has no {field!r} list: not a COCO manifest")
    return data


def read_coco(folder: Path, spec: ElevaterSpec, skip: Skip) -> list[Sample]:
    path = folder / spec.test_index
    data = _load_json(path)
    try:
        cat_ids = sorted(int(c["id"]) for c in data["categories"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: a category has no integer 'id'") from None
    if len(cat_ids) != len(spec.classes):
        raise DatasetError(
            f"{path} has {len(cat_ids)} categories; ELEVATER's {spec.elevater_name} has "
            f"{len(spec.classes)}"
        )
    position = {cid: i for i, cid in enumerate(cat_ids)}
    labels: dict[Any, list[int]] = {}
    for k, ann in enumerate(data["annotations"]):
        where = f"{spec.test_index}#annotation {k}"
        if not isinstance(ann, dict) or ann.get("category_id") not in position:
            skip(BadRecordError(where, "has no known category_id"))
            continue
        labels.setdefault(ann.get("image_id"), []).append(position[ann["category_id"]])
    images: list[tuple[int, dict[str, Any]]] = []
    seen: set[int] = set()
    for k, img in enumerate(data["images"]):
        where = f"{spec.test_index}#image {k}"
        if not isinstance(img, dict) or isinstance(img.get("id"), bool):
            skip(BadRecordError(where, "is not an object with an integer 'id'"))
            continue
        if not isinstance(img.get("id"), int):
            skip(BadRecordError(where, f"id {img.get('id')!r} is not an integer"))
            continue
        if img["id"] in seen:
            skip(BadRecordError(where, f"id {img['id']} repeats an earlier image"))
            continue
        seen.add(img["id"])
        images.append((img["id"], img))
    out: list[Sample] = []
    for image_id, img in sorted(images, key=lambda item: item[0]):
        where = f"{spec.test_index}#id {image_id}"
        try:
            zip_name, member = img.get("zip_file"), img.get("file_name")
            if not isinstance(zip_name, str) or not isinstance(member, str):
                raise BadRecordError(where, "zip_file / file_name missing or not strings")
            ref = f"{zip_name}@{member}"
            split_ref(ref, image=where)
            found = labels.get(image_id)
            if not found:
                raise BadRecordError(where, "has no annotation")
            if not spec.multilabel:
                found = found[:1]  # ELEVATER takes the first label of a single-label image
        except BadRecordError as exc:
            skip(exc)
            continue
        out.append(Sample(ref, zip_name, member, tuple(found)))
    return out


def read_samples(root: Path, spec: ElevaterSpec, skip: Skip) -> list[Sample]:
    """The test samples of ``spec`` under ``root``, in ELEVATER's order (module doc)."""
    folder = dataset_dir(root, spec)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is missing: no {spec.elevater_name} under {root}")
    for name in spec.test_files:
        if not (folder / name).is_file():
            raise DatasetError(f"{folder / name} is missing (the {spec.elevater_name} test photos)")
    reader = read_coco if spec.format == "coco" else read_iris
    return reader(folder, spec, skip)
