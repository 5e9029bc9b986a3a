"""VL-CheckList's three groups (Object, Attribute, Relation) exactly as the DCI reference runs them.

Per annotation file (`densecap_eval.datasets.vlc.loader.DCI_FILES`), as VL-CheckList's ``itc``
evaluation with DCI's patch:

1. items whose photo is missing are dropped (the peer drops them silently; here each is named
   in ``skipped`` and counted in ``by_file[...]["dropped"]``; ``strict`` stops). A photo that
   exists but does not decode, or a malformed item, is dropped the same way (the peer would
   crash on either; DCI's download script deletes empty photos, so they count as missing);
2. the first ``MAX_NUM / 2 = 1000`` kept items are scored (later items are never read, so a
   missing photo after them is not reported);
3. each item is the whole photo against ``[POS[0], NEG[0]]``, answer 0, rule ``strict``
   (right iff pos > neg: a tie is wrong);
4. the file's ``total_acc`` is ``round(right / kept, 4)``.

``score_vlc`` then takes, per corpus.json category, the mean over its datasets of the mean of
the datasets' files' ``total_acc`` (a dataset with no file scores 0, a category with no dataset
0, as the peer does), and the groups: Object = mean(large, medium, small, center, mid,
margin), Attribute = mean(color, material, action_a, size, state), Relation = mean(action_r,
spatial). Sums run in corpus.json's order, as the peer's.

Metrics of each group task: ``accuracy`` (the group score), ``by_category`` (category ->
score), ``by_file`` (file key -> ``{"accuracy": total_acc, "n": kept and scored, "dropped":
items dropped before the cap}``), ``empty_files`` (files with no kept item) and ``n``. A file
with no kept item makes the peer divide by zero (it crashes); here its accuracy is None, and
so is every mean it enters, and it is listed in ``empty_files``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from densecap_eval.core.errors import BadRecordError, DatasetError, DensecapError
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.tasks.choice import ChoiceExample, ChoiceInstance, ChoiceTask

logger = logging.getLogger(__name__)

MAX_NUM = 2000  # DCI's run_vlc.py; the itc evaluation keeps MAX_NUM / 2 items per file
CAP = MAX_NUM // 2
GROUPS: Mapping[str, tuple[str, ...]] = {
    "object": ("large", "medium", "small", "center", "mid", "margin"),
    "attribute": ("color", "material", "action_a", "size", "state"),
    "relation": ("action_r", "spatial"),
}


@dataclass(frozen=True)
class Layout:
    """What the averaging needs besides the outcomes: each category's datasets and files (in
    corpus.json's order) and how many items each file dropped before the cap."""

    categories: Mapping[str, Mapping[str, tuple[str, ...]]]
    dropped: Mapping[str, int]


def file_scores(
    correct: np.ndarray, examples: Sequence[ChoiceExample], files: Sequence[str]
) -> dict[str, tuple[float | None, int]]:
    """(total_acc = round(acc, 4), n) per file key; (None, 0) for a file with no example."""
    right: dict[str, int] = dict.fromkeys(files, 0)
    count: dict[str, int] = dict.fromkeys(files, 0)
    for ok, ex in zip(correct.tolist(), examples, strict=True):
        right[ex.group] += bool(ok)
        count[ex.group] += 1
    return {
        f: (round(float(right[f]) / count[f], 4) if count[f] else None, count[f]) for f in files
    }


def category_score(
    datasets: Mapping[str, Sequence[str]], total_acc: Mapping[str, float | None]
) -> float | None:
    """score_vlc's per-category number: the mean over datasets of the mean of their files'
    total_acc (0 for a dataset without files, 0 for a category without datasets); None when
    a file it needs has no score."""
    if not datasets:
        return 0
    data_score: list[float] = []
    for keys in datasets.values():
        if not keys:
            data_score.append(0)
            continue
        score = 0.0
        for key in keys:
            acc = total_acc[key]
            if acc is None:
                return None
            score += acc
        data_score.append(score / len(keys))
    return sum(data_score) / len(datasets)


def group_score(scores: Sequence[float | None]) -> float | None:
    """The plain mean of category scores (None if any is None)."""
    if any(s is None for s in scores):
        return None
    return sum(s for s in scores if s is not None) / len(scores)


def aggregate(
    correct: np.ndarray, examples: Sequence[ChoiceExample], *, layout: Layout
) -> dict[str, Any]:
    """The group's metrics from per-example outcomes (module doc)."""
    files = [k for sets in layout.categories.values() for keys in sets.values() for k in keys]
    files = list(dict.fromkeys(files))
    scores = file_scores(correct, examples, files)
    total_acc = {f: acc for f, (acc, _) in scores.items()}
    by_category = {c: category_score(sets, total_acc) for c, sets in layout.categories.items()}
    empty = [f for f, (acc, _) in scores.items() if acc is None]
    if empty:
        logger.warning("VL-CheckList: %d file(s) have no item left to score (the peer would "
                       "divide by zero): %s; their means are None", len(empty),
                       ", ".join(empty))  # fmt: skip
    return {
        "accuracy": group_score(list(by_category.values())),
        "by_category": by_category,
        "by_file": {
            f: {"accuracy": acc, "n": n, "dropped": layout.dropped.get(f, 0)}
            for f, (acc, n) in scores.items()
        },
        "empty_files": empty,
    }


