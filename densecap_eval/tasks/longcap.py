"""The long-caption retrieval protocols the field reports beside DCI, as named tasks.

Each reproduces one peer's protocol exactly (shared LONGCAP_REFERENCE.md): which records, which
text and which text rule (`densecap_eval.tasks.retrieval.TEXT_RULES`). The loaders give each
record's text as the release stores it (description kind ``caption``), so the rule is the only
place a protocol touches the text.
"""

from __future__ import annotations

from densecap_eval.tasks.retrieval import RetrievalTask

DOCCI_RETRIEVAL = RetrievalTask(
    "docci/retrieval",
    "docci-test",
    "DOCCI test split (5,000 images), the description unchanged, R@1/5/10 both ways",
    dataset="docci",
    default_split="test",
    text_rule="raw",
)
IIW_RETRIEVAL = RetrievalTask(
    "iiw/retrieval",
    "lotlip-iiw",
    "ImageInWords: the 612-image pool (DOCCI_Test, IIW-400, DCI_Test), LoTLIP split/rejoin",
    dataset="iiw",
    text_rule="lotlip",
)
URBAN1K_RETRIEVAL = RetrievalTask(
    "urban1k/retrieval",
    "long-clip",
    "Urban1k as Long-CLIP evaluates it: the first line of each caption file, unchanged",
    dataset="urban1k",
    text_rule="first-line",
)
URBAN1K_RETRIEVAL_LOTLIP = RetrievalTask(
    "urban1k/retrieval-lotlip",
    "lotlip",
    "Urban1k as LoTLIP evaluates it: the first line of each caption file, split/rejoined",
    dataset="urban1k",
    text_rule="first-line-lotlip",
)
SHAREGPT4V_RETRIEVAL_1K = RetrievalTask(
    "sharegpt4v/retrieval-1k",
    "long-clip-1k",
    "ShareGPT4V as Long-CLIP evaluates it: the first 1,000 share-captioner records, newlines "
    "as spaces",
    dataset="sharegpt4v",
    default_split="share-captioner",
    text_rule="newline-to-space",
    limit=1000,
)
SHAREGPT4V_RETRIEVAL_LOTLIP_1K = RetrievalTask(
    "sharegpt4v/retrieval-lotlip-1k",
    "lotlip-1k",
    "ShareGPT4V as LoTLIP evaluates it: the first 1,000 records of share4v_sam_10k.json, "
    "split/rejoined",
    dataset="sharegpt4v",
    default_split="sam-10k",
    text_rule="lotlip",
    limit=1000,
)
SHAREGPT4V_RETRIEVAL_LOTLIP_10K = RetrievalTask(
    "sharegpt4v/retrieval-lotlip-10k",
    "lotlip-10k",
    "ShareGPT4V as LoTLIP evaluates it: all 10,000 records of share4v_sam_10k.json, split/rejoined",
    dataset="sharegpt4v",
    default_split="sam-10k",
    text_rule="lotlip",
    limit=10000,
)
