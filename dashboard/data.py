"""What the dashboard pages show, computed from the results store without Streamlit.

Every function here is pure (a results directory or stored runs in, pandas out) so it can be
tested and benchmarked outside a Streamlit session; `cache.py` wraps the expensive ones in
``st.cache_data``. Runs are read only through `densecap_eval.results.store`.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.errors import ResultsError
from densecap_eval.results.report import (
    BLIND_SUFFIX,
    DCI_REFERENCE_SUBTESTS,
    blind_partners,
    reference_note,
)
from densecap_eval.results.schema import (
    EXAMPLES_FILE,
    NOT_REFERENCE_EXACT,
    RUN_CARD_FILE,
    MetricSpec,
    headline_names,
    legacy_metric_specs,
    merge_specs,
    reference_exact,
)
from densecap_eval.results.store import StoredRun, list_runs, load_metrics

if TYPE_CHECKING:
    import pandas as pd

ENV_VAR = "DENSECAP_EVAL_RESULTS"
COUNT_METRIC = "n"
CI_KEY = "ci"
# A leaderboard frame's metric declarations (`MetricSpec.to_dict` of every row's task, merged):
# its headline metrics come first, in declared order (as `densecap-eval report` shows them).
SPECS_ATTR = "metric_specs"
# For a metric no task declared: names for which a smaller value is better (everything else
# is an accuracy or a recall).
LOWER_IS_BETTER_WORDS: tuple[str, ...] = ("rank", "loss", "error")
# Metric names that describe a run rather than score it: no "best" is marked for them.
UNRANKED_WORDS: tuple[str, ...] = ("share",)
BLIND_COLUMN = "_blind"  # `<metric>_blind`: that metric of the row's blind control
# Identity columns of a leaderboard row; every other column is a metric, `<m>_lo`, `<m>_hi` or
# `<m>_blind` (the value of the same model's blind control, `blind_partners`; NaN without one).
# ``note`` is "<precision>: not reference-exact" on the DCI reference subtests of a run not
# scored in fp32 (as in `densecap-eval report`), else "".
ROW_COLUMNS: tuple[str, ...] = ("model", "task", "date", "run_id", "dataset", "split", "blind",
                                "note")  # fmt: skip
FIRST_RUN_HELP = (
    "No runs here yet. Make a first run with the bundled tiny model on the bundled sample:\n\n"
    "    densecap-eval run --out {results}\n\n"
    "or score your own model and dataset:\n\n"
    "    densecap-eval run --model open_clip:ViT-B-32/openai --task dci "
    "--data-root /path/to/dci --out {results}\n"
)


# --------------------------------------------------------------------------- where the results are


def results_dir_from(argv: Sequence[str], environ: Mapping[str, str]) -> Path | None:
    """The results directory: ``--results DIR`` among the script arguments, else the env var.

    Streamlit passes what follows ``--`` in ``streamlit run app.py -- --results DIR`` as the
    script's argv; unknown arguments are ignored because the test runner's argv lands here too.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--results", default=None)
    known, _ = parser.parse_known_args(list(argv))
    value = known.results or environ.get(ENV_VAR) or None
    return Path(value).expanduser() if value else None


def store_fingerprint(results_dir: Path) -> tuple[tuple[str, int], ...]:
    """A cheap stamp of the store: each run directory with the mtime of its card.

    The card is written last and atomically, so a new, finished or failed run changes it; this
    is what the page caches are keyed on (a stat per run instead of reading every card).
    """
    stamps = []
    try:
        entries = sorted(os.scandir(results_dir), key=lambda e: e.name)
    except OSError:
        return ()
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        stamps.append((entry.name, run_stamp(Path(entry.path))))
    return tuple(stamps)


def run_stamp(run_dir: Path) -> int:
    """mtime (ns) of a run's card, or -1 without one: the cache key of everything read from it."""
    try:
        return (run_dir / RUN_CARD_FILE).stat().st_mtime_ns
    except OSError:
        return -1


