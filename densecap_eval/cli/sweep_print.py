"""What `sweep` and `report` print about sweeps: each cell's state, and the grids of results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from densecap_eval.run.sweep import CellState, SweepSpec


def state_counts(states: Sequence[CellState]) -> str:
    """``4 cells: 2 complete, 1 failed, 1 missing``."""
    from densecap_eval.results.sweeps import CELL_STATES

    found = [s.status for s in states]
    parts = [f"{found.count(name)} {name}" for name in CELL_STATES if name in found]
    return f"{len(found)} cell{'s' if len(found) != 1 else ''}: {', '.join(parts)}"


def print_plan(spec: SweepSpec, states: Sequence[CellState]) -> None:
    """One line per cell: id, model, task, grid options, state and its run (or why not usable).

    Plain aligned text, never cut: the ids and run ids are what a user copies from it.
    """
    from densecap_eval.results.report import display_model
    from densecap_eval.results.sweeps import options_label

    header = ["cell", "model", "task", *(["options"] if spec.grid else []), "state", "run"]
    rows = [header]
    for state in states:
        cell = state.cell
        run = state.run.run_id if state.run is not None else ""
        if state.reason:
            run = f"{run}: {state.reason}" if run else state.reason
        rows.append([cell.id, display_model(cell.label), cell.task,
                     *([options_label(cell.options)] if spec.grid else []), state.status, run])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    typer.echo(f"sweep {spec.name} -> {spec.out}")
    for row in rows:
        typer.echo(
            "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        )
    typer.echo(state_counts(states))


def print_grid(spec: SweepSpec) -> None:
    """The grid of ``spec``'s sweep, from what its results directory holds now."""
    if spec.out.is_dir():
        print_sweep_grids(spec.out, "table", sweep=spec.name)


def print_sweep_grids(
    results_dir: Path, fmt: str, *, sweep: str | None = None, heading: bool = False
) -> int:
    """Print the grid of every sweep (or of ``sweep``) in ``results_dir``; how many grids.

    ``heading``: a blank line first, as a section after the run tables of `report`.
    """
    from densecap_eval.results.store import list_runs
    from densecap_eval.results.sweeps import grids_from_runs, print_grids

    grids = grids_from_runs(list_runs(results_dir), sweep=sweep)
    if grids:
        if heading:
            typer.echo("")
        print_grids(grids, fmt)
    return len(grids)
