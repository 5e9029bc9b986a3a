"""A sweep file: parsed into a frozen `SweepSpec` (unknown keys refused) and expanded into
`Cell`s, one model on one task with one validated `RunConfig` each.

A cell is found by its id (`cell_id`): a hash of its model, task and config, less the options
that cannot change a number (`VOLATILE_OPTIONS`).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from densecap_eval.core.config import ConfigError, RunConfig
from densecap_eval.core.errors import DensecapError
from densecap_eval.results.sweeps import Options
from densecap_eval.run import runner

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
    name = _check_top_level(where, data, source)
    options, grid = _options_and_grid(where, base, data)
    sample, data_root, data_roots = _data_keys(where, base, data)
    launcher = data.get("launcher", "local")
    if launcher not in LAUNCHERS:
        raise SweepError(f"{where}: unknown launcher {launcher!r} (known: {', '.join(LAUNCHERS)})")
    nproc = data.get("nproc_per_node")
    spec = SweepSpec(
        name=name,
        models=_string_list(where, "models", data["models"]),
        tasks=_string_list(where, "tasks", data["tasks"]),
        out=_path(base, data["out"], where, "out"),
        grid=grid,
        options=options,
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


def _check_top_level(where: str, data: Any, source: Path | None) -> str:
    """A mapping of known keys with the required ones; returns the sweep's name."""
    if not isinstance(data, Mapping):
        raise SweepError(f"{where}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    _check_keys(where, "", data, SWEEP_KEYS)
    for key in ("models", "tasks", "out"):
        if data.get(key) is None:
            raise SweepError(f"{where}: missing key {key!r}")
    name = data.get("name", source.stem if source is not None else "sweep")
    if not isinstance(name, str) or not name.strip():
        raise SweepError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    return name.strip()


def _options_and_grid(
    where: str, base: Path, data: Mapping[str, Any]
) -> tuple[Options, tuple[tuple[str, tuple[Any, ...]], ...]]:
    """The fixed ``options`` and the ``grid`` (each key once, each value once)."""
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
    return tuple(options.items()), tuple(grid)


def _data_keys(
    where: str, base: Path, data: Mapping[str, Any]
) -> tuple[bool, Path | None, tuple[tuple[str, Path], ...]]:
    """``sample``, ``data_root`` (not both) and ``data_roots``."""
    sample = data.get("sample", False)
    if not isinstance(sample, bool):
        raise SweepError(f"{where}: 'sample' must be true or false, got {sample!r}")
    data_root = (_path(base, data["data_root"], where, "data_root")
                 if data.get("data_root") is not None else None)  # fmt: skip
    if sample and data_root is not None:
        raise SweepError(f"{where}: give 'data_root' or 'sample: true', not both")
    roots = _mapping(where, "data_roots", data.get("data_roots"))
    data_roots = tuple((str(k), _path(base, v, where, f"data_roots.{k}")) for k, v in roots.items())
    return sample, data_root, data_roots


def check_names(spec: SweepSpec) -> None:
    """Every task is known and every model spec has a known prefix (nothing loads)."""
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


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell: models x grid values x tasks, in that order (a model's cells together)."""
    root = runner.pick_data_root(spec.data_root, sample=spec.sample)
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
