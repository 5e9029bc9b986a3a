"""The ``compositional`` suite: every compositional benchmark's tasks under one name.

A suite only (no data of its own): ARO, SugarCrepe, VL-CheckList and Winoground, as the DCI
paper reports them side by side.

Protocol notes: docs/protocols/compositional.md.
"""

from __future__ import annotations

from densecap_eval.datasets.sugarcrepe.categories import CATEGORIES
from densecap_eval.tasks import TASKS
from densecap_eval.tasks.base import TaskSuite

TASKS.register(
    "compositional",
    TaskSuite(
        "compositional",
        (
            *("aro/vg_relation", "aro/vg_attribution", "aro/coco_order", "aro/flickr30k_order"),
            *(f"sugarcrepe/{c}" for c in CATEGORIES),
            *("vlc/object", "vlc/attribute", "vlc/relation"),
            "winoground",
        ),
        "compositional",
        "every compositional task: ARO, SugarCrepe, VL-CheckList and Winoground",
    ),
)
