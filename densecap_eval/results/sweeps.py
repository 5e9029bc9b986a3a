"""Sweeps as the results store sees them: each cell's state, and a model x task grid per sweep.

A run made for a sweep cell (`densecap_eval.run.sweep`) records in its run card the sweep's name,
the cell's id and the grid options that set the cell apart (`RunCard.sweep`, ``cell``,
``cell_options``). `cell_runs` picks, per cell id, the run that decides the cell's state: its
newest complete run, else its newest run of any status. `sweep_grids` lays the cells out as one
grid per sweep and grid options (models as rows, tasks as columns), each cell showing its state
and, once complete, its headline number; `densecap-eval report` and the dashboard show them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from densecap_eval.results.schema import (
    COMPLETE,
    CORRUPT,
    FAILED,
    INTERRUPTED,
    RUNNING,
    headline_names,
    jsonable,
    legacy_metric_specs,
)
from densecap_eval.results.store import StoredRun, load_metrics

MISSING = "missing"  # a cell no run directory holds
CELL_STATES: tuple[str, ...] = (COMPLETE, RUNNING, FAILED, INTERRUPTED, CORRUPT, MISSING)
# Cells a sweep runs (again); a complete cell is skipped, a running one left to its writer.
RERUN_STATES: tuple[str, ...] = (FAILED, INTERRUPTED, CORRUPT, MISSING)
SWEEP_CSV_COLUMNS: tuple[str, ...] = ("sweep", "options", "model", "task", "cell", "status",
                                      "metric", "value", "run_id")  # fmt: skip

Options = tuple[tuple[str, Any], ...]


def cell_runs(runs: Iterable[StoredRun]) -> dict[str, StoredRun]:
    """The run that decides each cell's state, by cell id: the newest complete, else the newest.

    ``runs`` oldest first (as `list_runs` gives them). A run without a readable card cannot be
    told apart from any other, so it belongs to no cell (its cell reads as missing).
    """
    chosen: dict[str, StoredRun] = {}
    for run in runs:
        cell = run.card.cell if run.card is not None else None
        if cell is None:
            continue
        previous = chosen.get(cell)
        if previous is None or run.is_complete or not previous.is_complete:
            chosen[cell] = run
    return chosen


def options_label(options: Options) -> str:
    """``text_policy=chunk-mean, precision=bf16``; "" when the sweep has no grid."""
    return ", ".join(f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
                     for key, value in options)  # fmt: skip


def model_label(spec: str, *, blind: bool) -> str:
    """How a grid names a model: the spec, marked as in reports when it is a blind control."""
    return f"{spec} (blind)" if blind else spec


@dataclass(frozen=True)
class GridCell:
    """One cell of a sweep grid: where it sits, its state and (complete) its headline number."""

    sweep: str
    model: str
    task: str
    status: str
    options: Options = ()
    cell: str | None = None  # the cell id; None for a gap no run and no sweep file names
    run: StoredRun | None = None
    metric: str | None = None  # the headline metric shown, and the concrete task it is from
    value: float | None = None
    subtask: str | None = None

    @property
    def text(self) -> str:
        """``scm 81.8`` for a complete cell (``scm 81.8 (dci/all_swaps)`` for a task family),
        else its state."""
        if self.status != COMPLETE:
            return self.status
        if self.metric is None or self.value is None:
            return COMPLETE
        where = f" ({self.subtask})" if self.subtask and self.subtask != self.task else ""
        return f"{self.metric} {100 * self.value:.1f}{where}"

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "options": jsonable(dict(self.options)),
            "model": self.model,
            "task": self.task,
            "cell": self.cell,
            "status": self.status,
            "metric": self.metric,
            "value": self.value,
            "subtask": self.subtask,
            "run_id": self.run.run_id if self.run is not None else None,
        }


def headline(run: StoredRun) -> tuple[str, str, float] | None:
    """(concrete task, metric, value) of a complete run's first headline metric with a value,
    in the order its tasks declared them (`RunCard.specs_for`)."""
    if not run.is_complete:
        return None
    card = run.card
    for concrete, values in load_metrics(run).items():
        specs = card.specs_for(concrete) if card is not None else legacy_metric_specs()
        for metric in headline_names(specs):
            value = values.get(metric) if isinstance(values, Mapping) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return concrete, metric, float(value)
    return None


def grid_cell(
    run: StoredRun | None,
    *,
    sweep: str,
    model: str,
    task: str,
    options: Options = (),
    cell: str | None = None,
    status: str | None = None,
) -> GridCell:
    """A `GridCell` for ``run`` (None: a missing cell), its headline read when complete."""
    if run is None:
        return GridCell(sweep, model, task, status or MISSING, options, cell)
    found = headline(run)
    subtask, metric, value = found if found is not None else (None, None, None)
    return GridCell(sweep, model, task, status or run.status, options, cell, run, metric, value,
                    subtask)  # fmt: skip


def stored_cells(runs: Iterable[StoredRun]) -> list[GridCell]:
    """Every sweep cell the runs hold, from their cards alone (no sweep file needed)."""
    cells = []
    for cell, run in cell_runs(runs).items():  # in order of each cell's first run
        card = run.card
        if card is None:  # cell_runs keeps only runs with a card
            continue
        cells.append(
            grid_cell(
                run,
                sweep=card.sweep or "?",
                model=model_label(card.model_spec, blind=card.blind),
                task=card.task,
                options=tuple(card.cell_options.items()),
                cell=cell,
            )
        )
    return cells


@dataclass(frozen=True)
class SweepGrid:
    """One sweep's cells that share grid options: models as rows, tasks as columns."""

    sweep: str
    options: Options
    models: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], GridCell] = field(default_factory=dict)

    @property
    def title(self) -> str:
        label = options_label(self.options)
        return f"sweep {self.sweep}" + (f" ({label})" if label else "")

    def at(self, model: str, task: str) -> GridCell:
        """The cell at (model, task); a missing one where no run or sweep file has it."""
        found = self.cells.get((model, task))
        if found is None:
            return GridCell(self.sweep, model, task, MISSING, self.options)
        return found

    def summary(self) -> str:
        """``4 cells: 3 complete, 1 failed`` (states in `CELL_STATES` order)."""
        states = [self.at(m, t).status for m in self.models for t in self.tasks]
        counts = [f"{states.count(s)} {s}" for s in CELL_STATES if s in states]
        return f"{len(states)} cell{'s' if len(states) != 1 else ''}: {', '.join(counts)}"

    def rows(self) -> list[list[str]]:
        """One row per model: its label (long paths shortened, as in reports), then a cell's
        `GridCell.text` per task."""
        from densecap_eval.results.report import display_model

        return [[display_model(model), *(self.at(model, task).text for task in self.tasks)]
                for model in self.models]  # fmt: skip


