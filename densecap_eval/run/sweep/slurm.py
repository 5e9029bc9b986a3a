"""Submitting sweep cells to SLURM through submitit (the ``slurm`` extra): one array job, one
array task per cell. `submit_slurm_once` records each cell's job (``submitted.json`` beside the
SLURM logs), so a second ``sweep`` submits no cell whose job is still queued or running, and
submits again, once, a cell whose job died.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densecap_eval.results.schema import COMPLETE, RUNNING
from densecap_eval.results.store import slugify, write_json_atomic
from densecap_eval.run import runner
from densecap_eval.run.sweep.local import run_request
from densecap_eval.run.sweep.spec import Cell, SweepError, SweepSpec
from densecap_eval.run.sweep.states import CellState, requests_for


def slurm_folder(spec: SweepSpec) -> Path:
    """Where the SLURM logs, the pickled cells and the submissions ledger go."""
    return spec.slurm.folder or spec.out / ".sweeps" / slugify(spec.name) / "slurm"


def slurm_parameters(spec: SweepSpec, *, nproc_per_node: int | None = None) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for one array task per cell."""
    slurm = spec.slurm
    nproc = nproc_per_node or 1
    params: dict[str, Any] = {
        "name": f"densecap-{spec.name}",
        "timeout_min": slurm.timeout_min,
        "nodes": 1,
        "tasks_per_node": 1,  # one process per cell; torchrun starts the others (nproc > 1)
        "gpus_per_node": slurm.gpus_per_node if slurm.gpus_per_node is not None else nproc,
        "cpus_per_task": slurm.cpus_per_task,
        "mem_gb": slurm.mem_gb,
        "slurm_array_parallelism": slurm.array_parallelism,
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key) is not None:
            params[f"slurm_{key}"] = getattr(slurm, key)
    if slurm.setup:
        params["slurm_setup"] = list(slurm.setup)
    if slurm.additional:
        params["slurm_additional_parameters"] = dict(slurm.additional)
    return params


# --------------------------------------------------------------------------- bookkeeping

# SLURM job states (sacct's State, first word) of a job that is queued or running: its cell is
# not submitted again. Every other known state (COMPLETED, FAILED, CANCELLED, TIMEOUT,
# NODE_FAIL, OUT_OF_MEMORY, PREEMPTED ...) is a job that will not write its cell any more.
SLURM_ALIVE: tuple[str, ...] = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED",
                                "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                                "STAGE_OUT", "SIGNALING")  # fmt: skip
LEDGER_FILE = "submitted.json"


@dataclass(frozen=True)
class Submitted:
    """What the ledger says of a cell: its SLURM job, and that job's state now."""

    cell: str
    job_id: str
    state: str  # sacct's State, or UNKNOWN when sacct has no record of the job

    @property
    def alive(self) -> bool:
        return self.state.split()[0].upper() in SLURM_ALIVE if self.state else False

    @property
    def known(self) -> bool:
        return self.state not in ("", "UNKNOWN")


def _ledger_path(spec: SweepSpec) -> Path:
    return slurm_folder(spec) / LEDGER_FILE