def read_store(results_dir: Path) -> list[StoredRun]:
    """Every run directory of the store, oldest first; raises ResultsError for a bad directory."""
    return list_runs(results_dir)


# --------------------------------------------------------------------------- runs


def run_label(run: StoredRun) -> str:
    """How a run is named in pick lists: model, task and the run id."""
    if run.card is None:
        return f"{run.run_id} ({run.status})"
    label = f"{run.card.label} · {run.card.task} · {run.run_id}"
    return label if run.is_complete else f"{label} ({run.status})"


def run_date(run: StoredRun) -> datetime | None:
    started = run.card.started_at if run.card else None
    if not started:
        return None
    try:
        return datetime.fromisoformat(started)
    except ValueError:
        return None


def status_frame(runs: Sequence[StoredRun]) -> pd.DataFrame:
    """One row per run directory: id, status, model, task, start time and why it is not usable."""
    import pandas as pd

    rows = []
    for run in runs:
        card = run.card
        rows.append(
            {
                "run_id": run.run_id,
                "status": run.status,
                "model": card.label if card else None,
                "task": card.task if card else None,
                "started": card.started_at if card else None,
                "reason": run.reason or "",
                "path": str(run.path),
            }
        )
    columns = ["run_id", "status", "model", "task", "started", "reason", "path"]
    return pd.DataFrame(rows, columns=columns)


def unusable_runs(runs: Sequence[StoredRun]) -> list[StoredRun]:
    return [run for run in runs if not run.is_complete]


def unusable_summary(runs: Sequence[StoredRun]) -> str:
    """``"3 run directories not shown (1 corrupt, 1 failed, 1 interrupted)"``; "" for none."""
    bad = unusable_runs(runs)
    if not bad:
        return ""
    counts: dict[str, int] = {}
    for run in bad:
        counts[run.status] = counts.get(run.status, 0) + 1
    order = ("corrupt", "failed", "interrupted", "running")
    parts = [f"{counts.pop(status)} {status}" for status in order if status in counts]
    parts += [f"{n} {status}" for status, n in sorted(counts.items())]
    return (
        f"{len(bad)} run director{'y' if len(bad) == 1 else 'ies'} not shown ({', '.join(parts)})"
    )


def reference_warning(run: StoredRun) -> str | None:
    """Why a run's DCI subtest results do not match the reference exactly, or None."""
    card = run.card
    if card is None or reference_exact(card):
        return None
    subtests = [t for t in (card.tasks or [card.task]) if t in DCI_REFERENCE_SUBTESTS]
    if not subtests and card.task != "dci":
        return None
    return (
        f"{run.run_id} was scored in {card.precision}, not fp32: its DCI subtest results "
        f"({', '.join(subtests or DCI_REFERENCE_SUBTESTS)}) are {NOT_REFERENCE_EXACT} "
        "(half precision can flip ties and near-ties)"
    )


# --------------------------------------------------------------------------- leaderboard


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval(metrics: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
    intervals = metrics.get(CI_KEY)
    pair = intervals.get(metric) if isinstance(intervals, Mapping) else None
    if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_number(v) for v in pair):
        return float(pair[0]), float(pair[1])
    return None


