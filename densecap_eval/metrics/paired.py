"""Comparing two models on the same examples.

The primary test is a paired sign-flip permutation test over clusters (photos): examples of
one photo share the photo (and SCM outcomes of one group are coupled), so they are not
independent, and a test that treats them as independent gives p-values that are too small.
Beside it: a paired cluster bootstrap interval of the difference, and the exact McNemar test,
which assumes independent examples and is kept only as a secondary figure.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from densecap_eval.metrics.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    cluster_bootstrap_ci,
    cluster_ids,
)

# Up to this many discordant pairs the binomial tail is summed in exact integer arithmetic.
_EXACT_LIMIT = 20000
# Sign-flip test: all 2**m sign patterns are enumerated when at most this many clusters have a
# nonzero difference (2**20 sums of float64 = 8 MiB); above it, seeded Monte Carlo draws.
SIGN_FLIP_EXACT_LIMIT = 20
DEFAULT_N_PERM = 10_000
_PERM_CHUNK = 1000  # sign patterns drawn at once (memory ~ chunk x clusters)


@dataclass(frozen=True)
class PairedCounts:
    """The 2x2 table of two runs' correct flags on shared examples."""

    n: int
    both_correct: int
    both_wrong: int
    only_a: int
    only_b: int


def paired_counts(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedCounts:
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


# --------------------------------------------------------------------------- clustered test


@dataclass(frozen=True)
class SignFlipResult:
    """A paired sign-flip permutation test over clusters.

    ``statistic`` is sum(d_c) / n, the difference of accuracies (B - A); ``n_clusters`` counts
    all clusters, ``n_nonzero`` those with d_c != 0 (only they change under a flip). ``exact``
    says whether all ``2**n_nonzero`` sign patterns were enumerated; otherwise ``n_perm`` random
    patterns were drawn (``n_perm`` is the number of patterns the p-value is over).
    """

    statistic: float
    p_value: float
    n_clusters: int
    n_nonzero: int
    exact: bool
    n_perm: int


def cluster_differences(
    correct_a: np.ndarray, correct_b: np.ndarray, clusters: Sequence[Hashable] | np.ndarray
) -> np.ndarray:
    """Per cluster, d_c = sum over its examples of (correct_b - correct_a), in first-seen order."""
    a = np.asarray(correct_a, dtype=np.int64).reshape(-1)
    b = np.asarray(correct_b, dtype=np.int64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"flags of different shapes: {a.shape} and {b.shape}")
    if len(clusters) != a.size:
        raise ValueError(f"{a.size} flags but {len(clusters)} cluster labels")
    ids, n_clusters = cluster_ids(clusters)
    return np.bincount(ids, weights=b - a, minlength=n_clusters).astype(np.int64)


def sign_flip_test(
    differences: Sequence[float] | np.ndarray,
    *,
    n: int | None = None,
    n_perm: int = DEFAULT_N_PERM,
    seed: int = 0,
    exact_limit: int = SIGN_FLIP_EXACT_LIMIT,
) -> SignFlipResult:
    """Two-sided sign-flip permutation test of per-cluster paired differences ``d_c``.

    Under the null hypothesis (no difference between the two runs), each cluster's d_c is as
    likely to be +d_c as -d_c, independently of other clusters; examples within a cluster may be
    correlated in any way. The statistic is T = sum(d_c) / n (n defaults to the number of
    clusters; pass the number of examples to make T the accuracy difference) and
    p = P(|T*| >= |T_obs|) over the sign flips.

    Exact when at most ``exact_limit`` clusters have d_c != 0: all 2**m patterns (the observed
    one among them) are enumerated, p = #{|T*| >= |T_obs|} / 2**m. Otherwise ``n_perm`` random
    patterns are drawn from ``numpy.random.default_rng(seed)`` and
    p = (1 + #{|T*| >= |T_obs|}) / (1 + n_perm), a valid p-value for any number of draws.
    """
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise ValueError("cluster differences must be finite")
    if n is not None and n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    scale = float(n if n is not None else max(len(d), 1))
    nonzero = d[d != 0]
    m = len(nonzero)
    observed = abs(float(nonzero.sum()))
    # |T*| >= |T_obs| with a little slack, so equal sums computed in another order still tie.
    threshold = observed - 1e-9 * (1.0 + float(np.abs(nonzero).sum()))
    if m <= exact_limit:
        p, n_used = _exact_p(nonzero, threshold)
        exact = True
    else:
        p, n_used = _sampled_p(nonzero, threshold, n_perm=n_perm, seed=seed), n_perm
        exact = False
    return SignFlipResult(
        statistic=float(d.sum()) / scale,
        p_value=min(1.0, p),
        n_clusters=len(d),
        n_nonzero=m,
        exact=exact,
        n_perm=n_used,
    )


def _exact_p(nonzero: np.ndarray, threshold: float) -> tuple[float, int]:
    """(p, 2**m) over all 2**m sign patterns of the m nonzero differences."""
    sums = np.zeros(1)
    for value in nonzero:  # all 2**m signed sums, doubling once per cluster
        sums = np.concatenate((sums + value, sums - value))
    return float(np.count_nonzero(np.abs(sums) >= threshold)) / len(sums), len(sums)


def _sampled_p(nonzero: np.ndarray, threshold: float, *, n_perm: int, seed: int) -> float:
    """(1 + hits) / (1 + n_perm) over ``n_perm`` random sign patterns drawn from ``seed``."""
    m = len(nonzero)
    rng = np.random.default_rng(seed)
    total = float(nonzero.sum())
    hits, done = 0, 0
    while done < n_perm:
        chunk = min(_PERM_CHUNK, n_perm - done)
        # one fair random bit per cluster and draw (1: flip its sign), 8 from each byte
        raw = rng.integers(0, 256, size=(chunk, (m + 7) // 8), dtype=np.uint8)
        flips = np.unpackbits(raw, axis=1, count=m).astype(np.float64)
        sums = total - 2.0 * (flips @ nonzero)
        hits += int(np.count_nonzero(np.abs(sums) >= threshold))
        done += chunk
    return (1 + hits) / (1 + n_perm)


def paired_sign_flip_test(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray,
    *,
    n_perm: int = DEFAULT_N_PERM,
    seed: int = 0,
    exact_limit: int = SIGN_FLIP_EXACT_LIMIT,
) -> SignFlipResult:
    """Sign-flip test over clusters of two runs' correct flags on the same examples.

    The statistic is mean(b) - mean(a); see `sign_flip_test`. No examples give p = 1.
    """
    d = cluster_differences(correct_a, correct_b, clusters)
    n = int(np.asarray(correct_a).size)
    return sign_flip_test(d, n=n if n else None, n_perm=n_perm, seed=seed, exact_limit=exact_limit)
