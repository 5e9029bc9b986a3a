"""Comparing two models on the same examples: exact McNemar test and a paired cluster bootstrap."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from densecap_eval.metrics.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, cluster_bootstrap_ci

# Up to this many discordant pairs the binomial tail is summed in exact integer arithmetic.
_EXACT_LIMIT = 20000


@dataclass(frozen=True)
class PairedCounts:
    """The 2x2 table of two runs' correct flags on shared examples, plus their tie counts."""

    n: int
    both_correct: int
    both_wrong: int
    only_a: int
    only_b: int
    ties_a: int | None = None
    ties_b: int | None = None


def paired_counts(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    tie_a: np.ndarray | None = None,
    tie_b: np.ndarray | None = None,
) -> PairedCounts:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"flags of different shapes: {a.shape} and {b.shape}")
    return PairedCounts(
        n=int(a.size),
        both_correct=int(np.sum(a & b)),
        both_wrong=int(np.sum(~a & ~b)),
        only_a=int(np.sum(a & ~b)),
        only_b=int(np.sum(~a & b)),
        ties_a=None if tie_a is None else int(np.sum(np.asarray(tie_a, dtype=bool))),
        ties_b=None if tie_b is None else int(np.sum(np.asarray(tie_b, dtype=bool))),
    )


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: P(X <= min) * 2 for X ~ Binomial(only_a + only_b, 1/2).

    Capped at 1; no discordant pair gives 1.0.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError("discordant counts must be >= 0")
    n = only_a + only_b
    k = min(only_a, only_b)
    if n == 0:
        return 1.0
    if n <= _EXACT_LIMIT:
        tail = 0
        term = 1  # comb(n, i), updated in place
        for i in range(k + 1):
            tail += term
            term = term * (n - i) // (i + 1)
        return min(1.0, 2 * tail / 2**n)
    # Large n: sum in log space (relative error ~1e-12).
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(logs)
    log_tail = top + math.log(sum(math.exp(v - top) for v in logs)) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


def paired_cluster_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, float] | None:
    """Percentile interval of mean(b) - mean(a), resampling clusters (photos) of paired examples."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"flags of different shapes: {a.shape} and {b.shape}")
    return cluster_bootstrap_ci(b - a, clusters, n_boot=n_boot, seed=seed, level=level)
