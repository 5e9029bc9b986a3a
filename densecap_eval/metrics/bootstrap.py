"""Percentile bootstrap intervals that resample clusters (photos), seeded and vectorised.

All entries of one photo are resampled together, because they share the photo and are not
independent. A resample draws as many clusters as there are, with replacement; the statistic
is the mean over the examples of the drawn clusters (a ratio of cluster sums, so clusters of
different sizes weigh by their size, like the point estimate).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95
_BOOT_CHUNK = 200  # resamples drawn at once (memory ~ chunk x clusters integers)


def cluster_ids(clusters: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, int]:
    """Map cluster labels to 0..C-1 in order of first appearance; returns (ids, C)."""
    index: dict[Hashable, int] = {}
    ids = np.fromiter(
        (index.setdefault(c, len(index)) for c in clusters), dtype=np.int64, count=len(clusters)
    )
    return ids, len(index)


def resample_weights(n_clusters: int, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_clusters) counts: how often each cluster is drawn in each resample."""
    if n_clusters == 0:
        return np.zeros((n_boot, 0), dtype=np.int64)
    draws = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    offsets = (np.arange(n_boot, dtype=np.int64) * n_clusters)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_clusters)
    return counts.reshape(n_boot, n_clusters)


def cluster_bootstrap_stats(
    values: Mapping[str, np.ndarray],
    clusters: Sequence[Hashable] | np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The bootstrap distribution (n_boot,) of the mean of each value column, on SHARED resamples.

    A NaN value is left out of its metric (e.g. per-photo SCM of a single-entry photo), but its
    cluster is still drawn. A resample in which a metric has no usable value gives NaN there.
    """
    ids, n_clusters = cluster_ids(clusters)
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, raw in values.items():
        v = np.asarray(raw, dtype=np.float64).reshape(-1)
        if len(v) != len(ids):
            raise ValueError(f"{name}: {len(v)} values but {len(ids)} cluster labels")
        ok = ~np.isnan(v)
        sums = np.bincount(ids[ok], weights=v[ok], minlength=n_clusters)
        counts = np.bincount(ids[ok], minlength=n_clusters).astype(np.float64)
        cols[name] = (sums, counts)
    stats: dict[str, list[np.ndarray]] = {name: [] for name in cols}
    if n_boot <= 0 or n_clusters == 0:
        return {name: np.zeros(0) for name in cols}
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        chunk = min(_BOOT_CHUNK, n_boot - done)
        weights = resample_weights(n_clusters, n_boot=chunk, rng=rng).astype(np.float64)
        for name, (sums, counts) in cols.items():
            num, den = weights @ sums, weights @ counts
            safe = np.where(den > 0, den, 1.0)
            stats[name].append(np.where(den > 0, num / safe, np.nan))
        done += chunk
    return {name: np.concatenate(parts) for name, parts in stats.items()}


def percentile_interval(
    stats: np.ndarray, *, level: float = DEFAULT_LEVEL
) -> tuple[float, float] | None:
    """(lo, hi) percentiles (numpy's linear method) of the non-NaN stats; None when none."""
    s = np.asarray(stats, dtype=np.float64)
    s = s[~np.isnan(s)]
    if not s.size:
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(s, [tail, 100 - tail])
    return float(lo), float(hi)


def cluster_bootstrap_cis(
    values: Mapping[str, np.ndarray],
    clusters: Sequence[Hashable] | np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, tuple[float, float] | None]:
    """Percentile interval of the mean of each value column, all on the same resamples.

    A metric with no usable value, or ``n_boot <= 0``, gets None.
    """
    stats = cluster_bootstrap_stats(values, clusters, n_boot=n_boot, seed=seed)
    return {name: percentile_interval(s, level=level) for name, s in stats.items()}


def cluster_bootstrap_ci(
    values: np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, float] | None:
    """Percentile interval of the mean of ``values`` (bools count as 0/1), resampling clusters."""
    return cluster_bootstrap_cis(
        {"value": values}, clusters, n_boot=n_boot, seed=seed, level=level
    )["value"]
