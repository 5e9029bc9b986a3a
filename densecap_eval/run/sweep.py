"""Sweeps: a grid of models x tasks x run options, run as one ordinary run per cell.

A sweep file (YAML) names the models, the tasks, an optional ``grid`` of run options (each a
list of values), fixed ``options``, the data and the results directory. `load_sweep` parses it
into a frozen `SweepSpec` (unknown keys refused), `expand` turns that into `Cell`s (one model,
one task, one `RunConfig` each, validated by `RunConfig.from_options`) and `plan` finds each
cell's state in the results directory: a complete cell is skipped; a failed, interrupted,
corrupt or missing one runs (again); a running one is left to its writer unless asked.

A cell is found by its id (`cell_id`): a hash of its model, task and config, less the options
that cannot change a number (`VOLATILE_OPTIONS`). Its run card records the id with the sweep's
name and the cell's grid options (`RunCard.sweep`, ``cell``, ``cell_options``), so the state of
every cell is read back from the results directory alone, and `report` can draw the grid.

Launchers: `run_local` runs the cells in this process, one model load per group of cells that
share a model and a config (one `run_and_store` call each), or each group under
``torchrun --standalone --nproc-per-node N``; `submit_slurm` submits one SLURM array job
through submitit (the ``slurm`` extra), one array task per cell; `submit_slurm_once` records
each cell's job (``submitted.json`` beside the SLURM logs) so that a second ``sweep`` submits no
cell whose job is still queued or running, and submits again, once, a cell whose job died.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from densecap_eval.core.config import ConfigError, RunConfig
from densecap_eval.core.errors import DensecapError
from densecap_eval.results.schema import COMPLETE, RUNNING
from densecap_eval.results.store import StoredRun
from densecap_eval.results.sweeps import MISSING, RERUN_STATES, Options, cell_runs
from densecap_eval.run.runner import RunEvents, RunRequest

Launcher = Literal["local", "slurm"]
LAUNCHERS: tuple[str, ...] = ("local", "slurm")

# Config fields that cannot change a number: left out of a cell's id, so a cell run with another
# cache, progress display or process count is still the same cell.
VOLATILE_OPTIONS: tuple[str, ...] = ("progress", "use_cache", "cache_dir", "world_size",
                                     "num_workers", "worker_timeout")  # fmt: skip
# Config fields a sweep file may not set under `options` / `grid`: the data roots have their own
# keys, the rest are not the user's to choose per cell.
RESERVED_OPTIONS: tuple[str, ...] = ("data_root", "data_roots", "progress", "world_size")
SWEEP_KEYS: tuple[str, ...] = ("name", "models", "tasks", "grid", "options", "data_root",
                               "data_roots", "sample", "out", "launcher", "nproc_per_node",
                               "slurm")  # fmt: skip
CELL_ID_LENGTH = 12


class SweepError(DensecapError):
    """A sweep file that cannot be run (named with the key and the problem), or a launch error."""


class SweepFailed(DensecapError):
    """Some cells of a sweep failed; the others ran (exit 1, not a usage error)."""

    exit_code = 1


# --------------------------------------------------------------------------- the sweep file


@dataclass(frozen=True)
class SlurmSpec:
    """The ``slurm:`` section: resources of each array task (one cell each).

    ``gpus_per_node`` defaults to ``nproc_per_node`` (1); ``folder`` (logs, pickled cells)
    defaults to ``<out>/.sweeps/<name>/slurm``; ``setup`` are shell lines run before the cell
    (``module load ...``); ``additional`` any other ``#SBATCH`` flags (without ``--``).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    timeout_min: int = 60
    gpus_per_node: int | None = None
    cpus_per_task: int = 8
    mem_gb: float = 32.0
    array_parallelism: int = 16
    setup: tuple[str, ...] = ()
    additional: tuple[tuple[str, str], ...] = ()
    folder: Path | None = None


