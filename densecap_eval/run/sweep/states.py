"""Each cell's state in the results directory, and the run requests that compute cells.

A complete cell is skipped; a failed, interrupted, corrupt or missing one runs (again); a
running one is left to its writer unless asked. A cell's run card records its id with the
sweep's name and the cell's grid options (`RunCard.sweep`, ``cell``, ``cell_options``), so the
state of every cell is read back from the results directory alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from densecap_eval.results.schema import RUNNING
from densecap_eval.results.store import StoredRun, list_runs
from densecap_eval.results.sweeps import MISSING, RERUN_STATES, cell_runs
from densecap_eval.run.runner import RunRequest, SweepTag
from densecap_eval.run.sweep.spec import Cell, SweepSpec, expand


@dataclass(frozen=True)
class CellState:
    """A cell and what the results directory says of it."""

    cell: Cell
    status: str  # complete | running | failed | interrupted | corrupt | missing
    run: StoredRun | None = None

    @property
    def reason(self) -> str | None:
        return self.run.reason if self.run is not None else None


def plan(spec: SweepSpec, cells: Sequence[Cell] | None = None) -> list[CellState]:
    """Each cell's state, read from the results directory (missing when it has none)."""
    cells = expand(spec) if cells is None else cells
    runs = list_runs(spec.out) if spec.out.is_dir() else []
    by_id = cell_runs(runs)
    states = []
    for cell in cells:
        run = by_id.get(cell.id)
        states.append(CellState(cell, run.status if run is not None else MISSING, run))
    return states


def to_run(states: Sequence[CellState], *, rerun_running: bool = False) -> list[Cell]:
    """The cells a launch runs: failed, interrupted, corrupt and missing (and running, if asked)."""
    wanted = (*RERUN_STATES, RUNNING) if rerun_running else RERUN_STATES
    return [state.cell for state in states if state.status in wanted]


def requests_for(
    spec: SweepSpec, cells: Sequence[Cell], *, share_model: bool = True
) -> list[RunRequest]:
    """`RunRequest`s computing ``cells``: with ``share_model``, one per run of consecutive cells
    sharing a model and a config (the model loads once, its tasks share one encoding plan),
    else one per cell."""
    groups: list[list[Cell]] = []
    for cell in cells:
        last = groups[-1][0] if groups else None
        if (share_model and last is not None and last.model == cell.model
                and last.config == cell.config):  # fmt: skip
            groups[-1].append(cell)
        else:
            groups.append([cell])
    return [
        RunRequest(
            models=(group[0].model,),
            tasks=tuple(c.task for c in group),
            results_dir=spec.out,
            config=group[0].config,
            sweep=SweepTag(spec.name, tuple((c.task, c.id) for c in group), group[0].options),
        )
        for group in groups
    ]
