"""SugarCrepe's seven categories as multiple-choice tasks, scored as the peer's main_eval.py.

Each item is one example: the whole COCO photo, options ``[caption, negative_caption]``, answer
0, decided by the ``strict`` rule (right iff the positive caption's score is strictly above the
negative's: a tie counts wrong, as ``pos > neg`` does). ``accuracy`` is the plain mean over the
category's items, with ``n`` (items scored). Photos repeat across items: every item of a photo
shares one region (the photo path), so an embedding scorer encodes each photo once.

A photo that is missing or does not decode drops its items, named and counted in ``skipped``
(the peer would stop on the first one; ``strict`` stops here too).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.tasks.choice import ChoiceExample, ChoiceTask, mean_accuracy


def build(
    dataset: Any, split: str | None, seed: int, *, category: str
) -> tuple[list[ChoiceExample], list[SkippedImage]]:
    """The examples of ``category`` (module doc); ``split`` must be None or the category."""
    from densecap_eval.datasets.photos import photo_size

    del seed  # nothing is random
    if split is not None and split != category:
        raise DatasetError(
            f"sugarcrepe/{category} reads the split {category!r} only, not {split!r}"
        )
    examples: list[ChoiceExample] = []
    skipped: list[SkippedImage] = []
    for record in dataset.records(category):
        filename = record.meta["filename"]
        try:
            # missing or undecodable: the item is dropped, named by its id (several items may
            # share a photo: each one left out is counted); the reason names the photo
            photo_size(Path(record.image), image=record.id)
        except BadRecordError as exc:
            skipped.append(dataset.skip(exc))
            continue
        (positive,) = record.texts_of("positive")
        (negative,) = record.texts_of("negative")
        examples.append(
            ChoiceExample(
                id=record.id,
                image=filename,
                region=Region(str(Path(record.image).absolute())),
                options=(positive.text, negative.text),
                answer=0,
                group=category,
                meta={"key": record.meta["key"]},
            )
        )
    return examples, skipped


def _task(category: str) -> ChoiceTask:
    return ChoiceTask(
        name=f"sugarcrepe/{category}",
        protocol="sugarcrepe",
        description=(
            f"SugarCrepe {category}: the COCO photo against [caption, negative_caption]; right "
            "iff the caption scores strictly above the negative (ties wrong); accuracy"
        ),
        dataset="sugarcrepe",
        build=partial(build, category=category),
        rule="strict",
        aggregate=mean_accuracy("accuracy"),
        default_split=category,
    )


ADD_OBJ = _task("add_obj")
ADD_ATT = _task("add_att")
REPLACE_OBJ = _task("replace_obj")
REPLACE_ATT = _task("replace_att")
REPLACE_REL = _task("replace_rel")
SWAP_OBJ = _task("swap_obj")
SWAP_ATT = _task("swap_att")
