"""Urban1k's tasks: long-caption retrieval as the peers evaluate it, and generated negatives.

Each retrieval task reproduces one peer's protocol exactly (docs/protocols/longcap.md): which
records, which text and which text rule (`densecap_eval.tasks.retrieval.TEXT_RULES`); the
negatives task is tasks/negatives.py over the same texts.
"""

from __future__ import annotations

from densecap_eval.tasks.negatives import NegativesTask
from densecap_eval.tasks.retrieval import RetrievalTask

RETRIEVAL = RetrievalTask(
    "urban1k/retrieval",
    "long-clip",
    "Urban1k as Long-CLIP evaluates it: the first line of each caption file, unchanged",
    dataset="urban1k",
    text_rule="first-line",
)

RETRIEVAL_LOTLIP = RetrievalTask(
    "urban1k/retrieval-lotlip",
    "lotlip",
    "Urban1k as LoTLIP evaluates it: the first line of each caption file, split/rejoined",
    dataset="urban1k",
    text_rule="first-line-lotlip",
)

NEGATIVES = NegativesTask(
    "urban1k/negatives",
    "generated",
    "generated negatives of Urban1k's captions (the first line, as Long-CLIP reads them)",
    dataset="urban1k",
    text_rule="first-line",
)
