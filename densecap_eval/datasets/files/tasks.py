"""Tasks on users' own captioned images (the ``files`` dataset, datasets/files/loader.py).

- ``files/retrieval``: image-text retrieval over every image of the input, one text per image:
  its FIRST whole-image caption as written (``text_rule="raw"``; further captions of the image
  are not used), R@1/5/10 both ways (tasks/retrieval.py). Images with only boxed rows have no
  whole-image caption and are skipped.
- ``files/negatives``: each row's negatives against that row's first caption, strictly
  (tasks/negatives.py, ``source="record"``).
- ``files/regions``: per-image region-caption matching over the boxed rows of images with at
  least two (tasks/regions.py).
"""

from __future__ import annotations

from densecap_eval.tasks.negatives import NegativesTask
from densecap_eval.tasks.regions import RegionsTask
from densecap_eval.tasks.retrieval import RetrievalTask

FILES_RETRIEVAL = RetrievalTask(
    "files/retrieval",
    "files",
    "retrieval on your own images: each image's first caption, R@1/5/10 both ways",
    dataset="files",
    text_kind="caption",
    text_rule="raw",
)
FILES_NEGATIVES = NegativesTask(
    "files/negatives",
    "record",
    "your own negatives: each row's negatives against its first caption, strictly",
    dataset="files",
    source="record",
)
FILES_REGIONS = RegionsTask(
    "files/regions",
    "your own boxes: each region's crop against the captions of its image's regions",
    dataset="files",
)
