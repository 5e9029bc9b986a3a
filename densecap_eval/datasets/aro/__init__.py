"""ARO (Yuksekgonul et al., ICLR 2023): VG-Relation, VG-Attribution, COCO-Order, Flickr30k-Order.

Protocol notes: docs/protocols/compositional.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS
from densecap_eval.tasks.base import TaskSuite

DATASETS.register("aro-vg", f"{__name__}.loader:AROVGDataset")
DATASETS.register("aro-coco", f"{__name__}.order_loader:COCOOrderDataset")
DATASETS.register("aro-flickr30k", f"{__name__}.order_loader:Flickr30kOrderDataset")
DOWNLOADERS.register("aro-vg", f"{__name__}.loader:download")
DOWNLOADERS.register("aro-coco", f"{__name__}.order_loader:download_coco")
DOWNLOADERS.register("aro-flickr30k", f"{__name__}.order_loader:download_flickr30k")
TASKS.register("aro/vg_relation", f"{__name__}.tasks:VG_RELATION")
TASKS.register("aro/vg_attribution", f"{__name__}.tasks:VG_ATTRIBUTION")
TASKS.register("aro/coco_order", f"{__name__}.order_tasks:COCO_ORDER")
TASKS.register("aro/flickr30k_order", f"{__name__}.order_tasks:FLICKR30K_ORDER")
SUITE = TaskSuite(
    "aro",
    ("aro/vg_relation", "aro/vg_attribution", "aro/coco_order", "aro/flickr30k_order"),
    "aro",
    "the four ARO tasks",
)
TASKS.register(SUITE.name, SUITE)