def leaderboard_rows(
    runs: Sequence[StoredRun], metrics_of: Mapping[Path, Mapping[str, Any]] | None = None
) -> pd.DataFrame:
    """One row per (complete run, concrete task): identity columns, then every scalar metric
    with ``<metric>_lo`` / ``<metric>_hi`` for its 95% interval (NaN when none was stored) and,
    for a headline metric of a run whose blind control (`blind_partners`: same model spec,
    task, split, text policy, data) is among ``runs``, ``<metric>_blind``: the control's value.
    The blind runs keep their own rows. The tasks' metric declarations ride along in
    ``frame.attrs[SPECS_ATTR]`` (`frame_specs`).

    ``metrics_of`` maps a run path to its metrics.json when the caller has it cached already.
    Nested breakdowns (by length, by position) are left to the charts.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    cards: list[tuple[Any, str]] = []  # (card, task) of each row: to find blind controls
    floats: set[str] = set()  # metrics stored as a float somewhere; the others are counts
    for run in runs:
        if not run.is_complete or run.card is None:
            continue
        try:
            metrics = metrics_of[run.path] if metrics_of is not None else load_metrics(run)
        except (KeyError, ResultsError):
            continue
        for task, values in metrics.items():
            rows.append(_leaderboard_row(run, task, values, floats))
            cards.append((run.card, task))
    specs = merge_specs(card.specs_for(task) for card, task in cards)
    for index, blind in blind_partners(cards).items():
        for metric in headline_names(specs):
            if _is_number(rows[blind].get(metric)):
                rows[index][f"{metric}{BLIND_COLUMN}"] = float(rows[blind][metric])
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    for column in frame.columns:
        if column in ROW_COLUMNS or column.endswith(("_lo", "_hi", BLIND_COLUMN)):
            continue
        # Counts (n, gallery, ...) are integers in metrics.json; keeping them an integer dtype
        # is what tells them from fractions (`count_names`) however the frame is filtered.
        frame[column] = frame[column].astype("float64" if column in floats else "Int64")
    frame.attrs[SPECS_ATTR] = [spec.to_dict() for spec in specs]
    ordered = [*ROW_COLUMNS]
    for metric in metric_names(frame):
        ordered += [c for c in (metric, f"{metric}_lo", f"{metric}_hi", f"{metric}{BLIND_COLUMN}")
                    if c in frame.columns]  # fmt: skip
    ordered += count_names(frame)
    out = frame[ordered].reset_index(drop=True)
    out.attrs[SPECS_ATTR] = frame.attrs[SPECS_ATTR]
    return out


def _leaderboard_row(
    run: StoredRun, task: str, values: Mapping[str, Any], floats: set[str]
) -> dict[str, Any]:
    """One leaderboard row: the run's identity columns, then ``task``'s scalar metrics with
    their intervals (the names of float-valued ones are added to ``floats``)."""
    import pandas as pd

    card = run.card
    assert card is not None  # complete runs only
    started = run_date(run)
    row: dict[str, Any] = {
        "model": card.label,
        "task": task,
        "date": pd.Timestamp(started) if started else pd.NaT,
        "run_id": card.run_id,
        "dataset": task_dataset(task, card.dataset.get("name")),
        "split": card.split,
        "blind": bool(card.blind),
        "note": reference_note(card, task) or "",
    }
    for metric, value in values.items():
        if not _is_number(value) or metric in ROW_COLUMNS:
            continue
        row[metric] = value
        if isinstance(value, float):
            floats.add(metric)
        interval = _interval(values, metric)
        if interval is not None:
            row[f"{metric}_lo"], row[f"{metric}_hi"] = interval
    return row


def frame_specs(frame: pd.DataFrame) -> tuple[MetricSpec, ...]:
    """The metric declarations a leaderboard frame carries (`leaderboard_rows`); the legacy
    list for a frame built without them."""
    declared = frame.attrs.get(SPECS_ATTR)
    if declared is None:
        return legacy_metric_specs()
    return tuple(MetricSpec.from_dict(item) for item in declared)


def task_dataset(task: str, card_dataset: Any = None) -> str | None:
    """The dataset a concrete task belongs to: the part of its name before ``/``, else the run
    card's dataset (as `densecap-eval report` groups its sections)."""
    if "/" in task:
        return task.split("/", 1)[0]
    return str(card_dataset) if card_dataset else None


def leaderboard_datasets(frame: pd.DataFrame) -> list[str]:
    """The datasets of a leaderboard frame, sorted (rows without one are left out)."""
    if "dataset" not in frame.columns:
        return []
    return sorted({str(d) for d in frame["dataset"].dropna()})


