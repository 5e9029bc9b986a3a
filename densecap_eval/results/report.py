"""Reports over a results directory: a terminal table, markdown, csv or json.

Only complete runs are reported; every other run directory (running, failed, interrupted,
corrupt) is passed to ``on_skip`` so the caller can warn about it, and the rest still prints.
Rows are one per (run, concrete task): a run of ``dci`` gives four rows, one per subtest.
The table and markdown reports have one section per dataset (`dataset_of`: the part of the task
name before ``/``, else the run card's dataset), with a table per task whose metric columns
are the ones that task's results hold (`main_metrics`). When a model's blind control (a
``--blind`` run of the same spec, task, split, text policy and data: `blind_partners`) is among
the rows, those tables put its value beside each metric (``<metric> blind``) and fold its row
into the model's; csv and json keep one item per run (the ``blind`` field / ``(blind)`` label).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

from densecap_eval.results.schema import (
    NOT_REFERENCE_EXACT,
    RUNNING,
    MetricSpec,
    RunCard,
    headline_names,
    jsonable,
    legacy_metric_specs,
    merge_specs,
    reference_exact,
)
from densecap_eval.results.store import StoredRun, list_runs, load_metrics

logger = logging.getLogger(__name__)

ReportFormat = Literal["table", "markdown", "csv", "json"]
REPORT_FORMATS: tuple[str, ...] = ("table", "markdown", "csv", "json")

COUNT_METRIC = "n"
CI_KEY = "ci"
NOTE_COLUMN = "note"

# The DCI subtests with published reference numbers: a run not scored in fp32 gets them marked
# "not reference-exact" (half-precision scores can flip ties and near-ties of SCM and Neg).
DCI_REFERENCE_SUBTESTS: tuple[str, ...] = (
    "dci/all_swaps",
    "dci/all_swaps_pick5",
    "dci/base_swaps",
    "dci/all_hardest",
)


def reference_note(card: RunCard | None, task: str) -> str | None:
    """``"fp16: not reference-exact"`` for a reference DCI subtest of a non-fp32 run, else None."""
    if card is None or task not in DCI_REFERENCE_SUBTESTS or reference_exact(card):
        return None
    return f"{card.precision}: {NOT_REFERENCE_EXACT}"


@dataclass(frozen=True)
class ReportRow:
    """One concrete task of one complete run."""

    run_id: str
    model: str  # the model spec, with " (blind)" appended for a blind-control run
    task: str  # the concrete task (e.g. "dci/all_swaps"), not the task as requested
    metrics: dict[str, Any]
    status: str
    run: StoredRun

    def ci(self, metric: str) -> tuple[float, float] | None:
        interval = (
            self.metrics.get(CI_KEY, {}).get(metric)
            if isinstance(self.metrics.get(CI_KEY), Mapping)
            else None
        )
        if isinstance(interval, Sequence) and len(interval) == 2 and None not in interval:
            return float(interval[0]), float(interval[1])
        return None

    @property
    def note(self) -> str | None:
        """``"fp16: not reference-exact"`` on a DCI reference subtest of a non-fp32 run."""
        return reference_note(self.run.card, self.task)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "task": self.task,
            "metrics": jsonable(self.metrics),
            "status": self.status,
            "note": self.note,
        }


# --------------------------------------------------------------------------- blind controls

BLIND_SUFFIX = " blind"  # the column beside a metric holding the blind control's value
BLIND_RUN_COLUMN = "blind run"


def _same_data(a: RunCard, b: RunCard) -> bool:
    """Whether two runs read the same data: equal dataset fingerprints, or one unknown (a
    suite's fingerprint is a mapping per dataset: it matches a single one it contains)."""
    fa, fb = a.dataset.get("fingerprint"), b.dataset.get("fingerprint")
    if fa is None or fb is None or fa == fb:
        return True
    if isinstance(fa, Mapping) and not isinstance(fb, Mapping):
        return fb in fa.values()
    if isinstance(fb, Mapping) and not isinstance(fa, Mapping):
        return fa in fb.values()
    return False


def blind_partners(items: Sequence[tuple[RunCard | None, str]]) -> dict[int, int]:
    """``{index of a normal run's task: index of its blind control}`` among ``(card, concrete
    task)`` items: a blind run (``--blind``) of the same model spec, task, split and text
    policy on the same data (`_same_data`); the latest started such run when there are several.
    """
    blind = [i for i, (card, _) in enumerate(items) if card is not None and card.blind]
    out: dict[int, int] = {}
    for i, (card, task) in enumerate(items):
        if card is None or card.blind:
            continue
        matches = [
            j
            for j in blind
            if (other := items[j][0]) is not None
            and items[j][1] == task
            and (other.model_spec, other.split, other.text_policy)
            == (card.model_spec, card.split, card.text_policy)
            and _same_data(card, other)
        ]
        if matches:
            out[i] = max(matches, key=lambda j: (items[j][0].started_at or "", j))  # type: ignore[union-attr]
    return out


def _default_on_skip(run: StoredRun) -> None:
    logger.warning("skipping %s: %s", run.path, skip_reason(run))


def skip_reason(run: StoredRun) -> str:
    """Why a run directory is left out of a report, in words."""
    if run.status == "corrupt":
        return f"corrupt run ({run.reason})"
    if run.status == RUNNING:
        card = run.card
        if card is not None and card.host and card.pid is not None:
            return (
                f"still running (pid {card.pid} on {card.host}), or its writer died where "
                "this machine cannot check"
            )
        return "still running (or its writer was killed)"
    detail = f": {run.reason}" if run.reason else ""
    return f"run {run.status}{detail}"


def _task_matches(wanted: str, concrete: str, requested: str) -> bool:
    return wanted in (concrete, requested) or concrete.startswith(wanted.rstrip("/") + "/")


def rows_for_runs(
    runs: Sequence[StoredRun],
    *,
    task: str | None = None,
    model: str | None = None,
    on_skip: Callable[[StoredRun], None] | None = None,
) -> list[ReportRow]:
    """Rows of the complete runs among ``runs``, in the given order; the others go to ``on_skip``.

    ``task`` keeps a concrete task, a requested task, or a family (``dci`` keeps ``dci/*``);
    ``model`` keeps runs whose model spec contains it. Runs that are not complete go to
    ``on_skip`` (default: a logged warning) whatever the filters.
    """
    skip = on_skip or _default_on_skip
    rows: list[ReportRow] = []
    for run in runs:
        if not run.is_complete or run.card is None:
            skip(run)
            continue
        card = run.card
        if model is not None and model not in card.model_spec and model != card.label:
            continue
        metrics = load_metrics(run)
        for concrete, values in metrics.items():
            if task is not None and not _task_matches(task, concrete, card.task):
                continue
            rows.append(ReportRow(card.run_id, card.label, concrete, values, run.status, run))
    return rows


def collect_rows(
    results_dir: str | os.PathLike[str],
    *,
    task: str | None = None,
    model: str | None = None,
    on_skip: Callable[[StoredRun], None] | None = None,
) -> list[ReportRow]:
    """Rows of every complete run under ``results_dir``, oldest run first (see `rows_for_runs`)."""
    return rows_for_runs(list_runs(results_dir), task=task, model=model, on_skip=on_skip)


# --------------------------------------------------------------------------- shaping


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_specs(rows: Sequence[ReportRow]) -> tuple[MetricSpec, ...]:
    """The metrics the rows' tasks declared in their run cards (the legacy list for runs
    stored before declarations), in declaration order."""
    return merge_specs(
        row.run.card.specs_for(row.task) if row.run.card is not None else legacy_metric_specs()
        for row in rows
    )


def main_metrics(rows: Sequence[ReportRow]) -> list[str]:
    """The metric columns of a group of rows (same concrete task), count excluded.

    The declared headline metrics (`row_specs`) some row has a value for, in declaration order,
    so a task gets only its own columns (a retrieval task its recalls, a DCI subtest SCM and
    Neg, without a column that is null everywhere, such as ``scm_per_image`` where no image has
    two entries). An empty subtest, whose headline metrics are all stored as null, keeps them
    (shown as ``-``). A task without headline metrics shows all its scalar metrics.
    """
    order = headline_names(row_specs(rows))
    present = {key for row in rows for key in row.metrics}
    valued = {k for row in rows for k, v in row.metrics.items() if v is not None}
    headline = [m for m in order if m in valued]
    if headline:
        return headline
    headline = [m for m in order if m in present]
    if headline:
        return headline
    numeric = {k for row in rows for k, v in row.metrics.items() if _is_number(v)}
    return sorted(numeric - {COUNT_METRIC})


def dataset_of(row: ReportRow) -> str:
    """The dataset a row's task belongs to: the part of the task name before ``/``, else the
    run card's dataset name, else the task name itself."""
    if "/" in row.task:
        return row.task.split("/", 1)[0]
    card = row.run.card
    name = card.dataset.get("name") if card is not None else None
    return str(name) if name else row.task


def group_by_dataset(rows: Sequence[ReportRow]) -> dict[str, dict[str, list[ReportRow]]]:
    """`group_by_task` per dataset (`dataset_of`), datasets in order of first appearance."""
    datasets: dict[str, list[ReportRow]] = {}
    for row in rows:
        datasets.setdefault(dataset_of(row), []).append(row)
    return {name: group_by_task(members) for name, members in datasets.items()}


def dataset_heading(name: str, tasks: Mapping[str, Sequence[ReportRow]]) -> str:
    """``dci: 4 tasks, 2 models`` (the heading of a dataset's section)."""
    models = {row.model for members in tasks.values() for row in members}
    n_tasks, n_models = len(tasks), len(models)
    return (
        f"{name}: {n_tasks} task{'s' if n_tasks != 1 else ''}, "
        f"{n_models} model{'s' if n_models != 1 else ''}"
    )


def display_model(label: str, *, max_len: int = 48) -> str:
    """A long spec made readable: absolute paths keep only their last component."""
    if len(label) <= max_len:
        return label
    return re.sub(
        r"(?:/?[^/@:\s]+/)+([^/@:\s]+)",
        lambda m: f"…/{m.group(1)}" if m.group(0).startswith("/") else m.group(0),
        label,
    )


def group_by_task(rows: Sequence[ReportRow]) -> dict[str, list[ReportRow]]:
    """Rows per concrete task, tasks in order of first appearance, models sorted within."""
    groups: dict[str, list[ReportRow]] = {}
    for row in rows:
        groups.setdefault(row.task, []).append(row)
    for task, members in groups.items():
        groups[task] = sorted(
            members, key=lambda r: (r.run.card.model_spec if r.run.card else "", r.model, r.run_id)
        )
    return groups


def format_value(value: Any) -> str:
    """Metrics are stored as fractions; reports show them as percentages with one decimal."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not _is_number(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{100 * value:.1f}"


def format_cell(row: ReportRow, metric: str) -> str:
    value = row.metrics.get(metric)
    text = format_value(value)
    interval = row.ci(metric)
    if interval is not None and value is not None:
        text += f" [{format_value(interval[0])}, {format_value(interval[1])}]"
    return text


def _columns(members: Sequence[ReportRow]) -> tuple[list[str], bool]:
    metrics = main_metrics(members)
    splits = {
        (r.run.card.split, str(r.run.card.dataset.get("name"))) for r in members if r.run.card
    }
    return metrics, len(splits) > 1


def _table_cells(members: Sequence[ReportRow]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one task's table. When a model's blind control (`blind_partners`)
    is among ``members``, each metric gets a ``<metric> blind`` column beside it holding the
    control's value, a ``blind run`` column names the control's run, and the control's own
    row is folded into its model's row (an unmatched blind run keeps its own row)."""
    metrics, show_split = _columns(members)
    partners = blind_partners([(row.run.card, row.task) for row in members])
    folded = set(partners.values())
    header = ["model"]
    for metric in metrics:
        header += [metric, f"{metric}{BLIND_SUFFIX}"] if partners else [metric]
    header.append(COUNT_METRIC)
    if show_split:
        header.append("split")
    show_note = any(row.note for row in members)
    if show_note:
        header.append(NOTE_COLUMN)
    header.append("run")
    if partners:
        header.append(BLIND_RUN_COLUMN)
    body = []
    for index, row in enumerate(members):
        if index in folded:
            continue
        blind = members[partners[index]] if index in partners else None
        cells = [display_model(row.model)]
        for metric in metrics:
            cells.append(format_cell(row, metric))
            if partners:
                cells.append(format_value(blind.metrics.get(metric)) if blind else "-")
        cells.append(format_value(row.metrics.get(COUNT_METRIC)))
        if show_split and row.run.card is not None:
            cells.append(f"{row.run.card.dataset.get('name', '?')}/{row.run.card.split}")
        if show_note:
            cells.append(row.note or "")
        cells.append(row.run_id)
        if partners:
            cells.append(blind.run_id if blind else "")
        body.append(cells)
    return header, body


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Scalar metrics with dotted names for nested breakdowns (``by_length.<=77.neg``)."""
    for key, value in metrics.items():
        if key == CI_KEY and not prefix:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        elif value is None or _is_number(value) or isinstance(value, (str, bool)):
            yield name, value


# --------------------------------------------------------------------------- renderers


_TEXT_COLUMNS = frozenset({"model", "split", NOTE_COLUMN, "run", BLIND_RUN_COLUMN})
CSV_COLUMNS: tuple[str, ...] = ("run_id", "model", "blind", "task", "split", "metric", "value",
                                "ci_lo", "ci_hi", NOTE_COLUMN)  # fmt: skip


def render_markdown(rows: Sequence[ReportRow]) -> str:
    """A ``##`` section per dataset (`dataset_heading`), in it one pipe table per concrete task
    under a ``###`` heading; metrics in percent."""
    parts: list[str] = []
    for dataset, tasks in group_by_dataset(rows).items():
        parts.append(f"## {dataset_heading(dataset, tasks)}")
        for task, members in tasks.items():
            header, body = _table_cells(members)
            lines = [f"### {task}", ""]
            lines.append("| " + " | ".join(header) + " |")
            aligns = ["---" if name in _TEXT_COLUMNS else "---:" for name in header]
            lines.append("|" + "|".join(aligns) + "|")
            lines.extend(
                "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body
            )
            parts.append("\n".join(lines))
    parts.extend(_zeroshot_markdown(rows))
    return "\n\n".join(parts) + "\n"


def _zeroshot_markdown(rows: Sequence[ReportRow]) -> list[str]:
    """The "zero-shot vs long captions" sections (results/zeroshot_summary.py), when any."""
    from densecap_eval.results.zeroshot_summary import sections

    out = []
    for title, header, body in sections(rows):
        lines = [f"## {title}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" if i == 0 or name == "dataset" else "---:"
                                    for i, name in enumerate(header)) + "|")  # fmt: skip
        lines.extend("| " + " | ".join(cells) + " |" for cells in body)
        out.append("\n".join(lines))
    return out


