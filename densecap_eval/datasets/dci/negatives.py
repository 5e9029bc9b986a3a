"""Choose one negative for an entry (docs/protocols/dci.md, "Negative selection").

Candidates of source ``swaps``/``layout``/``basic`` are that kind's list, keyed ``{kind}_{i}``;
``any`` concatenates every kind's list in the record's key order. Strategies: ``first`` (element
0), ``rand`` (a choice from the caller's seeded `random.Random`), ``hardest`` (the highest
``clip_scores`` value; on ties the last candidate wins, as the reference's stable ascending sort
followed by taking the last element does).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from densecap_eval.core.errors import DensecapError

SOURCES: tuple[str, ...] = ("swaps", "layout", "basic", "any")
STRATEGIES: tuple[str, ...] = ("first", "rand", "hardest")


class NegativeError(DensecapError):
    """An entry's negatives cannot give a candidate (the reference raises and drops the image)."""


def candidates(negatives: Mapping[str, Sequence[str]], source: str) -> list[tuple[str, str]]:
    """(text, key) candidates of ``source`` in order; raises NegativeError if the kind is absent."""
    if source not in SOURCES:
        raise ValueError(f"unknown negative source {source!r} (known: {', '.join(SOURCES)})")
    kinds = list(negatives) if source == "any" else [source]
    found: list[tuple[str, str]] = []
    for kind in kinds:
        if kind not in negatives:
            raise NegativeError(f"no {kind!r} negatives")
        found += [(text, f"{kind}_{i}") for i, text in enumerate(negatives[kind])]
    return found


def select_negative(
    negatives: Mapping[str, Sequence[str]],
    source: str,
    strategy: str,
    *,
    clip_scores: Mapping[str, float] | None,
    rng: random.Random | None,
) -> tuple[str, str]:
    """One negative as (text, key such as ``"swaps_0"``); raises NegativeError when none can be had."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown negative strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    cands = candidates(negatives, source)
    if not cands:
        raise NegativeError(f"no {source!r} negatives to choose from (empty list)")
    if strategy == "first":
        return cands[0]
    if strategy == "rand":
        if rng is None:
            raise ValueError("strategy 'rand' needs a seeded random.Random (rng=...)")
        return rng.choice(cands)
    if clip_scores is None:
        raise NegativeError("strategy 'hardest' needs clip_scores")
    missing = [key for _, key in cands if key not in clip_scores]
    if missing:
        raise NegativeError(f"no clip_scores for {', '.join(missing)}")
    # Stable ascending sort, take the last: the reference's tie rule (last candidate wins).
    order = sorted(range(len(cands)), key=lambda i: clip_scores[cands[i][1]])
    return cands[order[-1]]
