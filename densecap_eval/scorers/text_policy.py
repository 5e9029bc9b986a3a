"""Token budgets: what a text policy does to texts longer than a model's limit.

Shared by every backend. A backend supplies ``count`` (exact, untruncated token counts with the
model's own tokenizer, special tokens included) and its limit; `plan_texts` turns the texts
into *pieces* to encode with the library's own truncating tokenizer, and `pool_pieces` turns
the piece embeddings back into one embedding per text.

- ``truncate``: one piece per text; the library truncates (cut = over the limit).
- ``chunk-mean``: a text within the limit is one piece (so its embedding is exactly the
  ``truncate`` one); a longer text is split into sentence-aligned chunks that each fit (greedy
  packing; a sentence that alone is too long is split between words), the normalised chunk
  embeddings are averaged and re-normalised. Cut only when a single word did not fit.
- ``error``: like ``truncate`` but a text over the limit raises `TextTooLongError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from densecap_eval.core.config import TEXT_POLICIES, TextPolicy
from densecap_eval.core.errors import TextTooLongError, UnknownNameError

if TYPE_CHECKING:
    import torch

CountFn = Callable[[Sequence[str]], list[int]]

# A sentence ends at . ! or ? followed by white space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


@dataclass(frozen=True)
class TextPlan:
    """Pieces to encode for a list of texts, and what the policy did to each text."""

    pieces: list[str]
    owners: list[int]  # owners[j] = index of the text that pieces[j] belongs to
    n_tokens: list[int]  # untruncated count of each text
    cut: list[bool]  # whether any of the text's tokens were dropped


def check_policy(policy: str) -> TextPolicy:
    if policy not in TEXT_POLICIES:
        raise UnknownNameError(
            f"unknown text policy {policy!r} (known: {', '.join(TEXT_POLICIES)})"
        )
    return policy  # type: ignore[return-value]


def plan_texts(
    texts: Sequence[str], *, policy: TextPolicy, limit: int, count: CountFn, model: str
) -> TextPlan:
    """Apply ``policy`` with a ``limit``-token budget; ``model`` names the model in errors."""
    check_policy(policy)
    texts = list(texts)
    n_tokens = count(texts) if texts else []
    if policy == "error":
        for text, n in zip(texts, n_tokens, strict=True):
            if n > limit:
                raise TextTooLongError(
                    f"{model}: text {_first_words(text)!r} has {n} tokens, over the model's "
                    f"limit of {limit} (text policy 'error'; use 'truncate' or 'chunk-mean')"
                )
    if policy != "chunk-mean":
        return TextPlan(
            pieces=texts,
            owners=list(range(len(texts))),
            n_tokens=n_tokens,
            cut=[n > limit for n in n_tokens],
        )
    pieces: list[str] = []
    owners: list[int] = []
    cut: list[bool] = []
    for i, (text, n) in enumerate(zip(texts, n_tokens, strict=True)):
        if n <= limit:
            chunks, was_cut = [text], False
        else:
            chunks, was_cut = split_chunks(text, limit=limit, count=count)
        pieces.extend(chunks)
        owners.extend([i] * len(chunks))
        cut.append(was_cut)
    return TextPlan(pieces=pieces, owners=owners, n_tokens=n_tokens, cut=cut)


def split_chunks(text: str, *, limit: int, count: CountFn) -> tuple[list[str], bool]:
    """Greedy sentence-aligned chunks of ``text`` that each fit ``limit`` tokens.

    Returns the chunks and whether one of them (a single over-long word) still does not fit.
    """
    units: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        if not sentence:
            continue
        if _fits(sentence, limit, count):
            units.append(sentence)
        else:
            units.extend(_pack(sentence.split(), limit, count))
    if not units:  # only white space: nothing to split
        return [text], False
    chunks = _pack(units, limit, count)
    cut = any(n > limit for n in count(chunks))
    return chunks, cut


def _pack(units: Sequence[str], limit: int, count: CountFn) -> list[str]:
    """Join consecutive units with spaces while the joined text fits; a unit never splits."""
    chunks: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current} {unit}" if current else unit
        if current and not _fits(candidate, limit, count):
            chunks.append(current)
            current = unit
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def _fits(text: str, limit: int, count: CountFn) -> bool:
    return count([text])[0] <= limit


def _first_words(text: str, n: int = 8) -> str:
    words = text.split()
    head = " ".join(words[:n])
    return head + (" ..." if len(words) > n else "")


def pool_pieces(pieces: torch.Tensor, owners: Sequence[int], n_texts: int) -> torch.Tensor:
    """Mean of each text's normalised piece embeddings, re-normalised (float32).

    A text with a single piece keeps that piece's row unchanged (bit for bit), so ``chunk-mean``
    equals ``truncate`` for texts within the limit.
    """
    import torch
    import torch.nn.functional as F

    if len(owners) == n_texts:  # one piece per text, in order
        return pieces
    index = torch.as_tensor(list(owners), dtype=torch.long)
    sums = torch.zeros((n_texts, pieces.shape[1]), dtype=pieces.dtype)
    sums.index_add_(0, index, pieces)
    counts = torch.bincount(index, minlength=n_texts)
    out = F.normalize(sums / counts.unsqueeze(1).to(pieces.dtype), dim=-1)
    single = (counts == 1).nonzero().flatten()
    if len(single):
        first = {o: j for j, o in reversed(list(enumerate(owners)))}
        out[single] = pieces[[first[int(i)] for i in single]]
    return out
