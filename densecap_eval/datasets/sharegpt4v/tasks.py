"""ShareGPT4V's tasks: long-caption retrieval as the peers evaluate it, and generated negatives.

Each retrieval task reproduces one peer's protocol exactly (docs/protocols/longcap.md): which
records, which text and which text rule (`densecap_eval.tasks.retrieval.TEXT_RULES`); the
negatives task is tasks/negatives.py over the same texts.
"""

from __future__ import annotations

from densecap_eval.tasks.negatives import NegativesTask
from densecap_eval.tasks.retrieval import RetrievalTask

RETRIEVAL_1K = RetrievalTask(
    "sharegpt4v/retrieval-1k",
    "long-clip-1k",
    "ShareGPT4V as Long-CLIP evaluates it: the first 1,000 share-captioner records, newlines "
    "as spaces",
    dataset="sharegpt4v",
    default_split="share-captioner",
    text_rule="newline-to-space",
    limit=1000,
)

RETRIEVAL_LOTLIP_1K = RetrievalTask(
    "sharegpt4v/retrieval-lotlip-1k",
    "lotlip-1k",
    "ShareGPT4V as LoTLIP evaluates it: the first 1,000 records of share4v_sam_10k.json, "
    "split/rejoined",
    dataset="sharegpt4v",
    default_split="sam-10k",
    text_rule="lotlip",
    limit=1000,
)

RETRIEVAL_LOTLIP_10K = RetrievalTask(
    "sharegpt4v/retrieval-lotlip-10k",
    "lotlip-10k",
    "ShareGPT4V as LoTLIP evaluates it: all 10,000 records of share4v_sam_10k.json, split/rejoined",
    dataset="sharegpt4v",
    default_split="sam-10k",
    text_rule="lotlip",
    limit=10000,
)

NEGATIVES = NegativesTask(
    "sharegpt4v/negatives",
    "generated",
    "generated negatives of the first 1,000 ShareGPT4V share-captioner captions",
    dataset="sharegpt4v",
    default_split="share-captioner",
    limit=1000,
    text_rule="newline-to-space",
)
