"""Users' own captioned images (JSONL, CSV, parquet, imagefolder, ``save_to_disk``) and their tasks."""

from __future__ import annotations

from densecap_eval.datasets import DATASETS
from densecap_eval.tasks import TASKS

DATASETS.register("files", f"{__name__}.loader:FilesDataset")
TASKS.register("files/retrieval", f"{__name__}.tasks:FILES_RETRIEVAL")
TASKS.register("files/negatives", f"{__name__}.tasks:FILES_NEGATIVES")
TASKS.register("files/regions", f"{__name__}.tasks:FILES_REGIONS")