def leaderboard_groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The frame split by dataset (sorted; rows without one last, as "other"), each part
    re-indexed, so each dataset gets its own table with only its own metric columns."""
    groups = []
    known = frame["dataset"].notna() if "dataset" in frame.columns else frame.index != frame.index
    for name in leaderboard_datasets(frame):
        groups.append((name, frame[frame["dataset"] == name].reset_index(drop=True)))
    if (~known).any():
        groups.append(("other", frame[~known].reset_index(drop=True)))
    return groups


def _value_columns(frame: pd.DataFrame) -> list[str]:
    return [
        c
        for c in frame.columns
        if c not in ROW_COLUMNS and not c.endswith(("_lo", "_hi", BLIND_COLUMN))
    ]


def count_names(frame: pd.DataFrame) -> list[str]:
    """The count columns (``n``, ``gallery`` ...): integers, shown as such, never ranked."""
    import pandas as pd

    names = [c for c in _value_columns(frame) if pd.api.types.is_integer_dtype(frame[c])]
    return sorted(names, key=lambda c: (c != COUNT_METRIC, c))


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The fraction-valued metric columns (not intervals, not counts), in display order."""
    counts = set(count_names(frame))
    names = {c for c in _value_columns(frame) if c not in counts}
    head = [m for m in headline_names(frame_specs(frame)) if m in names]
    return head + sorted(names - set(head))


def lower_is_better(metric: str, specs: Sequence[MetricSpec] = ()) -> bool:
    """As the metric's declaration says; for an undeclared one, by its name."""
    declared = next((spec for spec in specs if spec.name == metric), None)
    if declared is not None:
        return not declared.higher_is_better
    return any(word in metric for word in LOWER_IS_BETTER_WORDS)


def is_ranked(metric: str) -> bool:
    """Whether a best value is marked: not for descriptive shares (texts cut by the limit)."""
    return not any(word in metric for word in UNRANKED_WORDS)


def filter_leaderboard(
    frame: pd.DataFrame,
    *,
    tasks: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    dates: tuple[date, date] | None = None,
    datasets: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Rows of the chosen datasets, tasks and models, run between the two dates (inclusive)."""
    keep = frame.index == frame.index  # all True, also for an empty frame
    if datasets is not None:
        keep &= frame["dataset"].isin(list(datasets))
    if tasks is not None:
        keep &= frame["task"].isin(list(tasks))
    if models is not None:
        keep &= frame["model"].isin(list(models))
    if dates is not None and "date" in frame.columns:
        days = frame["date"].dt.date
        keep &= days.notna() & (days >= dates[0]) & (days <= dates[1])
    return frame[keep].reset_index(drop=True)


def best_marks(frame: pd.DataFrame) -> pd.DataFrame:
    """A boolean frame (same index, one column per metric): the best value of its task."""
    import pandas as pd

    marks = pd.DataFrame(index=frame.index)
    specs = frame_specs(frame)
    for metric in filter(is_ranked, metric_names(frame)):
        values = pd.to_numeric(frame[metric], errors="coerce")
        by_task = values.groupby(frame["task"])
        best = by_task.transform("min" if lower_is_better(metric, specs) else "max")
        marks[metric] = values.notna() & (values == best)
    return marks


def best_column(frame: pd.DataFrame) -> list[str]:
    """For each row, the metrics it is best at within its task (``"scm, neg"``), or ``""``."""
    marks = best_marks(frame)
    return [
        ", ".join(metric for metric in marks.columns if marks.at[index, metric])
        for index in frame.index
    ]


def _percent(value: Any) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan  # NaN, not None: the column stays numeric (sortable, shown as "–")
    return round(100 * float(value), 1)


def display_leaderboard(frame: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as shown: metrics in percent, each followed by its "95% CI" text column
    and, where some row has a blind control, its ``<metric> blind`` column (the control's value,
    in percent), ``best`` naming the metrics the row leads its task on. Numbers stay numbers
    (sortable); blind columns are never ranked.

    A metric or count no row of ``frame`` has a value for gets no column (a DCI subtest's
    ``scm`` beside a retrieval task's recalls, once the frame is one dataset's or filtered)."""
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    out["model"] = frame["model"]
    out["task"] = frame["task"]
    for metric in metric_names(frame):
        if not frame[metric].notna().any():
            continue
        out[metric] = frame[metric].map(_percent)
        if f"{metric}_lo" in frame.columns:
            lo, hi = frame[f"{metric}_lo"], frame[f"{metric}_hi"]
            out[f"{metric} 95% CI"] = [
                f"[{100 * a:.1f}, {100 * b:.1f}]" if pd.notna(a) and pd.notna(b) else ""
                for a, b in zip(lo, hi, strict=True)
            ]
        blind = f"{metric}{BLIND_COLUMN}"
        if blind in frame.columns and frame[blind].notna().any():
            out[f"{metric}{BLIND_SUFFIX}"] = frame[blind].map(_percent)
    for column in count_names(frame):
        if frame[column].notna().any():
            out[column] = frame[column]
    out["best"] = best_column(frame)
    for column in ("note", "date", "dataset", "split", "blind", "run_id"):
        out[column] = frame[column] if column in frame.columns else ""
    return out


def blind_columns(view: pd.DataFrame) -> list[str]:
    """The ``<metric> blind`` columns of a `display_leaderboard` view."""
    return [c for c in view.columns if str(c).endswith(BLIND_SUFFIX)]


def leaderboard_csv(frame: pd.DataFrame) -> bytes:
    """The filtered leaderboard as CSV: fractions as stored, intervals as ``_lo``/``_hi``."""
    return frame.to_csv(index=False).encode("utf-8")


def example_columns(run: StoredRun) -> list[str]:
    """Column names of a complete run's examples.parquet (its footer only)."""
    from densecap_eval.results import store

    reader = getattr(store, "example_columns", None)  # preferred, once the store offers it
    if callable(reader):
        return list(reader(run))
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = run.path / EXAMPLES_FILE
    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"{path}: cannot read the examples' columns ({exc})") from exc


