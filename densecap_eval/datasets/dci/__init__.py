"""The Densely Captioned Images (DCI) release and its 77-token summarised form (sDCI).

The loader (`loader`), its download (`download`), its tasks (`tasks`): the four reference
subtests (suite ``dci``) and two retrieval protocols.

Protocol notes: docs/protocols/dci.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS

DATASETS.register("dci", f"{__name__}.loader:DCIDataset")
DOWNLOADERS.register("dci", f"{__name__}.download:download")
TASKS.register("dci/all_swaps", f"{__name__}.tasks:ALL_SWAPS")
TASKS.register("dci/all_swaps_pick5", f"{__name__}.tasks:ALL_SWAPS_PICK5")
TASKS.register("dci/base_swaps", f"{__name__}.tasks:BASE_SWAPS")
TASKS.register("dci/all_hardest", f"{__name__}.tasks:ALL_HARDEST")
TASKS.register("dci", f"{__name__}.tasks:SUITE")
TASKS.register("dci/retrieval", f"{__name__}.tasks:RETRIEVAL")
TASKS.register("dci/retrieval-full", f"{__name__}.tasks:RETRIEVAL_FULL")
