"""ImageInWords (Garg et al., 2024): LoTLIP's 612-image retrieval pool and generated negatives.

Protocol notes: docs/protocols/longcap.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS

DATASETS.register("iiw", f"{__name__}.loader:IIWDataset")
DOWNLOADERS.register("iiw", f"{__name__}.loader:download")
TASKS.register("iiw/retrieval", f"{__name__}.tasks:RETRIEVAL")
TASKS.register("iiw/negatives", f"{__name__}.tasks:NEGATIVES")
