"""Winoground (Thrush et al., CVPR 2022): text, image and group scores.

Protocol notes: docs/protocols/compositional.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS

DATASETS.register("winoground", f"{__name__}.loader:WinogroundDataset")
DOWNLOADERS.register("winoground", f"{__name__}.loader:download")
TASKS.register("winoground", f"{__name__}.tasks:WINOGROUND")
