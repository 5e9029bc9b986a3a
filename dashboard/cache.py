"""Cached reads for the pages: ``st.cache_data`` keyed on paths and card mtimes.

Arguments are plain strings and integers so Streamlit hashes them cheaply; a run is re-read
when its card changes (`data.run_stamp`), the store when any card changes
(`data.store_fingerprint`). Read failures are returned as values, never raised, so one bad run
cannot take a page down.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from densecap_eval.core.errors import DensecapError
from densecap_eval.results.store import StoredRun, load_examples, load_metrics, read_run

from . import charts, data, explorer, zeroshot_view

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.results.compare import Comparison
    from densecap_eval.results.zeroshot_summary import ZeroShotSummary


@st.cache_data(show_spinner=False, max_entries=16)
def store_runs(results_dir: str, fingerprint: tuple[tuple[str, int], ...]) -> list[StoredRun]:
    del fingerprint  # only part of the cache key
    return data.read_store(Path(results_dir))


@st.cache_data(show_spinner=False, max_entries=16)
def leaderboard(results_dir: str, fingerprint: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    runs = store_runs(results_dir, fingerprint)
    metrics_of: dict[Path, Any] = {}
    for run in runs:
        if run.is_complete:
            metrics_of[run.path] = run_metrics(str(run.path), data.run_stamp(run.path))
    return data.leaderboard_rows(runs, {k: v for k, v in metrics_of.items() if v is not None})


@st.cache_data(show_spinner=False, max_entries=1024)
def run_metrics(run_path: str, stamp: int) -> dict[str, Any] | None:
    del stamp
    run = read_run(run_path)
    try:
        return load_metrics(run)
    except DensecapError:
        return None


@st.cache_data(show_spinner=False, max_entries=256)
def columns_of(run_path: str, stamp: int) -> list[str]:
    del stamp
    try:
        return data.example_columns(read_run(run_path))
    except DensecapError:
        return []


@st.cache_data(show_spinner=False, max_entries=48)
def examples(run_path: str, stamp: int, columns: tuple[str, ...]) -> pd.DataFrame:
    """Only ``columns`` of one run's examples (raises DensecapError for an unreadable run)."""
    del stamp
    return load_examples(read_run(run_path), columns=list(columns))


@st.cache_data(show_spinner=False, max_entries=256)
def region_png(dataset_root: str, image: str, entry_key: str, box: tuple[int, ...] | None) -> bytes:
    return explorer.region_png(dataset_root, image, entry_key, list(box) if box else None)


@st.cache_data(show_spinner=False, max_entries=32)
def comparison(path_a: str, stamp_a: int, path_b: str, stamp_b: int, n_boot: int) -> Comparison:
    from densecap_eval.results.compare import compare_runs

    del stamp_a, stamp_b
    return compare_runs(read_run(path_a), read_run(path_b), n_boot=n_boot, seed=0)


@st.cache_data(show_spinner=False, max_entries=512)
def chart_data(
    run_path: str, stamp: int, task: str, flag: str, series: str
) -> tuple[pd.DataFrame, dict[str, object], pd.DataFrame]:
    """One run's accuracy by length bucket, share of cut texts, and Neg by diff position."""
    columns = charts.chart_columns(columns_of(run_path, stamp), flag)
    frame = examples(run_path, stamp, tuple(columns))
    if "task" in frame.columns:
        frame = frame[frame["task"] == task]
    return (
        charts.length_accuracy(frame, flag=flag, series=series),
        charts.cut_share(frame, series=series),
        charts.position_accuracy(frame, series=series),
    )


@st.cache_data(show_spinner=False, max_entries=16)
def zeroshot_summaries(
    results_dir: str, fingerprint: tuple[tuple[str, int], ...]
) -> list[ZeroShotSummary]:
    """Each model's ELEVATER mean and long-caption metrics (the report's aggregation)."""
    return zeroshot_view.summaries_of(store_runs(results_dir, fingerprint))


@st.cache_data(show_spinner=False, max_entries=16)
def zeroshot_protocols(results_dir: str, fingerprint: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    """The zero-shot protocols side by side, where a model ran a dataset under two or more."""
    return zeroshot_view.protocols_frame(store_runs(results_dir, fingerprint))
