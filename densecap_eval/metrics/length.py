"""Length buckets counted with one reference tokenizer, and where a negative first differs
from its positive, relative to the model's own visible window.

**Length** (``by_length``): every model's examples are bucketed by the SAME count, the
untruncated OpenAI CLIP BPE count (open_clip's `SimpleTokenizer`, start and end tokens
included; `densecap_eval.metrics.tokens`), named ``openai-clip-bpe`` in metrics.json
(``length_reference``). Buckets ``<=77``, ``78-154``, ``155-248``, ``>248``, so a CLIP, a
SigLIP and a VLM are compared on the same texts in each bucket. The model's own counts (and
its limit, ``model_max_text_tokens``) stay beside it: the examples keep them per text.

**First-difference position**: the 0-based index, in the model's own untruncated tokenisation
of the positive (leading special tokens included), of the first token that differs between
positive and negative. Bucketed against the model's window (`PositionWindow`): with a limit of
``L`` tokens of which ``e`` trailing slots hold end tokens (``e = 1`` for CLIP, SigLIP and BERT
tokenizers: truncation keeps positions ``0 .. L-2`` and writes the end token into slot
``L-1``; ``e = 0`` for a VLM's prompt text, cut to its first ``L`` tokens), the last position
the model sees is ``V = L - 1 - e`` (75 for CLIP's 77: a difference at 76 is hidden).

- ``inside``: ``0 .. V-5``; the model sees the difference and at least 5 tokens after it.
- ``edge``: ``V-4 .. V``, the last `EDGE_TOKENS` = 5 visible positions: the difference is
  seen, but a multi-token swap or its right-hand context may be cut off (and the
  ``word_prefix`` method attributes a difference to its word's first token).
- ``beyond``: ``V+1 ..``: truncation (text policy ``truncate``) hides it; the two texts encode
  identically, so Neg is a tie at best. Under ``error`` a text this long raises, so it is empty.
- ``later_chunk`` replaces ``beyond`` under ``chunk-mean``: nothing is hidden, the difference
  lies in a later chunk and reaches the embedding only through the mean over chunks. Chunks end
  at sentences, so the first chunk may end before ``V``; positions are still measured against
  the first ``L``-token window.
- ``identical``: the two texts tokenise the same; ``unknown``: the caller gave no limit.

The bucket edges, in absolute tokens for the model, go into metrics.json
(``diff_position_buckets``); the raw position stays in the examples (``diff_position``).

Two ways to compute the position, chosen from what the scorer offers (`diff_position_fn`):
- ``token_ids``: the scorer's ``tokenize_ids(texts) -> list[list[int]]`` (untruncated ids);
  the position is the length of the common id prefix. Exact.
- ``word_prefix``: only ``count_tokens`` is available. The texts' common prefix of
  whitespace-separated words is tokenised and counted; the position is its token count minus
  the trailing special tokens. Exact for CLIP's BPE, which never merges across spaces, except
  that punctuation glued to a word that differs only in the punctuation is attributed to the
  word's first token.

Either way the returned `DiffPositions` says how many end tokens the tokenizer appends
(``end_tokens``), which is ``e`` above.

``POSITION_BUCKETS`` / `position_bucket` are the absolute buckets of runs written before the
window buckets (``0-19`` ... ``60-76``, ``77+``); kept so old runs can still be read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

LENGTH_REFERENCE_TOKENIZER = "openai-clip-bpe"
LENGTH_EDGES: tuple[int, ...] = (77, 154, 248)
LENGTH_BUCKETS: tuple[str, ...] = ("<=77", "78-154", "155-248", ">248")
# Legacy absolute position buckets (runs before the window buckets).
POSITION_EDGES: tuple[int, ...] = (19, 39, 59, 76)
POSITION_BUCKETS: tuple[str, ...] = ("0-19", "20-39", "40-59", "60-76", "77+")

INSIDE, EDGE, BEYOND, LATER_CHUNK = "inside", "edge", "beyond", "later_chunk"
IDENTICAL, UNKNOWN = "identical", "unknown"
# Every window bucket label, in display order (a run has inside, edge and one of the next two).
WINDOW_BUCKETS: tuple[str, ...] = (INSIDE, EDGE, BEYOND, LATER_CHUNK)
EDGE_TOKENS = 5  # the last visible positions that make up ``edge``
DEFAULT_END_TOKENS = 1  # CLIP-style: truncation writes the end token into the last slot
_REFERENCE_CACHE = 1 << 17  # texts whose reference count is remembered

DiffPositionFn = Callable[[Sequence[tuple[str, str]]], list[int | None]]


def _bucket(value: int, edges: Sequence[int], labels: Sequence[str]) -> str:
    for edge, label in zip(edges, labels, strict=False):
        if value <= edge:
            return label
    return labels[-1]


def length_bucket(n_tokens: int) -> str:
    """``<=77``, ``78-154``, ``155-248`` or ``>248`` for an untruncated token count."""
    return _bucket(int(n_tokens), LENGTH_EDGES, LENGTH_BUCKETS)


def length_reference() -> dict[str, Any]:
    """What ``by_length`` counts with, for metrics.json (``length_reference``)."""
    return {
        "tokenizer": LENGTH_REFERENCE_TOKENIZER,
        "edges": list(LENGTH_EDGES),
        "buckets": list(LENGTH_BUCKETS),
    }


def reference_token_counts(texts: Iterable[str]) -> list[int]:
    """Untruncated CLIP BPE count of each text (start and end tokens included).

    Memoised per text (the DCI subtests share their captions, and a retrieval gallery text can
    run to thousands of tokens), on top of the tokenizer's own per-word memo.
    """
    return [_reference_count(text) for text in texts]


@functools.lru_cache(maxsize=_REFERENCE_CACHE)
def _reference_count(text: str) -> int:
    from densecap_eval.metrics.tokens import clip_token_counts

    return clip_token_counts([text])[0]


def position_bucket(position: int | None) -> str | None:
    """Legacy absolute bucket ``0-19`` ... ``60-76``, ``77+``; None when the texts do not differ.

    Kept to read runs written before `PositionWindow`; ``60-76`` wrongly holds CLIP's hidden 76.
    """
    if position is None:
        return None
    return _bucket(int(position), POSITION_EDGES, POSITION_BUCKETS)


@dataclass(frozen=True)
class PositionWindow:
    """The first-difference buckets of one model (module doc): limit, end tokens, text policy."""

    max_text_tokens: int
    end_tokens: int = DEFAULT_END_TOKENS
    text_policy: str = "truncate"
    edge_tokens: int = EDGE_TOKENS

    @property
    def last_visible(self) -> int:
        """``V = L - 1 - e``: the last position of the untruncated ids the model sees."""
        return self.max_text_tokens - 1 - self.end_tokens

    @property
    def outside_label(self) -> str:
        """``later_chunk`` under chunk-mean (seen through a later chunk), else ``beyond``."""
        return LATER_CHUNK if self.text_policy == "chunk-mean" else BEYOND

    @property
    def labels(self) -> tuple[str, str, str]:
        return (INSIDE, EDGE, self.outside_label)

    def bucket(self, position: int) -> str:
        last = self.last_visible
        if position > last:
            return self.outside_label
        return EDGE if position > last - self.edge_tokens else INSIDE

    def edges(self) -> dict[str, list[int | None] | None]:
        """``{label: [first, last]}`` in absolute positions; ``last`` None: open-ended; a bucket
        no position can fall in (a tiny limit) is None."""
        last = self.last_visible
        inside_last = last - self.edge_tokens
        return {
            INSIDE: [0, inside_last] if inside_last >= 0 else None,
            EDGE: [max(0, inside_last + 1), last] if last >= 0 else None,
            self.outside_label: [max(0, last + 1), None],
        }


def position_labels(
    positions: Sequence[int | None], window: PositionWindow | None
) -> tuple[list[str], list[str]]:
    """(bucket of each position, the buckets to report in order) for ``by_diff_position``.

    None positions (texts that tokenise alike) are ``identical``; without a window (no limit
    given) every other position is ``unknown``. ``identical`` is listed only when it occurs.
    """
    labels = [
        IDENTICAL if p is None else (window.bucket(int(p)) if window is not None else UNKNOWN)
        for p in positions
    ]
    order = list(window.labels) if window is not None else [UNKNOWN]
    if IDENTICAL in labels:
        order.append(IDENTICAL)
    return labels, order


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


def trailing_special_tokens(count_tokens: Callable[[list[str]], list[int]]) -> int:
    """End tokens a ``count_tokens`` tokenizer appends: 1 when it counts any special token."""
    return 1 if count_tokens([""])[0] >= 1 else 0  # an end token follows the text; any rest leads


def trailing_special_ids(tokenize_ids: Callable[[list[str]], list[list[int]]]) -> int:
    """End tokens a ``tokenize_ids`` tokenizer appends: the common suffix of ``""`` and ``"a"``."""
    empty, word = tokenize_ids(["", "a"])
    return common_prefix_length(list(reversed(empty)), list(reversed(word)))


def diff_positions_by_words(
    pairs: Sequence[tuple[str, str]], count_tokens: Callable[[list[str]], list[int]]
) -> list[int | None]:
    """The ``word_prefix`` method (module doc): one ``count_tokens`` call for all prefixes."""
    trailing = trailing_special_tokens(count_tokens)
    prefixes: list[str] = []
    for pos, neg in pairs:
        pw, nw = pos.split(), neg.split()
        prefixes.append(" ".join(pw[: common_prefix_length(pw, nw)]))
    counts = dict(zip(sorted(set(prefixes)), count_tokens(sorted(set(prefixes))), strict=True))
    out: list[int | None] = []
    for (pos, neg), prefix in zip(pairs, prefixes, strict=True):
        out.append(None if pos.split() == neg.split() else counts[prefix] - trailing)
    return out


class DiffPositions:
    """A `DiffPositionFn` that also knows its tokenizer's end tokens (``end_tokens``, lazily).

    ``end_tokens`` is the ``e`` of the module doc; tasks read it with
    ``getattr(fn, "end_tokens", DEFAULT_END_TOKENS)``, so a plain function works too.
    """

    def __init__(
        self,
        positions: DiffPositionFn,
        method: str,
        end_tokens: Callable[[], int] | int = DEFAULT_END_TOKENS,
    ) -> None:
        self._positions = positions
        self.method = method
        self._end_tokens = end_tokens

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[int | None]:
        return self._positions(pairs)

    @functools.cached_property
    def end_tokens(self) -> int:
        value = self._end_tokens
        return int(value() if callable(value) else value)


class CountsTokens(Protocol):
    """What every scorer offers (`densecap_eval.scorers.base.Scorer.count_tokens`)."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@runtime_checkable
class TokenizesIds(Protocol):
    """A scorer that gives its untruncated token ids (open_clip, TULIP, LoTLIP, ...)."""

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]: ...


def diff_position_fn(scorer: CountsTokens | TokenizesIds) -> tuple[DiffPositions, str]:
    """(function, method name) computing first-difference positions with ``scorer``'s tokenizer."""
    if isinstance(scorer, TokenizesIds):
        tokenize_ids = scorer.tokenize_ids
        return DiffPositions(
            lambda pairs: diff_positions_by_ids(pairs, tokenize_ids),
            "token_ids",
            lambda: trailing_special_ids(tokenize_ids),
        ), "token_ids"
    count_tokens = scorer.count_tokens
    return DiffPositions(
        lambda pairs: diff_positions_by_words(pairs, count_tokens),
        "word_prefix",
        lambda: trailing_special_tokens(count_tokens),
    ), "word_prefix"
