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

docs/elevater.md describes the protocols.
"""
