"""DOCCI's tasks: long-caption retrieval as the peers evaluate it, and generated negatives.

Each retrieval task reproduces one peer's protocol exactly (docs/protocols/longcap.md): which
records, which text and which text rule (`densecap_eval.tasks.retrieval.TEXT_RULES`); the
negatives task is tasks/negatives.py over the same texts.
"""

from __future__ import annotations

from densecap_eval.tasks.negatives import NegativesTask
from densecap_eval.tasks.retrieval import RetrievalTask

RETRIEVAL = RetrievalTask(
    "docci/retrieval",
    "docci-test",
    "DOCCI test split (5,000 images), the description unchanged, R@1/5/10 both ways",
    dataset="docci",
    default_split="test",
    text_rule="raw",
)

NEGATIVES = NegativesTask(
    "docci/negatives",
    "generated",
    "generated negatives (colour, number, spatial, object, binding) of DOCCI's descriptions",
    dataset="docci",
    default_split="test",
)