SLURM_KEYS: tuple[str, ...] = tuple(f.name for f in fields(SlurmSpec))


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file. Relative paths in the file are relative to the file's folder."""

    name: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    out: Path
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    options: Options = ()
    data_root: Path | None = None
    data_roots: tuple[tuple[str, Path], ...] = ()
    sample: bool = False
    launcher: Launcher = "local"
    nproc_per_node: int | None = None
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    source: Path | None = None  # the file it was read from, for messages

    @property
    def where(self) -> str:
        return str(self.source) if self.source is not None else "sweep"


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(where: str, section: str, data: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in data:
        if key not in known:
            raise SweepError(
                f"{where}: unknown key {key!r}{section}{_did_you_mean(str(key), known)}; "
                f"known keys: {', '.join(known)}"
            )


def _string_list(where: str, key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise SweepError(f"{where}: {key!r} must be a non-empty list of strings, got {value!r}")
    doubled = sorted({v for v in items if items.count(v) > 1})
    if doubled:
        raise SweepError(f"{where}: {key!r} lists {', '.join(doubled)} more than once")
    return tuple(items)


def _mapping(where: str, key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(f"{where}: {key!r} must be a mapping, got {value!r}")
    return value


def _path(base: Path, value: Any, where: str, key: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise SweepError(f"{where}: {key!r} must be a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _option_names(where: str, section: str, names: Sequence[str]) -> None:
    """Refuse option names that are no `RunConfig` field, or one a sweep may not set."""
    known = [f.name for f in fields(RunConfig) if f.name not in RESERVED_OPTIONS]
    for name in names:
        if name in RESERVED_OPTIONS:
            hint = (" (give it as the top-level key)" if name in ("data_root", "data_roots")
                    else " (not an option a sweep sets)")  # fmt: skip
            raise SweepError(f"{where}: {section} option {name!r} is not allowed here{hint}")
        if name not in known:
            raise SweepError(
                f"{where}: unknown {section} option {name!r}{_did_you_mean(name, known)}; "
                f"known: {', '.join(known)}"
            )


def _int(where: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SweepError(f"{where}: {key!r} must be an integer >= {low}, got {value!r}")
    return value


def _slurm_spec(where: str, base: Path, raw: Any) -> SlurmSpec:
    data = dict(_mapping(where, "slurm", raw))
    _check_keys(where, " in 'slurm'", data, SLURM_KEYS)
    kwargs: dict[str, Any] = {}
    for key in ("partition", "account", "qos", "constraint"):
        if data.get(key) is not None:
            kwargs[key] = str(data[key])
    for key, low in (("timeout_min", 1), ("gpus_per_node", 0), ("cpus_per_task", 1),
                     ("array_parallelism", 1)):  # fmt: skip
        if data.get(key) is not None:
            kwargs[key] = _int(where, f"slurm.{key}", data[key], low)
    if data.get("mem_gb") is not None:
        mem = data["mem_gb"]
        if isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0:
            raise SweepError(f"{where}: 'slurm.mem_gb' must be a number > 0, got {mem!r}")
        kwargs["mem_gb"] = float(mem)
    if data.get("setup") is not None:
        kwargs["setup"] = _string_list(where, "slurm.setup", data["setup"])
    if data.get("additional") is not None:
        extra = _mapping(where, "slurm.additional", data["additional"])
        kwargs["additional"] = tuple((str(k), str(v)) for k, v in extra.items())
    if data.get("folder") is not None:
        kwargs["folder"] = _path(base, data["folder"], where, "slurm.folder")
    return SlurmSpec(**kwargs)


def parse_sweep(data: Any, *, source: Path | None = None) -> SweepSpec:
    """A `SweepSpec` from the parsed YAML (a mapping); relative paths resolve from ``source``'s
    folder (else the working directory). Raises `SweepError` naming the file and the key."""
    where = str(source) if source is not None else "sweep"
    base = source.resolve().parent if source is not None else Path.cwd()
    if not isinstance(data, Mapping):
        raise SweepError(f"{where}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    _check_keys(where, "", data, SWEEP_KEYS)
    for key in ("models", "tasks", "out"):
        if data.get(key) is None:
            raise SweepError(f"{where}: missing key {key!r}")
    name = data.get("name", source.stem if source is not None else "sweep")
    if not isinstance(name, str) or not name.strip():
        raise SweepError(f"{where}: 'name' must be a non-empty string, got {name!r}")

    options = dict(_mapping(where, "options", data.get("options")))
    _option_names(where, "'options'", list(options))
    raw_grid = _mapping(where, "grid", data.get("grid"))
    _option_names(where, "'grid'", list(raw_grid))
    grid: list[tuple[str, tuple[Any, ...]]] = []
    for key, values in raw_grid.items():
        if key in options:
            raise SweepError(f"{where}: {key!r} is both in 'options' and in 'grid'")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: grid option {key!r} must be a non-empty list of values")
        texts = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(texts)) != len(texts):
            raise SweepError(f"{where}: grid option {key!r} lists a value more than once")
        grid.append((str(key), tuple(values)))
    if options.get("cache_dir") is not None:
        options["cache_dir"] = _path(base, options["cache_dir"], where, "options.cache_dir")

    sample = data.get("sample", False)
    if not isinstance(sample, bool):
        raise SweepError(f"{where}: 'sample' must be true or false, got {sample!r}")
    data_root = (_path(base, data["data_root"], where, "data_root")
                 if data.get("data_root") is not None else None)  # fmt: skip
    if sample and data_root is not None:
        raise SweepError(f"{where}: give 'data_root' or 'sample: true', not both")
    roots = _mapping(where, "data_roots", data.get("data_roots"))
    data_roots = tuple((str(k), _path(base, v, where, f"data_roots.{k}")) for k, v in roots.items())
    launcher = data.get("launcher", "local")
    if launcher not in LAUNCHERS:
        raise SweepError(f"{where}: unknown launcher {launcher!r} (known: {', '.join(LAUNCHERS)})")
    nproc = data.get("nproc_per_node")
    spec = SweepSpec(
        name=name.strip(),
        models=_string_list(where, "models", data["models"]),
        tasks=_string_list(where, "tasks", data["tasks"]),
        out=_path(base, data["out"], where, "out"),
        grid=tuple(grid),
        options=tuple(options.items()),
        data_root=data_root,
        data_roots=data_roots,
        sample=sample,
        launcher=launcher,
        nproc_per_node=None if nproc is None else _int(where, "nproc_per_node", nproc, 1),
        slurm=_slurm_spec(where, base, data.get("slurm")),
        source=source,
    )
    expand(spec)  # every cell's config is validated now, before anything runs
    check_names(spec)
    return spec


def check_names(spec: SweepSpec) -> None:
    """Every task is known and every model spec has a known prefix (nothing loads)."""
    from densecap_eval.run import runner

    for key, names, check in (("tasks", spec.tasks, runner.check_task),
                              ("models", spec.models, runner.check_model_spec)):  # fmt: skip
        for name in names:
            try:
                check(name)
            except DensecapError as exc:
                raise SweepError(f"{spec.where}: {key}: {exc}") from exc


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a sweep file (YAML)."""
    import yaml

    source = Path(path).expanduser()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {source}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SweepError(f"{source}: not valid YAML{at}: {problem}") from exc
    return parse_sweep(data, source=source)


# --------------------------------------------------------------------------- cells


def cell_id(model: str, task: str, config: RunConfig) -> str:
    """A stable id of what a cell computes: model spec, task and config, less `VOLATILE_OPTIONS`."""
    kept = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_OPTIONS}
    text = json.dumps({"model": model, "task": task, "config": kept}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:CELL_ID_LENGTH]


@dataclass(frozen=True)
class Cell:
    """One model on one task with one config: one run directory once it has run."""

    model: str
    task: str
    config: RunConfig
    options: Options  # the grid values of this cell, in grid order
    id: str

    @property
    def label(self) -> str:
        """How grids name the model (`densecap_eval.results.sweeps.model_label`)."""
        return f"{self.model} (blind)" if self.config.blind else self.model


def data_root_of(spec: SweepSpec) -> Path:
    """The sweep's default data root, as `run` would pick it: the file's, the bundled sample
    (``sample: true``), else $DENSECAP_EVAL_DATA / the per-user default."""
    from densecap_eval.core.paths import bundled_sample_root, resolve_data_root

    if spec.data_root is not None:
        return spec.data_root
    if spec.sample:
        return bundled_sample_root()
    return resolve_data_root(None)


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell: models x grid values x tasks, in that order (a model's cells together)."""
    root = data_root_of(spec)
    keys = [key for key, _ in spec.grid]
    cells = []
    for model in spec.models:
        for values in itertools.product(*(vals for _, vals in spec.grid)):
            grid_options = tuple(zip(keys, values, strict=True))
            try:
                config = RunConfig.from_options(
                    data_root=root, data_roots=spec.data_roots,
                    **dict(spec.options), **dict(grid_options),
                )  # fmt: skip
            except ConfigError as exc:
                where = f"grid {_options_text(grid_options)}" if grid_options else "options"
                raise SweepError(f"{spec.where}: {where}: {exc}") from exc
            except TypeError as exc:  # a value of the wrong shape (a list for a path ...)
                raise SweepError(f"{spec.where}: options: {exc}") from exc
            for task in spec.tasks:
                cells.append(Cell(model, task, config, grid_options, cell_id(model, task, config)))
    return cells


def _options_text(options: Options) -> str:
    return ", ".join(f"{k}={v}" for k, v in options)


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
    from densecap_eval.results.store import list_runs

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


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class SweepTag:
    """What the run cards of a request's runs record about their sweep cells.

    ``cells`` pairs each task of the request with its cell id; ``options`` are the cells' grid
    values (every cell of one request shares them). Travels to a ``run`` subprocess as JSON.
    """

    sweep: str
    cells: tuple[tuple[str, str], ...]
    options: Options = ()

    def card_fields(self, task: str) -> dict[str, Any]:
        """Keyword arguments of `RunWriter` for the run of ``task``."""
        return {"sweep": self.sweep, "cell": dict(self.cells).get(task),
                "cell_options": dict(self.options)}  # fmt: skip

    def to_json(self) -> str:
        data = {"sweep": self.sweep, "cells": dict(self.cells), "options": dict(self.options)}
        return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str) -> SweepTag:
        try:
            data = json.loads(text)
            return cls(
                sweep=str(data["sweep"]),
                cells=tuple((str(k), str(v)) for k, v in data["cells"].items()),
                options=tuple(data.get("options", {}).items()),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DensecapError(f"--sweep-tag is not a sweep tag ({exc}): {text!r}") from exc


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


def torchrun_command(request: RunRequest, nproc_per_node: int) -> list[str]:
    """The command running ``request`` under torchrun: one process per device on this node."""
    argv = request.command_line()
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc_per_node}", "-m", "densecap_eval", *argv[1:]]  # fmt: skip


def run_request(request: RunRequest, nproc_per_node: int | None = None) -> list[str]:
    """Run one request and store its runs; the ids of the new runs (what a SLURM task runs).

    With ``nproc_per_node`` > 1 the request runs under torchrun in a child process.
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
    from densecap_eval.run.runner import run_and_store

    return [run.run_id for run in run_and_store(request)]


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by something without a descriptor
        return None


def _run_dirs(results_dir: Path) -> set[str]:
    if not results_dir.is_dir():
        return set()
    return {p.name for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}


# --------------------------------------------------------------------------- launchers


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
    from densecap_eval.run import runner

    events = events or SweepEvents()
    requests = requests_for(spec, cells)
    for request in requests:
        runner.validate(request)
    run_ids: list[str] = []
    failed: list[str] = []
    for request in requests:
        events.on_request(request)
        try:
            if nproc_per_node is not None and nproc_per_node > 1:
                run_ids += run_request(request, nproc_per_node)
            else:
                stored = runner.run_and_store(request, events=events.run)
                run_ids += [run.run_id for run in stored]
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


def slurm_folder(spec: SweepSpec) -> Path:
    from densecap_eval.results.store import slugify

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


# --------------------------------------------------------------------------- SLURM bookkeeping

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
    from densecap_eval.results.store import write_json_atomic

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
    from densecap_eval.run import runner

    requests = requests_for(spec, cells, share_model=False)
    for request in requests:  # here, in a second, rather than in every array task
        runner.validate(request)
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
