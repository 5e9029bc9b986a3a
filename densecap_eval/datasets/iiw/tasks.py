"""ImageInWords's tasks: long-caption retrieval as the peers evaluate it, and generated negatives.

Each retrieval task reproduces one peer's protocol exactly (docs/protocols/longcap.md): which
records, which text and which text rule (`densecap_eval.tasks.retrieval.TEXT_RULES`); the
negatives task is tasks/negatives.py over the same texts.
"""

from __future__ import annotations

from densecap_eval.tasks.negatives import NegativesTask
from densecap_eval.tasks.retrieval import RetrievalTask

RETRIEVAL = RetrievalTask(
    "iiw/retrieval",
    "lotlip-iiw",
    "ImageInWords: the 612-image pool (DOCCI_Test, IIW-400, DCI_Test), LoTLIP split/rejoin",
    dataset="iiw",
    text_rule="lotlip",
)

NEGATIVES = NegativesTask(
    "iiw/negatives",
    "generated",
    "generated negatives of IIW's descriptions (LoTLIP's text rule)",
    dataset="iiw",
    text_rule="lotlip",
)