def sweep_grids(cells: Sequence[GridCell], *, sort: bool = False) -> list[SweepGrid]:
    """Cells as grids, one per (sweep, grid options), in order of first appearance; with
    ``sort``, sweeps, options, models and tasks sorted (cards alone do not say the file's order,
    and runs of one request start in no fixed order)."""
    groups: dict[tuple[str, str], list[GridCell]] = {}
    for cell in cells:
        key = (cell.sweep, json.dumps(jsonable(dict(cell.options)), sort_keys=True))
        groups.setdefault(key, []).append(cell)
    order = sorted(groups) if sort else list(groups)
    grids = []
    for key in order:
        members = groups[key]
        models = list(dict.fromkeys(c.model for c in members))
        tasks = list(dict.fromkeys(c.task for c in members))
        grids.append(
            SweepGrid(
                members[0].sweep,
                members[0].options,
                sorted(models) if sort else models,
                sorted(tasks) if sort else tasks,
                {(c.model, c.task): c for c in members},
            )
        )
    return grids


def grids_from_runs(runs: Iterable[StoredRun], *, sweep: str | None = None) -> list[SweepGrid]:
    """The grids of every sweep in a results directory's runs (of ``sweep`` only, when given),
    sorted by sweep, options, model and task."""
    cells = [c for c in stored_cells(runs) if sweep is None or c.sweep == sweep]
    return sweep_grids(cells, sort=True)


# --------------------------------------------------------------------------- rendering


def render_grids_markdown(grids: Sequence[SweepGrid]) -> str:
    parts = []
    for grid in grids:
        lines = [f"## {grid.title}", "", grid.summary(), ""]
        lines.append("| model | " + " | ".join(grid.tasks) + " |")
        lines.append("|---|" + "---|" * len(grid.tasks))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                  for row in grid.rows()]  # fmt: skip
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render_grids_csv(grids: Sequence[SweepGrid]) -> str:
    """One line per cell: its place, state and headline (value as stored, a fraction)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SWEEP_CSV_COLUMNS)
    for grid in grids:
        for model in grid.models:
            for task in grid.tasks:
                c = grid.at(model, task)
                writer.writerow([c.sweep, options_label(c.options), c.model, c.task, c.cell or "",
                                 c.status, c.metric or "", "" if c.value is None else c.value,
                                 c.run.run_id if c.run else ""])  # fmt: skip
    return out.getvalue()


def render_grids_json(grids: Sequence[SweepGrid]) -> str:
    items = [grid.at(m, t).to_json() for grid in grids for m in grid.models for t in grid.tasks]
    return json.dumps(items, indent=2, allow_nan=False) + "\n"


def print_grids(
    grids: Sequence[SweepGrid], fmt: str = "table", *, file: IO[str] | None = None
) -> None:
    """Write the grids in ``fmt`` (table, markdown, csv or json) to ``file`` (default stdout)."""
    import sys

    stream = file if file is not None else sys.stdout
    if fmt == "markdown":
        stream.write(render_grids_markdown(grids))
    elif fmt == "csv":
        stream.write(render_grids_csv(grids))
    elif fmt == "json":
        stream.write(render_grids_json(grids))
    elif fmt == "table":
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        tty = hasattr(stream, "isatty") and stream.isatty()
        buffer = io.StringIO()
        console = (Console(file=stream, highlight=False) if tty else
                   Console(file=buffer, width=400, highlight=False, color_system=None))  # fmt: skip
        for grid in grids:
            heading = f"{grid.title}: {grid.summary()}"
            console.print(Text(f"{heading}\n{'=' * len(heading)}", style="bold"))
            table = Table(box=box.SIMPLE_HEAD)
            table.add_column("model", no_wrap=True)
            for task in grid.tasks:
                table.add_column(task, no_wrap=True)
            for row in grid.rows():
                table.add_row(*row)
            console.print(table)
        if not tty:
            stream.write("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n")
    else:
        raise ValueError(f"unknown format {fmt!r} (known: table, markdown, csv, json)")
