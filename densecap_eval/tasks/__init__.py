"""Tasks: declared data saying which dataset, which examples and which metrics.

A task's ``prepare(dataset, split=..., seed=...)`` returns a `TaskInstance` that adds its
regions and texts to a shared `ScoringPlan` and turns the resulting `ScoreTable` into metrics
and a per-example table. A *suite* (such as ``dci``) names several concrete tasks.

Third-party tasks register through the ``densecap_eval.tasks`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from densecap_eval.registry import Registry
from densecap_eval.tasks.base import TaskSuite

TASKS: Registry[Any] = Registry("task", entry_point_group="densecap_eval.tasks")
for _name, _attr in (
    ("dci/all_swaps", "ALL_SWAPS"),
    ("dci/all_swaps_pick5", "ALL_SWAPS_PICK5"),
    ("dci/base_swaps", "BASE_SWAPS"),
    ("dci/all_hardest", "ALL_HARDEST"),
    ("dci", "DCI_SUITE"),
):
    TASKS.register(_name, f"densecap_eval.tasks.dci:{_attr}")
TASKS.register("dci/retrieval", "densecap_eval.tasks.retrieval:DCI_RETRIEVAL")
TASKS.register("dci/retrieval-full", "densecap_eval.tasks.retrieval:DCI_RETRIEVAL_FULL")
for _name, _attr in (
    ("docci/retrieval", "DOCCI_RETRIEVAL"),
    ("iiw/retrieval", "IIW_RETRIEVAL"),
    ("urban1k/retrieval", "URBAN1K_RETRIEVAL"),
    ("urban1k/retrieval-lotlip", "URBAN1K_RETRIEVAL_LOTLIP"),
    ("sharegpt4v/retrieval-1k", "SHAREGPT4V_RETRIEVAL_1K"),
    ("sharegpt4v/retrieval-lotlip-1k", "SHAREGPT4V_RETRIEVAL_LOTLIP_1K"),
    ("sharegpt4v/retrieval-lotlip-10k", "SHAREGPT4V_RETRIEVAL_LOTLIP_10K"),
):
    TASKS.register(_name, f"densecap_eval.tasks.longcap:{_attr}")
# Generated negatives (tasks/negatives.py) and users' own data (tasks/files.py).
for _name, _target in (
    ("docci/negatives", "densecap_eval.tasks.negatives:DOCCI_NEGATIVES"),
    ("iiw/negatives", "densecap_eval.tasks.negatives:IIW_NEGATIVES"),
    ("urban1k/negatives", "densecap_eval.tasks.negatives:URBAN1K_NEGATIVES"),
    ("sharegpt4v/negatives", "densecap_eval.tasks.negatives:SHAREGPT4V_NEGATIVES"),
    ("files/retrieval", "densecap_eval.tasks.files:FILES_RETRIEVAL"),
    ("files/negatives", "densecap_eval.tasks.files:FILES_NEGATIVES"),
    ("files/regions", "densecap_eval.tasks.files:FILES_REGIONS"),
):
    TASKS.register(_name, _target)
# The compositional suites (tasks/aro.py, aro_order.py, sugarcrepe.py, vlc.py, winoground.py).
SUGARCREPE_CATEGORIES: tuple[str, ...] = (
    "add_obj", "add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att",
)  # fmt: skip
for _name, _target in (
    ("aro/vg_relation", "densecap_eval.tasks.aro:VG_RELATION"),
    ("aro/vg_attribution", "densecap_eval.tasks.aro:VG_ATTRIBUTION"),
    ("aro/coco_order", "densecap_eval.tasks.aro_order:COCO_ORDER"),
    ("aro/flickr30k_order", "densecap_eval.tasks.aro_order:FLICKR30K_ORDER"),
    *((f"sugarcrepe/{c}", f"densecap_eval.tasks.sugarcrepe:{c.upper()}")
      for c in SUGARCREPE_CATEGORIES),
    ("vlc/object", "densecap_eval.tasks.vlc:OBJECT"),
    ("vlc/attribute", "densecap_eval.tasks.vlc:ATTRIBUTE"),
    ("vlc/relation", "densecap_eval.tasks.vlc:RELATION"),
    ("winoground", "densecap_eval.tasks.winoground:WINOGROUND"),
):  # fmt: skip
    TASKS.register(_name, _target)
ARO_SUITE = TaskSuite("aro", ("aro/vg_relation", "aro/vg_attribution", "aro/coco_order",
                              "aro/flickr30k_order"), "aro", "the four ARO tasks")  # fmt: skip
SUGARCREPE_SUITE = TaskSuite("sugarcrepe", tuple(f"sugarcrepe/{c}" for c in SUGARCREPE_CATEGORIES),
                             "sugarcrepe", "the seven SugarCrepe categories")  # fmt: skip
VLC_SUITE = TaskSuite("vlc", ("vlc/object", "vlc/attribute", "vlc/relation"), "vlc",
                      "VL-CheckList's three groups, as DCI runs them")  # fmt: skip
COMPOSITIONAL_SUITE = TaskSuite(
    "compositional",
    (*ARO_SUITE.members, *SUGARCREPE_SUITE.members, *VLC_SUITE.members, "winoground"),
    "compositional",
    "every compositional task: ARO, SugarCrepe, VL-CheckList and Winoground",
)
for _suite in (ARO_SUITE, SUGARCREPE_SUITE, VLC_SUITE, COMPOSITIONAL_SUITE):
    TASKS.register(_suite.name, _suite)
# ELEVATER zero-shot classification (datasets/elevater/tasks.py): one task per dataset + suite.
ELEVATER_KEYS: tuple[str, ...] = (
    "cifar10", "cifar100", "caltech101", "country211", "dtd", "eurosat-clip", "fer2013",
    "fgvc-aircraft-2013b", "food101", "gtsrb", "hateful-memes", "kitti-distance", "mnist",
    "flower102", "oxford-iiit-pets", "patchcamelyon", "rendered-sst2", "resisc45-clip",
    "stanfordcar", "voc2007classification",
)  # fmt: skip
for _key in ELEVATER_KEYS:
    TASKS.register(f"elevater/{_key}", f"densecap_eval.datasets.elevater.tasks:{_key}")
TASKS.register("elevater", "densecap_eval.datasets.elevater.tasks:SUITE")
# CLIP_benchmark's protocol on its wds copies (datasets/elevater/cb_tasks.py): no Hateful Memes
# or Food-101 there.
for _key in ELEVATER_KEYS:
    if _key not in ("hateful-memes", "food101"):
        TASKS.register(f"clip_benchmark/{_key}", f"densecap_eval.datasets.elevater.cb_tasks:{_key}")
TASKS.register("clip_benchmark", "densecap_eval.datasets.elevater.cb_tasks:SUITE")


def get_task(name: str) -> Any:
    """The task (or suite) registered under ``name``; unknown names raise with the known ones."""
    return TASKS.get(name)


def needs_gallery(name: str) -> bool:
    """Whether a task ranks a whole gallery (retrieval): a pair scorer then needs a first stage."""
    return bool(getattr(get_task(name), "needs_gallery", False))


def list_tasks() -> list[str]:
    return TASKS.names()


def concrete_tasks(names: Iterable[str]) -> list[str]:
    """Suites expanded to their members, duplicates dropped, order kept."""
    out: dict[str, None] = {}
    for name in names:
        for member in get_task(name).concrete():
            out.setdefault(member, None)
    return list(out)
