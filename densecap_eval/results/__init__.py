"""The results store (run card, metrics.json, examples.parquet) and what reads it back.

`store` is the only module that writes or reads run directories; `report`, `compare` and the
dashboard go through it (the run layer, run/runner.py, writes one run per model and task).
"""

from __future__ import annotations

from densecap_eval.results.schema import SCHEMA_VERSION, MetricSpec, RunCard
from densecap_eval.results.store import (
    RunWriter,
    StoredRun,
    ensure_writable,
    list_runs,
    load_examples,
    load_metrics,
    read_run,
    resolve_run,
)

__all__ = [
    "SCHEMA_VERSION",
    "MetricSpec",
    "RunCard",
    "RunWriter",
    "StoredRun",
    "ensure_writable",
    "list_runs",
    "load_examples",
    "load_metrics",
    "read_run",
    "resolve_run",
]
