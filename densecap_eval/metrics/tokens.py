"""Untruncated token counts with the OpenAI CLIP tokenizer that open_clip ships.

open_clip's `SimpleTokenizer` reads its bundled BPE vocabulary, so counting works offline. A
count includes the start and end tokens, so a text fits a 77-token context when its count is at
most 77.

Importing the ``open_clip`` package loads every model family it knows (about 250 MB more
resident memory than its tokenizer module needs), so when nothing has imported open_clip yet the
tokenizer module is loaded on its own from open_clip's installed files; the class and vocabulary
are open_clip's either way.
"""

from __future__ import annotations

import functools
import importlib.util
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CLIP_CONTEXT_LENGTH = 77
TOKENIZER_NAME = "open_clip SimpleTokenizer (OpenAI CLIP BPE, lower-cased, ftfy-cleaned)"


@functools.cache
def _clip_tokenizer() -> Any:
    # One instance per process: building it parses the 49k-merge BPE file (~0.3 s), and its
    # word cache makes every later text with known words cheap.
    return _simple_tokenizer_class()()


def _simple_tokenizer_class() -> Any:
    """open_clip's SimpleTokenizer, without importing the whole open_clip package if possible."""
    if "open_clip" not in sys.modules:
        spec = importlib.util.find_spec("open_clip")
        locations = list(spec.submodule_search_locations or []) if spec else []
        for location in locations:
            module_spec = importlib.util.spec_from_file_location(
                "densecap_eval._open_clip_tokenizer", f"{location}/tokenizer.py"
            )
            if module_spec is None or module_spec.loader is None:
                continue
            module = importlib.util.module_from_spec(module_spec)
            try:
                module_spec.loader.exec_module(module)
            except (ImportError, OSError):  # moved, or now with package-relative imports
                break
            return module.SimpleTokenizer
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer


def clip_token_counts(texts: Iterable[str]) -> list[int]:
    """Token count of each text, start and end tokens included, never truncated.

    Equal to ``len(SimpleTokenizer().encode(text)) + 2``, computed with the tokenizer's own
    cleaning, pre-tokenizing pattern and BPE, but counting BPE pieces per word once instead of
    looking up every id (DCI's long captions run to thousands of tokens).
    """
    count = _word_counter()
    return [count(text) + 2 for text in texts]


@functools.cache
def _word_counter() -> Callable[[str], int]:
    tokenizer = _clip_tokenizer()
    clean, pattern, bpe = tokenizer.clean_fn, tokenizer.pat, tokenizer.bpe
    byte_encoder = tokenizer.byte_encoder
    pieces: dict[str, int] = {}  # pre-token -> number of BPE pieces (ids) it encodes to

    def count(text: str) -> int:
        total = 0
        for word in pattern.findall(clean(text)):
            n = pieces.get(word)
            if n is None:
                n = len(bpe("".join(byte_encoder[b] for b in word.encode("utf-8"))).split(" "))
                pieces[word] = n
            total += n
        return total

    return count


def token_stats(counts: Sequence[int], *, limit: int = CLIP_CONTEXT_LENGTH) -> dict[str, Any]:
    """count, mean, median, p90, max and over_<limit> (share of counts > limit) of ``counts``.

    p90 uses linear interpolation between order statistics (numpy's default percentile).
    With no counts every statistic but ``count`` is None.
    """
    over_key = f"over_{limit}"
    n = len(counts)
    if n == 0:
        return {"count": 0, "mean": None, "median": None, "p90": None, "max": None, over_key: None}
    ordered = sorted(counts)
    return {
        "count": n,
        "mean": sum(ordered) / n,
        "median": float(statistics.median(ordered)),
        "p90": _percentile(ordered, 90.0),
        "max": ordered[-1],
        over_key: sum(1 for c in ordered if c > limit) / n,
    }


def _percentile(ordered: Sequence[int], q: float) -> float:
    """numpy.percentile(..., method="linear") on sorted data, without building an array."""
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
