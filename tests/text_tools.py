"""Stand-ins for ARO's spaCy tagger and NLTK tokenizer: a small dictionary tagger and a regex
tokenizer, registered as the ARO order text tools ``test-fake`` (point
``order_tasks.DEFAULT_TEXT_TOOLS`` at it to run the order tasks without spaCy or NLTK)."""

from __future__ import annotations

import re

from densecap_eval.datasets.aro import order_tasks as aro_order
from densecap_eval.datasets.aro.order_tasks import TextTools

FAKE_TEXT_TOOLS = "test-fake"

_WORD = re.compile(r"\w+|[^\w\s]")
_TAGS = {
    "dog": "NN", "cat": "NN", "car": "NN", "frisbee": "NN", "park": "NN", "man": "NN",
    "horse": "NN", "beach": "NN", "dogs": "NNS", "bikes": "NNS", "bob": "NNP",
    "big": "JJ", "small": "JJ", "red": "JJ", "white": "JJ", "brown": "JJ", "bigger": "JJR",
    "the": "DT", "a": "DT", "near": "IN", "on": "IN", "with": "IN", "chased": "VBD",
    "rides": "VBZ", "catches": "VBZ", ".": ".", ",": ",",
}  # fmt: skip


def fake_tokenizer(text: str) -> list[str]:
    """Whitespace and punctuation: words and each punctuation mark are tokens."""
    return _WORD.findall(text)


def fake_tagger(text: str) -> list[tuple[str, str]]:
    return [(t, _TAGS.get(t.lower(), "XX")) for t in fake_tokenizer(text)]


def fake_tools() -> TextTools:
    return TextTools("fake-tagger 1.0", "fake-tokenizer 1.0", lambda: (fake_tagger, fake_tokenizer))


if FAKE_TEXT_TOOLS not in aro_order.TEXT_TOOLS.names():
    aro_order.TEXT_TOOLS.register(FAKE_TEXT_TOOLS, fake_tools)
