"""ELEVATER zero-shot image classification, as the DCI suite runs it: one benchmark, one folder.

- ``data/elevater.json``: per dataset (DCI's keys) the class names in ELEVATER's label order, the
  templates, the metric, the crop rule and the on-disk layout, taken from ELEVATER's own prompt
  tables and dataset files (Elevater_Toolkit_IC at commit aae48b1, the one DCI pins).
- `catalog`: that table, typed.
- `layout`: reading the vision-datasets release layout (iris and coco manifests, ``zip@member``).
- `photos`: zip members decoded as ELEVATER decodes them (EXIF orientation, then RGB).
- `loader`: the registered dataset ``elevater``.
- `protocol`: ``--protocol default | elevater-dci`` (preprocessing and prompt cleaning).
- `tasks`: the task family ``elevater/<key>`` and the suite ``elevater``.
- `synth`: a tiny synthetic release in the real layout (tests, demos).
- `download`: what ``densecap-eval download elevater`` says.
- `wds`, `cb_tasks`: CLIP_benchmark's protocol on its own ``wds_<name>`` copies (dataset
  ``clip_benchmark``, tasks ``clip_benchmark/<key>``).

docs/protocols/elevater.md describes the protocols.
"""

from __future__ import annotations

from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.datasets.elevater import catalog
from densecap_eval.tasks import TASKS

DATASETS.register("elevater", f"{__name__}.loader:ElevaterDataset")
DATASETS.register("clip_benchmark", f"{__name__}.wds:ClipBenchmarkDataset")
DOWNLOADERS.register("elevater", f"{__name__}.download:download")
for _key in catalog.dataset_keys():
    TASKS.register(f"elevater/{_key}", f"{__name__}.tasks:{_key}")
    # CLIP_benchmark has no Hateful Memes or Food-101 copy in its wds collection.
    if _key not in ("hateful-memes", "food101"):
        TASKS.register(f"clip_benchmark/{_key}", f"{__name__}.cb_tasks:{_key}")
TASKS.register("elevater", f"{__name__}.tasks:SUITE")
TASKS.register("clip_benchmark", f"{__name__}.cb_tasks:SUITE")
