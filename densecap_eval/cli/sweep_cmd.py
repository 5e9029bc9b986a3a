"""`densecap-eval sweep SWEEP.yaml`: a grid of models x tasks x options, one run per cell.

Thin command: it loads the sweep file (`densecap_eval.run.sweep`), reads each cell's state from the
results directory, and either lists them (``--dry-run``), runs the ones that are not complete
here, or submits them as one SLURM array job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from densecap_eval.cli.app import app

if TYPE_CHECKING:
    from densecap_eval.run.runner import RunRequest
    from densecap_eval.run.sweep import CellState, SweepSpec


def _say(message: str) -> None:
    typer.echo(message, err=True)


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


def _print_grid(spec: SweepSpec) -> None:
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


def _options_note(request: RunRequest) -> str:
    from densecap_eval.results.sweeps import options_label

    label = options_label(request.sweep.options) if request.sweep is not None else ""
    return f" ({label})" if label else ""


@app.command("sweep")
def sweep_command(
    sweep_file: Annotated[
        Path, typer.Argument(help="Sweep file (YAML): models, tasks, grid, out.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cells and their state; run nothing.")
    ] = False,
    launcher: Annotated[
        Literal["local", "slurm"] | None,
        typer.Option(
            "--launcher",
            help="local (here, one cell group after another) or slurm (one array job through "
            "submitit, one task per cell). Default: the file's 'launcher', else local.",
        ),
    ] = None,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Run each cell under torchrun with this many processes (one per device). "
            "Default: the file's 'nproc_per_node', else one process.",
        ),
    ] = None,
    rerun_running: Annotated[
        bool,
        typer.Option(
            "--rerun-running",
            help="Also run cells whose run is still marked running (a writer on another host "
            "that this machine cannot check, e.g. a cancelled SLURM job).",
        ),
    ] = False,
) -> None:
    """Run a sweep: every cell not yet complete in the results directory, one run each."""
    from densecap_eval.cli.run_cmds import Interrupted
    from densecap_eval.run.sweep import (
        SweepEvents,
        SweepFailed,
        expand,
        load_sweep,
        plan,
        run_local,
        slurm_folder,
        submit_slurm_once,
        to_run,
    )

    spec = load_sweep(sweep_file)
    states = plan(spec, expand(spec))
    if dry_run:
        print_plan(spec, states)
        return
    nproc = nproc_per_node if nproc_per_node is not None else spec.nproc_per_node
    if (launcher or spec.launcher) == "slurm":
        jobs, left = submit_slurm_once(
            spec, states, nproc_per_node=nproc, rerun_running=rerun_running
        )
        _say(f"sweep {spec.name}: {state_counts(states)}; {len(jobs)} to submit")
        for job in left:
            why = "queued or running" if job.alive else "unknown to sacct (--rerun-running)"
            _say(f"  cell {job.cell}: job {job.job_id} {why} ({job.state}); not submitted again")
        if jobs:
            array = str(jobs[0].job_id).split("_")[0]
            _say(f"submitted SLURM job {array}: {len(jobs)} task(s), logs in {slurm_folder(spec)}")
            _say(f"follow it with: densecap-eval sweep {sweep_file} --dry-run")
        return
    cells = to_run(states, rerun_running=rerun_running)
    running = sum(s.status == "running" for s in states) if not rerun_running else 0
    note = f"; {running} running, left to their writers (--rerun-running)" if running else ""
    _say(f"sweep {spec.name}: {state_counts(states)}; {len(cells)} to run{note}")
    if cells:
        from densecap_eval.run.runner import RunEvents

        events = SweepEvents(
            on_request=lambda r: _say(
                f"running {r.models[0]} on {', '.join(r.tasks)}" + _options_note(r)
            ),
            on_failed=lambda r, message: _say(
                f"error: {r.models[0]} on {', '.join(r.tasks)}: {message}"
            ),
            run=RunEvents(on_stored=lambda run: _say(f"stored {run.path}")),
        )
        try:
            run_local(spec, cells, nproc_per_node=nproc, events=events)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted; run the sweep again to finish it (unfinished runs in {spec.out} "
                "are marked interrupted)"
            ) from None
        except SweepFailed:
            _print_grid(spec)
            raise
    _print_grid(spec)
