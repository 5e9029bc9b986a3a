"""ShareGPT4V's long captions: retrieval as Long-CLIP and LoTLIP run it, generated negatives.

Protocol notes: docs/protocols/longcap.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS

DATASETS.register("sharegpt4v", f"{__name__}.loader:ShareGPT4VDataset")
DOWNLOADERS.register("sharegpt4v", f"{__name__}.loader:download")
TASKS.register("sharegpt4v/retrieval-1k", f"{__name__}.tasks:RETRIEVAL_1K")
TASKS.register("sharegpt4v/retrieval-lotlip-1k", f"{__name__}.tasks:RETRIEVAL_LOTLIP_1K")
TASKS.register("sharegpt4v/retrieval-lotlip-10k", f"{__name__}.tasks:RETRIEVAL_LOTLIP_10K")
TASKS.register("sharegpt4v/negatives", f"{__name__}.tasks:NEGATIVES")
