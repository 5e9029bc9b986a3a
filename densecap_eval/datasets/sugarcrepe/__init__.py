"""SugarCrepe (Hsieh et al., NeurIPS 2023): seven hard-negative categories on COCO val2017.

Protocol notes: docs/protocols/compositional.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.datasets.sugarcrepe.categories import CATEGORIES
from densecap_eval.tasks import TASKS
from densecap_eval.tasks.base import TaskSuite

DATASETS.register("sugarcrepe", f"{__name__}.loader:SugarCrepeDataset")
DOWNLOADERS.register("sugarcrepe", f"{__name__}.loader:download")
for _category in CATEGORIES:
    TASKS.register(f"sugarcrepe/{_category}", f"{__name__}.tasks:{_category.upper()}")
SUITE = TaskSuite(
    "sugarcrepe",
    tuple(f"sugarcrepe/{c}" for c in CATEGORIES),
    "sugarcrepe",
    "the seven SugarCrepe categories",
)
TASKS.register(SUITE.name, SUITE)