# --------------------------------------------------------------------------- run cards


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
        return
    if isinstance(value, str):
        out[prefix] = value
    else:
        import json

        out[prefix] = json.dumps(value, default=str)


def flatten_card(run: StoredRun) -> dict[str, str]:
    """Everything a run recorded, as dotted field -> text (``model.spec``, ``versions.torch``).

    A run without a readable card still shows its directory, status and the reason.
    """
    out: dict[str, str] = {}
    if run.card is not None:
        _flatten(run.card.to_dict(), "", out)
    out["(directory)"] = str(run.path)
    out["(status as read)"] = run.status
    if run.reason:
        out["(reason)"] = run.reason
    if run.card is not None and not reference_exact(run.card):
        out["(reference-exact)"] = f"no: {run.card.precision}, DCI subtests {NOT_REFERENCE_EXACT}"
    return out


def card_table(run_a: StoredRun, run_b: StoredRun | None = None) -> pd.DataFrame:
    """Fields of one or two run cards side by side; ``differs`` marks fields that are not equal.

    Fields every run has different values for by nature (run id, times, pid) are still shown:
    hiding them would hide a real difference such as the host.
    """
    import pandas as pd

    a = flatten_card(run_a)
    b = flatten_card(run_b) if run_b is not None else None
    names = list(a) + ([k for k in b if k not in a] if b is not None else [])
    rows = []
    for name in names:
        row: dict[str, Any] = {"field": name, "A": a.get(name, "")}
        if b is not None:
            row["B"] = b.get(name, "")
            row["differs"] = a.get(name) != b.get(name)
        rows.append(row)
    columns = ["field", "A", "B", "differs"] if b is not None else ["field", "A"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- sweeps


def sweep_grid_frames(runs: Sequence[StoredRun]) -> list[tuple[str, str, pd.DataFrame]]:
    """(title, summary, grid) per sweep and grid options (`densecap_eval.results.sweeps`): the
    grid has a row per model and a column per task, each cell its state or headline number."""
    import pandas as pd

    from densecap_eval.results.sweeps import grids_from_runs

    out = []
    for grid in grids_from_runs(runs):
        frame = pd.DataFrame(grid.rows(), columns=["model", *grid.tasks])
        out.append((grid.title, grid.summary(), frame))
    return out