def read_ledger(spec: SweepSpec) -> dict[str, str]:
    """cell id -> the SLURM job id it was last submitted as (``<array>_<index>``)."""
    path = _ledger_path(spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: cannot read the sweep's SLURM submissions ({exc})") from exc
    if not isinstance(data, dict):
        raise SweepError(f"{path}: not a mapping of cell ids to SLURM job ids")
    return {str(k): str(v) for k, v in data.items()}


def _write_ledger(spec: SweepSpec, ledger: Mapping[str, str]) -> None:
    write_json_atomic(_ledger_path(spec), dict(sorted(ledger.items())))


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """job id -> sacct's State for each job (UNKNOWN when sacct has no record), in one call.

    submitit's own sacct reader parses the answer (array ranges included).
    """
    if not job_ids:
        return {}
    try:
        from submitit.slurm.slurm import SlurmInfoWatcher
    except ImportError as exc:
        raise SweepError(
            "the slurm launcher needs submitit: pip install 'densecap-eval[slurm]'"
        ) from exc

    watcher = SlurmInfoWatcher(delay_s=0)
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    return {job_id: watcher.get_state(job_id, mode="cache") for job_id in job_ids}


@contextlib.contextmanager
def _submit_lock(spec: SweepSpec) -> Iterator[None]:
    """One `sweep` at a time decides what to submit (two at once would both submit a cell)."""
    import fcntl

    folder = slurm_folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "submit.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def slurm_to_submit(
    spec: SweepSpec, states: Sequence[CellState], *, rerun_running: bool = False
) -> tuple[list[Cell], list[Submitted]]:
    """The cells to submit, and the submitted cells left alone (queued, running or unknown).

    A cell is submitted when it is not complete and no job of it is queued or running: never
    submitted, or its last job ended without completing it (failed, cancelled, timed out,
    its node died, its run card still says running). A cell whose job sacct does not know is
    left alone unless ``rerun_running`` (as is a running card without a known job).
    """
    ledger = read_ledger(spec)
    open_cells = [s for s in states if s.status != COMPLETE]
    jobs = slurm_states([ledger[s.cell.id] for s in open_cells if s.cell.id in ledger])
    submit: list[Cell] = []
    left: list[Submitted] = []
    for state in open_cells:
        job_id = ledger.get(state.cell.id)
        if job_id is None:
            if state.status != RUNNING or rerun_running:
                submit.append(state.cell)
            continue
        job = Submitted(state.cell.id, job_id, jobs.get(job_id, "UNKNOWN"))
        if job.alive or (not job.known and not rerun_running):
            left.append(job)
        else:
            submit.append(state.cell)
    return submit, left


def submit_slurm_once(
    spec: SweepSpec,
    states: Sequence[CellState],
    *,
    nproc_per_node: int | None = None,
    rerun_running: bool = False,
    cluster: str = "slurm",
) -> tuple[list[Any], list[Submitted]]:
    """Submit the cells that need it (`slurm_to_submit`) and record their jobs in the ledger
    (``<slurm folder>/submitted.json``), under a lock; returns the new jobs and the cells left
    to the jobs already queued or running."""
    with _submit_lock(spec):
        cells, left = slurm_to_submit(spec, states, rerun_running=rerun_running)
        jobs = submit_slurm(spec, cells, nproc_per_node=nproc_per_node, cluster=cluster)
        if jobs:
            ledger = read_ledger(spec)
            ledger.update({cell.id: str(job.job_id) for cell, job in zip(cells, jobs, strict=True)})
            _write_ledger(spec, ledger)
    return jobs, left


def submit_slurm(
    spec: SweepSpec,
    cells: Sequence[Cell],
    *,
    nproc_per_node: int | None = None,
    cluster: str = "slurm",
) -> list[Any]:
    """Submit ``cells`` as one SLURM array job (one task per cell); returns submitit's jobs.

    ``cluster`` is submitit's executor name (``slurm``; ``local`` or ``debug`` run the same
    submission on this machine). The results directory must be on a file system the nodes share.
    """
    try:
        import submitit
    except ImportError as exc:
        raise SweepError(
            "the slurm launcher needs submitit: pip install 'densecap-eval[slurm]'"
        ) from exc
    requests = requests_for(spec, cells, share_model=False)
    runner.validate_all(requests)  # here, in a second, rather than in every array task
    try:
        executor = submitit.AutoExecutor(folder=slurm_folder(spec) / "%j", cluster=cluster)
    except RuntimeError as exc:  # no srun: not on a SLURM cluster
        raise SweepError(f"--launcher slurm: {exc} (submit from a SLURM login node)") from exc
    executor.update_parameters(**slurm_parameters(spec, nproc_per_node=nproc_per_node))
    if not requests:
        return []
    try:
        return list(executor.map_array(run_request, requests, [nproc_per_node] * len(requests)))
    # submitit's own errors (sbatch failed, output not understood) are RuntimeErrors
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        raise SweepError(f"sbatch failed: {exc}") from exc
