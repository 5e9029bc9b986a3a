"""Token-length buckets, and where (at which token) a negative first differs from its positive.

The position is the 0-based index, in the model's own tokenisation of the positive (start token
included where the model has one), of the first token that differs between positive and
negative. A model whose context keeps tokens ``0 .. L-1`` cannot see a difference at ``>= L``.

Two ways to compute it, chosen from what the scorer offers (`diff_position_fn`):
- ``token_ids``: the scorer's ``tokenize_ids(texts) -> list[list[int]]`` (untruncated ids);
  the position is the length of the common id prefix. Exact.
- ``word_prefix``: only ``count_tokens`` is available. The texts' common prefix of
  whitespace-separated words is tokenised and counted; the position is its token count minus
  the trailing special tokens. Exact for CLIP's BPE, which never merges across spaces, except
  that punctuation glued to a word that differs only in the punctuation is attributed to the
  word's first token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LENGTH_EDGES: tuple[int, ...] = (77, 154, 248)
LENGTH_BUCKETS: tuple[str, ...] = ("<=77", "78-154", "155-248", ">248")
POSITION_EDGES: tuple[int, ...] = (19, 39, 59, 76)
POSITION_BUCKETS: tuple[str, ...] = ("0-19", "20-39", "40-59", "60-76", "77+")

DiffPositionFn = Callable[[Sequence[tuple[str, str]]], list[int | None]]


def _bucket(value: int, edges: Sequence[int], labels: Sequence[str]) -> str:
    for edge, label in zip(edges, labels, strict=False):
        if value <= edge:
            return label
    return labels[-1]


def length_bucket(n_tokens: int) -> str:
    """``<=77``, ``78-154``, ``155-248`` or ``>248`` for an untruncated token count."""
    return _bucket(int(n_tokens), LENGTH_EDGES, LENGTH_BUCKETS)


def position_bucket(position: int | None) -> str | None:
    """``0-19`` ... ``60-76``, ``77+``; None when the texts do not differ."""
    if position is None:
        return None
    return _bucket(int(position), POSITION_EDGES, POSITION_BUCKETS)


def common_prefix_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def first_diff_position(pos_ids: Sequence[int], neg_ids: Sequence[int]) -> int | None:
    """Index of the first differing token id; None when the id sequences are equal."""
    if list(pos_ids) == list(neg_ids):
        return None
    return common_prefix_length(pos_ids, neg_ids)


def diff_positions_by_ids(
    pairs: Sequence[tuple[str, str]], tokenize_ids: Callable[[list[str]], list[list[int]]]
) -> list[int | None]:
    texts = sorted({t for pair in pairs for t in pair})
    ids = dict(zip(texts, tokenize_ids(texts), strict=True))
    return [first_diff_position(ids[p], ids[n]) for p, n in pairs]


def diff_positions_by_words(
    pairs: Sequence[tuple[str, str]], count_tokens: Callable[[list[str]], list[int]]
) -> list[int | None]:
    """The ``word_prefix`` method (module doc): one ``count_tokens`` call for all prefixes."""
    empty = count_tokens([""])[0]  # the special tokens alone (start + end for CLIP)
    trailing = 1 if empty >= 1 else 0  # an end token follows the text; any rest leads it
    prefixes: list[str] = []
    for pos, neg in pairs:
        pw, nw = pos.split(), neg.split()
        prefixes.append(" ".join(pw[: common_prefix_length(pw, nw)]))
    counts = dict(zip(sorted(set(prefixes)), count_tokens(sorted(set(prefixes))), strict=True))
    out: list[int | None] = []
    for (pos, neg), prefix in zip(pairs, prefixes, strict=True):
        out.append(None if pos.split() == neg.split() else counts[prefix] - trailing)
    return out


def diff_position_fn(scorer: Any) -> tuple[DiffPositionFn, str]:
    """(function, method name) computing first-difference positions with ``scorer``'s tokenizer."""
    tokenize_ids = getattr(scorer, "tokenize_ids", None)
    if callable(tokenize_ids):
        return (lambda pairs: diff_positions_by_ids(pairs, tokenize_ids)), "token_ids"
    count_tokens = scorer.count_tokens
    return (lambda pairs: diff_positions_by_words(pairs, count_tokens)), "word_prefix"
