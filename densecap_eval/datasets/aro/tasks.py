"""ARO's VG-Relation and VG-Attribution as the DCI reference runs them (protocol ``dci-aro``).

Examples (`densecap_eval.datasets.aro.loader`): the test case's crop, options ``[false_caption,
true_caption]``, answer 1, decided by numpy's ``argmax`` (rule ``first``: a tie picks the
negative), as ARO's ``evaluate_scores``.

Averages (DCI ``reproduction/.../repro/eval/run_aro.py`` on ARO's ``evaluate_scores``):

- VG-Relation: accuracy per ``relation_name``; the relations in run_aro.py's ``symmetric`` list
  (`SYMMETRIC_RELATIONS`) are dropped; ``macro_accuracy`` is the unweighted mean over the rest.
- VG-Attribution: accuracy per ordered key ``f"{a[0]}_{a[1]}"`` ("red_blue" is not
  "blue_red"); keys with fewer than `MIN_ATTRIBUTE_COUNT` (25) test cases are dropped;
  ``macro_accuracy`` is the unweighted mean over the rest. When no key reaches 25, run_aro.py
  crashes; here ``macro_accuracy`` is None, ``groups`` 0 and ``note`` says why.

Both also report ``accuracy`` (the plain mean over every example, the per-example flag that
``compare`` pairs), ``n``, ``groups`` / ``groups_dropped`` (how many groups the macro mean used
and left out), ``n_macro`` (the examples in the groups used) and ``by_group`` (``{group:
{"accuracy", "n", "used"}}``, every group, sorted by name as ``np.unique`` sorts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densecap_eval.core.errors import DatasetError
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import outcome_metric
from densecap_eval.tasks.choice import ChoiceExample, ChoiceTask

PROTOCOL = "dci-aro"
MIN_ATTRIBUTE_COUNT = 25  # ARO VG_Attribution.evaluate_scores: ``if attr_mask.sum() < 25``

# The DCI reference's `symmetric` list, copied as data from facebookresearch/DCI
# reproduction/densely_captioned_images/repro/eval/run_aro.py (157 names, its order).
SYMMETRIC_RELATIONS: tuple[str, ...] = (
    "adjusting", "attached to", "between", "bigger than", "biting", "boarding", "brushing",
    "chewing", "cleaning", "climbing", "close to", "coming from", "coming out of", "contain",
    "crossing", "dragging", "draped over", "drinking", "drinking from", "driving", "driving down",
    "driving on", "eating from", "eating in", "enclosing", "exiting", "facing", "filled with",
    "floating in", "floating on", "flying", "flying above", "flying in", "flying over",
    "flying through", "full of", "going down", "going into", "going through", "grazing in",
    "growing in", "growing on", "guiding", "hanging from", "hanging in", "hanging off",
    "hanging over", "higher than", "holding onto", "hugging", "in between", "jumping off",
    "jumping on", "jumping over", "kept in", "larger than", "leading", "leaning over", "leaving",
    "licking", "longer than", "looking in", "looking into", "looking out", "looking over",
    "looking through", "lying next to", "lying on top of", "making", "mixed with", "mounted on",
    "moving", "on the back of", "on the edge of", "on the front of", "on the other side of",
    "opening", "painted on", "parked at", "parked beside", "parked by", "parked in",
    "parked in front of", "parked near", "parked next to", "perched on", "petting", "piled on",
    "playing", "playing in", "playing on", "playing with", "pouring", "reaching for", "reading",
    "reflected on", "riding on", "running in", "running on", "running through", "seen through",
    "sitting behind", "sitting beside", "sitting by", "sitting in front of", "sitting near",
    "sitting next to", "sitting under", "skiing down", "skiing on", "sleeping in", "sleeping on",
    "smiling at", "sniffing", "splashing", "sprinkled on", "stacked on", "standing against",
    "standing around", "standing behind", "standing beside", "standing in front of",
    "standing near", "standing next to", "staring at", "stuck in", "surrounding", "swimming in",
    "swinging", "talking to", "topped with", "touching", "traveling down", "traveling on",
    "tying", "typing on", "underneath", "wading in", "waiting for", "walking across",
    "walking by", "walking down", "walking next to", "walking through", "working in",
    "working on", "worn on", "wrapped around", "wrapped in", "by", "of", "near", "next to",
    "with", "beside", "on the side of", "around",
)  # fmt: skip
_SYMMETRIC = frozenset(SYMMETRIC_RELATIONS)


def _builder(
    own: str,
) -> Callable[[Any, str | None, int], tuple[list[ChoiceExample], list[SkippedImage]]]:
    """The examples of split ``own`` (the only split the task reads), photos checked."""

    def build(
        dataset: Any, split: str | None, seed: int
    ) -> tuple[list[ChoiceExample], list[SkippedImage]]:
        del seed  # nothing random
        if split not in (None, own):
            raise DatasetError(f"ARO VG-{own.title()} reads split {own!r}, not {split!r}")
        before = len(dataset.skipped)
        examples = [
            ChoiceExample(
                id=item.key,
                image=item.image,
                region=Region(str(Path(item.path).absolute()), item.box),
                options=(item.false_caption, item.true_caption),
                answer=1,
                group=item.group,
                meta={"index": item.index},
            )
            for item in dataset.items(own, check_photos=True)
        ]
        return examples, list(dataset.skipped[before:])

    return build


def group_accuracies(correct: np.ndarray, groups: Sequence[str]) -> dict[str, tuple[float, int]]:
    """``{group: (accuracy, count)}`` sorted by name (ARO's ``np.unique`` loop)."""
    labels = np.asarray(groups, dtype=object)
    out: dict[str, tuple[float, int]] = {}
    for group in sorted(set(groups)):
        mask = labels == group
        out[group] = (float(np.mean(correct[mask])), int(mask.sum()))
    return out


def macro_metrics(
    correct: np.ndarray, groups: Sequence[str], used: Callable[[str, int], bool]
) -> dict[str, Any]:
    """The unweighted mean over the groups ``used(group, count)`` keeps, and the module doc's
    other keys."""
    per_group = group_accuracies(np.asarray(correct, dtype=bool), groups)
    kept = {g: acc for g, (acc, count) in per_group.items() if used(g, count)}
    return {
        "macro_accuracy": float(np.mean(list(kept.values()))) if kept else None,
        "accuracy": float(np.mean(correct)) if len(correct) else None,
        "groups": len(kept),
        "groups_dropped": len(per_group) - len(kept),
        "n_macro": sum(per_group[g][1] for g in kept),
        "by_group": {
            g: {"accuracy": acc, "n": count, "used": g in kept}
            for g, (acc, count) in per_group.items()
        },
    }


def relation_metrics(correct: np.ndarray, examples: Sequence[ChoiceExample]) -> dict[str, Any]:
    """VG-Relation: macro accuracy over relations not in `SYMMETRIC_RELATIONS`."""
    out = macro_metrics(correct, [ex.group for ex in examples], lambda g, n: g not in _SYMMETRIC)
    if out["macro_accuracy"] is None:
        out["note"] = "no example has a non-symmetric relation: no macro accuracy"
    return out


def attribution_metrics(correct: np.ndarray, examples: Sequence[ChoiceExample]) -> dict[str, Any]:
    """VG-Attribution: macro accuracy over attribute pairs with at least 25 examples."""
    out = macro_metrics(
        correct, [ex.group for ex in examples], lambda g, n: n >= MIN_ATTRIBUTE_COUNT
    )
    if out["macro_accuracy"] is None:
        out["note"] = (
            f"no attribute pair has {MIN_ATTRIBUTE_COUNT} or more examples: no macro accuracy "
            "(the DCI reference's run_aro.py crashes here)"
        )
    return out


# The macro accuracy over groups (no per-example column: it weighs groups, not examples), then
# the plain accuracy the examples' ``accuracy_correct`` holds.
VG_METRICS: tuple[MetricSpec, ...] = (MetricSpec("macro_accuracy"), outcome_metric("accuracy"))

VG_RELATION = ChoiceTask(
    name="aro/vg_relation",
    protocol=PROTOCOL,
    description=(
        "ARO VG-Relation (DCI protocol): [false, true] caption of a crop, argmax; macro "
        "accuracy over relations, symmetric ones dropped"
    ),
    dataset="aro-vg",
    build=_builder("relation"),
    rule="first",
    aggregate=relation_metrics,
    default_split="relation",
    metrics=VG_METRICS,
)

VG_ATTRIBUTION = ChoiceTask(
    name="aro/vg_attribution",
    protocol=PROTOCOL,
    description=(
        "ARO VG-Attribution (DCI protocol): [false, true] caption of a crop, argmax; macro "
        "accuracy over ordered attribute pairs with at least 25 examples"
    ),
    dataset="aro-vg",
    build=_builder("attribution"),
    rule="first",
    aggregate=attribution_metrics,
    default_split="attribution",
    metrics=VG_METRICS,
)
