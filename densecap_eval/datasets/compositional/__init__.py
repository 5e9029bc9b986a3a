"""The ``compositional`` suite: every compositional benchmark's tasks under one name.

A suite only (no data of its own): ARO, SugarCrepe, VL-CheckList and Winoground, as the DCI
paper reports them side by side; the members are those benchmarks' own suites.

Protocol notes: docs/protocols/compositional.md.
"""

from __future__ import annotations

from densecap_eval.datasets.aro import SUITE as ARO
from densecap_eval.datasets.sugarcrepe import SUITE as SUGARCREPE
from densecap_eval.datasets.vlc import SUITE as VLC
from densecap_eval.tasks import TASKS
from densecap_eval.tasks.base import TaskSuite

TASKS.register(
    "compositional",
    TaskSuite(
        "compositional",
        (*ARO.members, *SUGARCREPE.members, *VLC.members, "winoground"),
        "compositional",
        "every compositional task: ARO, SugarCrepe, VL-CheckList and Winoground",
    ),
)
