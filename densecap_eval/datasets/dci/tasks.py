"""DCI's tasks: the four reference subtests (the ``dci`` suite) and two retrieval protocols.

The task families live in ``densecap_eval.tasks`` (datasets/dci/subtests.py: the subtests' SCM/Neg;
tasks/retrieval.py: R@1/5/10 both ways); this module only names DCI's instances of them.
"""

from __future__ import annotations

from densecap_eval.datasets.dci.records import SUBTESTS
from densecap_eval.datasets.dci.subtests import DCISubtestTask
from densecap_eval.tasks.base import TaskSuite
from densecap_eval.tasks.retrieval import RetrievalTask

_DESCRIPTIONS = {
    "all_swaps": "base + subcrops, first 'swaps' negative, first summary (reference subtest)",
    "all_swaps_pick5": "entries with >= 5 summaries, bag of the first 5, first 'swaps' negative",
    "base_swaps": "whole photos only, first 'swaps' negative, first summary",
    "all_hardest": "base + subcrops, hardest negative of any kind by clip_scores",
}


def _subtest(key: str) -> DCISubtestTask:
    return DCISubtestTask(f"dci/{key}", SUBTESTS[key], _DESCRIPTIONS[key])


ALL_SWAPS = _subtest("all_swaps")
ALL_SWAPS_PICK5 = _subtest("all_swaps_pick5")
BASE_SWAPS = _subtest("base_swaps")
ALL_HARDEST = _subtest("all_hardest")
SUITE = TaskSuite(
    "dci",
    tuple(t.name for t in (ALL_SWAPS, ALL_SWAPS_PICK5, BASE_SWAPS, ALL_HARDEST)),
    "dci",
    "the four DCI reference subtests (All, Pick5, Base, Hardest)",
)


RETRIEVAL = RetrievalTask(
    "dci/retrieval",
    "lotlip",
    "LoTLIP long-caption retrieval: every photo, short + extra caption, R@1/5/10 both ways",
    dataset="dci",
    text_kind="caption",
    text_rule="lotlip",
)
RETRIEVAL_FULL = RetrievalTask(
    "dci/retrieval-full",
    "dci-full",
    "retrieval with the full DCI description (captions of every mask included)",
    dataset="dci",
    text_kind="full",
    text_rule="raw",
)