def _unbound(dataset: Any, split: str | None, seed: int) -> Any:
    raise DensecapError("a VL-CheckList group task builds its examples in prepare()")


@dataclass(frozen=True)
class VLCGroupTask(ChoiceTask):
    """One of the three groups; ``categories`` are corpus.json keys, in the peer's order."""

    categories: tuple[str, ...] = ()

    def prepare(self, dataset: Any, *, split: str | None = None, seed: int = 0) -> ChoiceInstance:
        if split is not None and split != "test":
            raise DatasetError(f"{self.name} reads the split 'test' only, not {split!r}")
        examples, skipped, layout = build(dataset, self.categories)
        bound = replace(
            self,
            build=lambda ds, sp, sd: (examples, skipped),
            aggregate=partial(aggregate, layout=layout),
        )
        return ChoiceTask.prepare(bound, dataset, split=split, seed=seed)


def build(
    dataset: Any, categories: Sequence[str]
) -> tuple[list[ChoiceExample], list[SkippedImage], Layout]:
    """The examples of these corpus.json categories' files (module doc, steps 1-3)."""
    from densecap_eval.datasets.vlc.loader import DCI_FILES

    runs = {f.key: f for f in DCI_FILES}
    layout_categories = _layout(dataset, categories, runs)
    examples: list[ChoiceExample] = []
    skipped: list[SkippedImage] = []
    dropped: dict[str, int] = {}
    for category, sets in layout_categories.items():
        for key in (k for keys in sets.values() for k in keys):
            if key in dropped:  # a file listed twice is read once
                continue
            dropped[key] = _read_file(dataset, runs[key], key, category, examples, skipped)
            if dropped[key]:
                logger.warning("VL-CheckList %s: %d item(s) dropped before the first %d kept "
                               "(photo missing or unreadable, or a malformed item)", key,
                               dropped[key], CAP)  # fmt: skip
    return examples, skipped, Layout(layout_categories, dropped)


def _layout(
    dataset: Any, categories: Sequence[str], runs: Mapping[str, Any]
) -> dict[str, dict[str, tuple[str, ...]]]:
    """Each category's sets of file keys from corpus.json, checked against the files DCI runs."""
    corpus = dataset.corpus()
    layout: dict[str, dict[str, tuple[str, ...]]] = {}
    for category in categories:
        if category not in corpus:
            raise DatasetError(
                f"{dataset.root}/corpus.json has no category {category!r} "
                f"(it has: {', '.join(corpus)})"
            )
        for keys in corpus[category].values():
            for key in keys:
                if key not in runs:  # the peer: "<file> has not been evaluated." and no score
                    raise DatasetError(
                        f"corpus.json lists {key!r} under {category!r}, a file DCI does not run"
                    )
        layout[category] = {d: tuple(k) for d, k in corpus[category].items()}
    return layout


def _read_file(
    dataset: Any,
    file: Any,
    key: str,
    category: str,
    examples: list[ChoiceExample],
    skipped: list[SkippedImage],
) -> int:
    """Append the first `CAP` usable items of one file; how many were dropped before them."""
    from densecap_eval.datasets.photos import photo_size

    kept = dropped = 0
    for entry in dataset.entries(file):
        if kept >= CAP:
            break
        try:
            if isinstance(entry, BadRecordError):
                raise entry
            # named by the item (items share photos: each one dropped is counted);
            # the reason names the photo
            photo_size(Path(entry.path), image=entry.id)
        except BadRecordError as exc:
            skipped.append(dataset.skip(exc))
            dropped += 1
            continue
        kept += 1
        examples.append(
            ChoiceExample(
                id=entry.id,
                image=entry.image,
                region=Region(str(Path(entry.path).absolute())),
                options=(entry.positive, entry.negative),
                answer=0,
                group=key,
                meta={"category": category, "index": entry.index},
            )
        )
    return dropped


def _task(group: str, title: str) -> VLCGroupTask:
    cats = GROUPS[group]
    return VLCGroupTask(
        name=f"vlc/{group}",
        protocol="vlc",
        description=(
            f"VL-CheckList {title} as DCI runs it: per file the first 1000 items with a photo, "
            f"POS[0] vs NEG[0] (strict), round(acc, 4); mean of {', '.join(cats)}"
        ),
        dataset="vlc",
        build=_unbound,
        rule="strict",
        aggregate=partial(aggregate, layout=Layout({}, {})),  # replaced in prepare()
        default_split="test",
        categories=cats,
    )


OBJECT = _task("object", "Object")
ATTRIBUTE = _task("attribute", "Attribute")
RELATION = _task("relation", "Relation")
