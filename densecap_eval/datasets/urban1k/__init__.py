"""Urban1k (Long-CLIP's long-caption set): retrieval as Long-CLIP and LoTLIP run it, negatives.

Protocol notes: docs/protocols/longcap.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS

DATASETS.register("urban1k", f"{__name__}.loader:Urban1kDataset")
DOWNLOADERS.register("urban1k", f"{__name__}.loader:download")
TASKS.register("urban1k/retrieval", f"{__name__}.tasks:RETRIEVAL")
TASKS.register("urban1k/retrieval-lotlip", f"{__name__}.tasks:RETRIEVAL_LOTLIP")
TASKS.register("urban1k/negatives", f"{__name__}.tasks:NEGATIVES")
