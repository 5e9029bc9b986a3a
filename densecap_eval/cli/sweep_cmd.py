"""`densecap-eval sweep SWEEP.yaml`: a grid of models x tasks x options, one run per cell.

Thin command: it loads the sweep file (`densecap_eval.run.sweep`), reads each cell's state from
the results directory, and either lists them (``--dry-run``), runs the ones that are not complete
here, or submits them as one SLURM array job.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from densecap_eval.cli.errors import Interrupted
from densecap_eval.cli.root import app
from densecap_eval.cli.sweep_print import print_grid, print_plan, state_counts

# densecap_eval.run.sweep is imported inside the command: `densecap-eval --help` stays instant.
if TYPE_CHECKING:
    from densecap_eval.run.runner import RunRequest
    from densecap_eval.run.sweep import CellState, SweepEvents, SweepSpec


def _say(message: str) -> None:
    typer.echo(message, err=True)


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
    from densecap_eval.run.sweep import expand, load_sweep, plan

    spec = load_sweep(sweep_file)
    states = plan(spec, expand(spec))
    if dry_run:
        print_plan(spec, states)
        return
    nproc = nproc_per_node if nproc_per_node is not None else spec.nproc_per_node
    if (launcher or spec.launcher) == "slurm":
        _submit(spec, states, sweep_file, nproc, rerun_running)
    else:
        _run_here(spec, states, nproc, rerun_running)


def _submit(
    spec: SweepSpec,
    states: list[CellState],
    sweep_file: Path,
    nproc: int | None,
    rerun_running: bool,
) -> None:
    """``--launcher slurm``: submit the cells that need it as one array job, and say so."""
    from densecap_eval.run.sweep import slurm_folder, submit_slurm_once

    jobs, left = submit_slurm_once(spec, states, nproc_per_node=nproc, rerun_running=rerun_running)
    _say(f"sweep {spec.name}: {state_counts(states)}; {len(jobs)} to submit")
    for job in left:
        why = "queued or running" if job.alive else "unknown to sacct (--rerun-running)"
        _say(f"  cell {job.cell}: job {job.job_id} {why} ({job.state}); not submitted again")
    if jobs:
        array = str(jobs[0].job_id).split("_")[0]
        _say(f"submitted SLURM job {array}: {len(jobs)} task(s), logs in {slurm_folder(spec)}")
        _say(f"follow it with: densecap-eval sweep {sweep_file} --dry-run")


def _run_here(
    spec: SweepSpec, states: list[CellState], nproc: int | None, rerun_running: bool
) -> None:
    """``--launcher local``: run the cells that need it, then print the sweep's grid."""
    from densecap_eval.run.sweep import SweepFailed, run_local, to_run

    cells = to_run(states, rerun_running=rerun_running)
    running = sum(s.status == "running" for s in states) if not rerun_running else 0
    note = f"; {running} running, left to their writers (--rerun-running)" if running else ""
    _say(f"sweep {spec.name}: {state_counts(states)}; {len(cells)} to run{note}")
    if cells:
        try:
            run_local(spec, cells, nproc_per_node=nproc, events=_sweep_events())
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted; run the sweep again to finish it (unfinished runs in {spec.out} "
                "are marked interrupted)"
            ) from None
        except SweepFailed:
            print_grid(spec)
            raise
    print_grid(spec)


def _sweep_events() -> SweepEvents:
    """What a local sweep prints as it goes."""
    from densecap_eval.run.runner import RunEvents
    from densecap_eval.run.sweep import SweepEvents

    return SweepEvents(
        on_request=lambda r: _say(
            f"running {r.models[0]} on {', '.join(r.tasks)}" + _options_note(r)
        ),
        on_failed=lambda r, message: _say(
            f"error: {r.models[0]} on {', '.join(r.tasks)}: {message}"
        ),
        run=RunEvents(on_stored=lambda run: _say(f"stored {run.path}")),
    )
