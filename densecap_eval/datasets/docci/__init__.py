"""DOCCI (Onoe et al., 2024): long-caption retrieval and generated negatives.

Protocol notes: docs/protocols/longcap.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS

DATASETS.register("docci", f"{__name__}.loader:DOCCIDataset")
DOWNLOADERS.register("docci", f"{__name__}.loader:download")
TASKS.register("docci/retrieval", f"{__name__}.tasks:RETRIEVAL")
TASKS.register("docci/negatives", f"{__name__}.tasks:NEGATIVES")
