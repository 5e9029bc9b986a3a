"""Metric blocks several task families share, written once: the plan guard, the bootstrap
interval and the length breakdown."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from densecap_eval.core.errors import DensecapError
from densecap_eval.metrics.bootstrap import cluster_bootstrap_cis
from densecap_eval.metrics.length import (
    LENGTH_BUCKETS,
    length_bucket,
    length_reference,
    reference_token_counts,
)
from densecap_eval.tasks.base import breakdown, ci_lists
from densecap_eval.tasks.context import ComputeContext

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


@overload
def planned(task: str, a: A | None, /) -> A: ...
@overload
def planned(task: str, a: A | None, b: B | None, /) -> tuple[A, B]: ...
@overload
def planned(task: str, a: A | None, b: B | None, c: C | None, /) -> tuple[A, B, C]: ...
def planned(task: str, *parts: Any) -> Any:
    """A prepared task's plan indices, refusing a ``compute`` before ``add_to_plan``."""
    if any(part is None for part in parts):
        raise DensecapError(f"{task}: compute() before add_to_plan()")
    return parts[0] if len(parts) == 1 else parts


def bootstrap_ci(
    flags: dict[str, Any], clusters: Sequence[str], ctx: ComputeContext
) -> dict[str, list[float] | None]:
    """metrics.json's ``ci``: a percentile bootstrap interval per flag, photos resampled whole."""
    return ci_lists(
        cluster_bootstrap_cis(flags, clusters, n_boot=ctx.n_boot, seed=ctx.bootstrap_seed)
    )


@dataclass(frozen=True)
class LengthBreakdown:
    """Each example's CLIP BPE reference token count and its length bucket."""

    ref_tokens: list[int]
    labels: list[str]

    @classmethod
    def of(cls, texts: Iterable[str]) -> LengthBreakdown:
        ref_tokens = reference_token_counts(texts)
        return cls(ref_tokens, [length_bucket(t) for t in ref_tokens])

    def metrics(self, flags: dict[str, Any]) -> dict[str, Any]:
        """metrics.json's ``by_length`` and ``length_reference`` entries (in that order)."""
        return {
            "by_length": breakdown(flags, self.labels, LENGTH_BUCKETS),
            "length_reference": length_reference(),
        }
