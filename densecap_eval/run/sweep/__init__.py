"""Sweeps: a grid of models x tasks x run options, run as one ordinary run per cell.

A sweep file (YAML) names the models, the tasks, an optional ``grid`` of run options (each a
list of values), fixed ``options``, the data and the results directory; its options are
`RunConfig`'s fields. The modules, in the order a sweep goes through them:

- `spec`: `load_sweep` parses the file into a frozen `SweepSpec` (unknown keys refused);
  `expand` turns it into `Cell`s (one model, one task, one `RunConfig` each, validated by
  `RunConfig.from_options`), each found again by its id (`cell_id`).
- `states`: `plan` reads each cell's state from the results directory (a complete cell is
  skipped; a failed, interrupted, corrupt or missing one runs again; a running one is left to
  its writer unless asked); `requests_for` groups cells into `RunRequest`s.
- `local`: `run_local` runs the cells here, one model load per group of cells that share a
  model and a config (one `run_and_store` call each), or each group under torchrun.
- `slurm`: `submit_slurm_once` submits one SLURM array job through submitit (one array task per
  cell) and records each cell's job, so a second ``sweep`` submits no cell twice.

A cell's run card records its id with the sweep's name and the cell's grid options
(`SweepTag`), so `report` can draw the grid from the results directory alone.
"""

from __future__ import annotations

from densecap_eval.run.runner import SweepTag
from densecap_eval.run.sweep.local import (
    SweepEvents,
    SweepFailed,
    run_local,
    run_request,
    torchrun_command,
)
from densecap_eval.run.sweep.slurm import (
    Submitted,
    read_ledger,
    slurm_folder,
    slurm_parameters,
    slurm_states,
    slurm_to_submit,
    submit_slurm,
    submit_slurm_once,
)
from densecap_eval.run.sweep.spec import (
    LAUNCHERS,
    VOLATILE_OPTIONS,
    Cell,
    SlurmSpec,
    SweepError,
    SweepSpec,
    cell_id,
    check_names,
    expand,
    load_sweep,
    parse_sweep,
)
from densecap_eval.run.sweep.states import CellState, plan, requests_for, to_run

__all__ = [
    "LAUNCHERS",
    "VOLATILE_OPTIONS",
    "Cell",
    "CellState",
    "SlurmSpec",
    "Submitted",
    "SweepError",
    "SweepEvents",
    "SweepFailed",
    "SweepSpec",
    "SweepTag",
    "cell_id",
    "check_names",
    "expand",
    "load_sweep",
    "parse_sweep",
    "plan",
    "read_ledger",
    "requests_for",
    "run_local",
    "run_request",
    "slurm_folder",
    "slurm_parameters",
    "slurm_states",
    "slurm_to_submit",
    "submit_slurm",
    "submit_slurm_once",
    "to_run",
    "torchrun_command",
]