def render_csv(rows: Sequence[ReportRow]) -> str:
    """Tidy (long) csv: one line per (run, concrete task, metric), values as stored (fractions).

    Columns: run_id, model, blind, task, split, metric, value, ci_lo, ci_hi, note. Nested
    breakdowns appear with dotted metric names; the count ``n`` is a metric line of its own.
    ``note`` is ``<precision>: not reference-exact`` on the DCI reference subtests of a run not
    scored in fp32, else empty.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        card = row.run.card
        spec = card.model_spec if card else row.model
        blind = bool(card.blind) if card else False
        split = card.split if card else None
        note = row.note or ""
        for metric, value in _flatten(row.metrics):
            interval = row.ci(metric)
            lo, hi = interval if interval else ("", "")
            writer.writerow(
                [row.run_id, spec, blind, row.task, split or "", metric,
                 "" if value is None else value, lo, hi, note]
            )  # fmt: skip
    return out.getvalue()


def render_json(rows: Sequence[ReportRow]) -> str:
    """A JSON list with one item per (run, concrete task).

    Each item is exactly ``{"run_id", "model", "task", "metrics", "status", "note"}``: ``task``
    is the concrete task (``dci/all_swaps``, not ``dci``), ``metrics`` that task's full entry of
    the run's metrics.json (fractions, with ``ci`` and breakdowns), ``model`` the spec with
    `` (blind)`` appended for a blind-control run, ``status`` always ``complete``, ``note``
    ``"<precision>: not reference-exact"`` on a DCI reference subtest of a run not scored in
    fp32, else null.
    """
    return json.dumps([row.to_json() for row in rows], indent=2, allow_nan=False) + "\n"


def _rich_table(task: str, members: Sequence[ReportRow]) -> Any:
    from rich import box
    from rich.table import Table

    header, body = _table_cells(members)
    table = Table(title=task, title_justify="left", box=box.SIMPLE_HEAD)
    for name in header:
        numeric = name not in _TEXT_COLUMNS
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for cells in body:
        table.add_row(*cells)
    return table


def build_sections(rows: Sequence[ReportRow]) -> list[Any]:
    """What the table report prints: per dataset a heading line (`dataset_heading`, underlined
    with ``=``), then its tasks' rich tables."""
    from rich.text import Text

    out: list[Any] = []
    for dataset, tasks in group_by_dataset(rows).items():
        heading = dataset_heading(dataset, tasks)
        out.append(Text(f"{heading}\n{'=' * len(heading)}", style="bold"))
        out.extend(_rich_table(task, members) for task, members in tasks.items())
    out.extend(_zeroshot_table(rows))
    return out


