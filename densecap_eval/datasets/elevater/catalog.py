"""The 20 ELEVATER datasets DCI runs: class names, templates, metric and layout (package data).

The table is facts read from ELEVATER's ``prompts.py`` (``class_map``, ``template_map``: FER's
synonym lists are reduced to their first entry, as ELEVATER does; CIFAR-10 maps to the CIFAR-100
templates), its dataset yaml files (``TEST.METRIC``, ``DATASET.CENTER_CROP``) and
``vision_datasets.json`` (where each test split lives).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

DATA_FILE = "elevater.json"


@dataclass(frozen=True)
class ElevaterSpec:
    """One dataset of the table (see the module doc)."""

    key: str  # DCI's key (the task name's tail): cifar10, voc2007classification ...
    elevater_name: str  # ELEVATER's DATASET.DATASET: cifar-10, voc-2007-classification ...
    metric: str  # accuracy | mean-per-class | 11point_mAP | roc_auc
    center_crop: bool  # False: resized to a square without a crop (kitti-distance)
    format: str  # iris | coco
    type: str  # classification_multiclass | classification_multilabel
    root_folder: str  # relative to the data root: classification/cifar_10_20211007 ...
    labelmap: str | None  # labels.txt / labelmap.txt (iris); None for coco
    test_index: str
    test_files: tuple[str, ...]
    test_images: int | None  # images in the full test split
    classes: tuple[str, ...]
    templates: tuple[str, ...]  # ``{}`` placeholders

    @property
    def multilabel(self) -> bool:
        return self.type.endswith("multilabel")

    def prompts(self, class_index: int) -> list[str]:
        """The texts of one class: every template filled with its name, in template order."""
        name = self.classes[class_index]
        return [t.format(name) for t in self.templates]


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = (
        files("densecap_eval.datasets.elevater")
        .joinpath("data")
        .joinpath(DATA_FILE)
        .read_text("utf-8")
    )
    return dict(json.loads(text)["datasets"])


def dataset_keys() -> tuple[str, ...]:
    """The 20 keys DCI runs (its ``DATASETS_LIST``)."""
    return tuple(_table())


def spec(key: str) -> ElevaterSpec:
    """The table row of ``key`` (KeyError names the known keys)."""
    table = _table()
    if key not in table:
        raise KeyError(f"no ELEVATER dataset {key!r}; known: {', '.join(table)}")
    row: dict[str, Any] = dict(table[key])
    row.pop("synonyms", None)
    fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in row.items()}
    return ElevaterSpec(key=key, **fields)
