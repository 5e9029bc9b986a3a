"""Running sweep cells here: one request after another, each in this process or under
``torchrun --standalone --nproc-per-node N`` (what a SLURM array task runs, too)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from densecap_eval.core.errors import DensecapError
from densecap_eval.run import runner
from densecap_eval.run.runner import RunEvents, RunRequest
from densecap_eval.run.sweep.spec import Cell, SweepError, SweepSpec
from densecap_eval.run.sweep.states import requests_for


class SweepFailed(DensecapError):
    """Some cells of a sweep failed; the others ran (exit 1, not a usage error)."""

    exit_code = 1


def torchrun_command(request: RunRequest, nproc_per_node: int) -> list[str]:
    """The command running ``request`` under torchrun: one process per device on this node."""
    argv = request.command_line()
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc_per_node}", "-m", "densecap_eval", *argv[1:]]  # fmt: skip


def run_request(
    request: RunRequest, nproc_per_node: int | None = None, events: RunEvents | None = None
) -> list[str]:
    """Run one request and store its runs; the ids of the new runs (what a SLURM task runs).

    With ``nproc_per_node`` > 1 the request runs under torchrun in a child process (which
    reports on its own stderr; ``events`` hear from a run in this process).
    """
    if nproc_per_node is not None and nproc_per_node > 1:
        before = _run_dirs(request.results_dir)
        # the run's own report goes to stderr: a sweep prints its grid on stdout at the end
        done = subprocess.run(
            torchrun_command(request, nproc_per_node), stdout=_stderr_fd(), check=False
        )
        if done.returncode != 0:
            raise SweepError(
                f"torchrun exited with {done.returncode} on {', '.join(request.tasks)} "
                f"of {request.models[0]}"
            )
        return sorted(_run_dirs(request.results_dir) - before)
    return [run.run_id for run in runner.run_and_store(request, events=events)]


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by something without a descriptor
        return None


def _run_dirs(results_dir: Path) -> set[str]:
    if not results_dir.is_dir():
        return set()
    return {p.name for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}


@dataclass
class SweepEvents:
    """What a launch reports as it goes (the CLI prints it)."""

    on_request: Callable[[RunRequest], None] = lambda request: None
    on_failed: Callable[[RunRequest, str], None] = lambda request, message: None
    run: RunEvents = field(default_factory=RunEvents)


def run_local(
    spec: SweepSpec,
    cells: Sequence[Cell],
    *,
    nproc_per_node: int | None = None,
    events: SweepEvents | None = None,
) -> list[str]:
    """Run ``cells`` here, one request after another; returns the new run ids.

    Every request is validated before the first runs (a typo fails in a second, not after the
    first model). A request that fails is recorded in its run cards and reported through
    ``events.on_failed``; the others still run, then `SweepFailed` says how many failed.
    Ctrl-C stops at once (the unfinished runs are marked interrupted).
    """
    events = events or SweepEvents()
    requests = requests_for(spec, cells)
    runner.validate_all(requests)
    run_ids: list[str] = []
    failed: list[str] = []
    for request in requests:
        events.on_request(request)
        try:
            run_ids += run_request(request, nproc_per_node, events.run)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failing cell does not stop the sweep
            message = str(exc) if isinstance(exc, DensecapError) else f"{type(exc).__name__}: {exc}"
            failed.append(f"{request.models[0]} on {', '.join(request.tasks)}")
            events.on_failed(request, message)
    if failed:
        raise SweepFailed(
            f"{len(failed)} of {len(requests)} cell groups failed ({'; '.join(failed)}); "
            f"their run cards in {spec.out} say why; run the sweep again to retry them"
        )
    return run_ids
