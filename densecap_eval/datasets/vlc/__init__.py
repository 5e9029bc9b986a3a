"""VL-CheckList (Zhao et al., 2022) as DCI runs it: the Object, Attribute and Relation groups.

Protocol notes: docs/protocols/compositional.md.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.tasks import TASKS
from densecap_eval.tasks.base import TaskSuite

DATASETS.register("vlc", f"{__name__}.loader:VLCheckListDataset")
DOWNLOADERS.register("vlc", f"{__name__}.loader:download")
TASKS.register("vlc/object", f"{__name__}.tasks:OBJECT")
TASKS.register("vlc/attribute", f"{__name__}.tasks:ATTRIBUTE")
TASKS.register("vlc/relation", f"{__name__}.tasks:RELATION")
SUITE = TaskSuite(
    "vlc",
    ("vlc/object", "vlc/attribute", "vlc/relation"),
    "vlc",
    "VL-CheckList's three groups, as DCI runs them",
)
TASKS.register(SUITE.name, SUITE)