def _zeroshot_table(rows: Sequence[ReportRow]) -> list[Any]:
    """Each model's ELEVATER mean beside its long-caption metrics (results/zeroshot_summary.py)."""
    from rich import box
    from rich.table import Table

    from densecap_eval.results.zeroshot_summary import sections

    out = []
    for title, header, body in sections(rows):
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for i, name in enumerate(header):
            text = i == 0 or name in ("retrieval", "dataset")
            table.add_column(name, justify="left" if text else "right", no_wrap=True)
        for cells in body:
            table.add_row(*cells)
        out.append(table)
    return out


def print_report(
    rows: Sequence[ReportRow], fmt: str = "table", *, file: IO[str] | None = None
) -> None:
    """Write the report in ``fmt`` to ``file`` (default stdout)."""
    import sys

    stream = file if file is not None else sys.stdout
    if fmt == "table":
        from rich.console import Console

        if hasattr(stream, "isatty") and stream.isatty():
            console = Console(file=stream, highlight=False)
            for item in build_sections(rows):
                console.print(item)
            return
        # Off a terminal rich would fold tables to 80 columns and pad every line with blanks:
        # render wide, then strip, so pasted or piped output stays clean.
        buffer = io.StringIO()
        console = Console(file=buffer, width=250, highlight=False, color_system=None)
        for item in build_sections(rows):
            console.print(item)
        stream.write("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n")
        return
    renderers: dict[str, Callable[[Sequence[ReportRow]], str]] = {
        "markdown": render_markdown,
        "csv": render_csv,
        "json": render_json,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r} (known: {', '.join(REPORT_FORMATS)})")
    stream.write(renderers[fmt](rows))
