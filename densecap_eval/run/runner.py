"""Run models on tasks and store each (model, task) as one run directory.

This is what ``densecap-eval run`` does, as a library call: validate everything that can be
validated cheaply (task names, model prefixes, the data root, the results directory) before any
model is loaded, then for each model load it once, evaluate all its tasks on one shared
encoding plan, and store one run per requested task through `RunWriter`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import RunConfig
from densecap_eval.core.crashpoints import crash_point
from densecap_eval.core.errors import DensecapError, UnknownNameError
from densecap_eval.core.paths import DEFAULT_RESULTS_DIR, bundled_sample_root, resolve_data_root
from densecap_eval.datasets import check_options, load_dataset, options_for
from densecap_eval.results.store import RunWriter, StoredRun, ensure_writable
from densecap_eval.results.sweeps import Options
from densecap_eval.run.evaluate import evaluate_tasks
from densecap_eval.run.protocols import run_tasks
from densecap_eval.run.ranks import everywhere
from densecap_eval.scorers import SCORERS, load_scorer, scorer_kind
from densecap_eval.tasks import concrete_tasks, get_task, needs_gallery

if TYPE_CHECKING:
    from densecap_eval.engine.distributed import Group

DEFAULT_MODEL = "builtin:tiny"
DEFAULT_TASK = "dci"

# `load_scorer` and `evaluate_tasks` are looked up here when a run calls them, so a test can
# put fakes in their place (as it can for the `check_*` functions below).
__all__ = ["evaluate_tasks", "load_scorer"]


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


@dataclass(frozen=True)
class RunRequest:
    """One ``run`` invocation: which models on which tasks, where to store, and one `RunConfig`."""

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    results_dir: Path
    config: RunConfig = field(default_factory=RunConfig)
    command: tuple[str, ...] = field(default=())
    sweep: SweepTag | None = None  # the sweep cells this request computes (their run cards say so)

    @property
    def data_root(self) -> Path:
        if self.config.data_root is None:
            raise DensecapError("the run request has no data root")
        return self.config.data_root

    def command_line(self) -> list[str]:
        """A command line that reproduces this request (recorded in each run card)."""
        if self.command:
            return list(self.command)
        argv = ["densecap-eval", "run"]
        argv += [x for model in self.models for x in ("--model", model)]
        argv += [x for task in self.tasks for x in ("--task", task)]
        argv += ["--out", str(self.results_dir), *self.config.command_line()]
        if self.sweep is not None:
            argv += ["--sweep-tag", self.sweep.to_json()]
        return argv

    def run_tasks(self) -> dict[str, str]:
        """Each requested task -> the task run and stored under the config's protocol
        (`densecap_eval.run.protocols.run_tasks`; a `ConfigError` for one it cannot run)."""
        return run_tasks(self.tasks, self.config.protocol)


@dataclass
class RunEvents:
    """Callbacks through which the caller hears about progress (the CLI prints them)."""

    on_skipped: Callable[[str, str], None] = lambda image, reason: None
    on_stored: Callable[[StoredRun], None] = lambda run: None
    on_model: Callable[[str], None] = lambda spec: None
    # A task that could not run here (a missing optional tool): (task, message).
    on_unavailable: Callable[[str, str], None] = lambda task, message: None
    # A suite member whose data is not under the root, the others stored: (task, message).
    on_absent: Callable[[str, str], None] = lambda task, message: None


def check_model_spec(spec: str) -> None:
    """Fail on a spec whose source prefix no scorer backend knows (no model is loaded)."""
    prefix, sep, _ = spec.partition(":")
    if not sep or not prefix:
        raise UnknownNameError(
            f"model spec {spec!r} has no PREFIX: (known prefixes: {', '.join(SCORERS.names())}; "
            "e.g. open_clip:ViT-B-32/openai)"
        )
    if prefix not in SCORERS:
        raise UnknownNameError(f"model spec {spec!r}: {SCORERS.unknown_message(prefix)}")


def check_task(name: str) -> Any:
    """The task object; an unknown name raises with the list of known tasks."""
    return get_task(name)


def task_dataset_name(task: Any) -> str:
    """The dataset a task reads (``dci`` unless the task says otherwise)."""
    name = getattr(task, "dataset", None) or getattr(task, "dataset_name", None)
    return name if isinstance(name, str) else "dci"


def request_datasets(tasks: Sequence[str]) -> list[str]:
    """The datasets the (concrete) tasks of a request read, sorted."""
    return sorted({task_dataset_name(check_task(name)) for name in concrete_tasks(tasks)})


def check_data_root(dataset: str, root: Path, options: dict[str, Any] | None = None) -> None:
    """Open the dataset (cheap: the loader reads its index, not its photos) to fail early."""
    load_dataset(dataset, root=str(root), **options_for(dataset, options or {}))


def validate(request: RunRequest, *, check_results_dir: bool = True) -> None:
    """Every cheap check, in the order a user would fix them; raises a `DensecapError`.

    ``check_results_dir=False`` skips the write probe in the results directory (torchrun ranks
    other than 0, which write nothing there).
    """
    if not request.models:
        raise DensecapError("no --model given")
    if not request.tasks:
        raise DensecapError("no --task given")
    for name in request.tasks:
        check_task(name)  # an unknown name fails here, with the known ones
    # the tasks the protocol runs (checked against it): their datasets are the ones read
    datasets = request_datasets(list(request.run_tasks().values()))
    for spec in request.models:
        check_model_spec(spec)
    check_rerank(request)
    options = dict(request.config.dataset_options)
    check_options(set(datasets), options)
    for dataset in datasets:
        root = request.config.root_for(dataset)
        check_data_root(dataset, root if root is not None else request.data_root, options)
    if check_results_dir:
        ensure_writable(request.results_dir)


def validate_all(requests: Sequence[RunRequest]) -> None:
    """`validate` every request before the first runs: a typo fails in a second, not after
    the first model."""
    for request in requests:
        validate(request)


def check_rerank(request: RunRequest) -> None:
    """--rerank-k >= 1, a known --rerank-from prefix, and no VLM retrieval without it.

    The scorer catalog knows each prefix's kind (`scorer_kind`), so this fails before any
    model is loaded.
    """
    rerank_from = request.config.rerank_from
    if rerank_from is not None:
        check_model_spec(rerank_from)
        if scorer_kind(rerank_from) == "pair":
            raise DensecapError(
                f"--rerank-from {rerank_from}: the first stage must be an embedding "
                "scorer (open_clip:, hf:, ...), not a pair scorer"
            )
        return
    retrieval = [name for name in concrete_tasks(request.tasks) if needs_gallery(name)]
    pair_models = [m for m in request.models if scorer_kind(m) == "pair"]
    if retrieval and pair_models:
        raise DensecapError(
            f"{retrieval[0]} with {pair_models[0]}: retrieval with a pair scorer needs "
            "--rerank-from SPEC (an embedding scorer whose top --rerank-k it re-ranks)"
        )


def run_and_store(request: RunRequest, *, events: RunEvents | None = None) -> list[StoredRun]:
    """Validate, then evaluate every model on every task, storing one run per (model, task).

    Under torchrun (`densecap_eval.engine.distributed.init_from_env` called first) every rank calls
    this: they validate, load and score together (a failure on one fails all), and rank 0
    alone writes the runs; the other ranks store nothing and return an empty list.
    """
    # engine.distributed imports numpy: only a run pays for it, not the CLI's start
    from densecap_eval.engine import distributed

    events = events or RunEvents()
    group = distributed.current()
    main = group is None or group.is_main
    everywhere(group, lambda: validate(request, check_results_dir=main))
    stored: list[StoredRun] = []
    for spec in request.models:
        if main:
            events.on_model(spec)
        stored += _run_model(request, spec, group, events)
    return stored


def _run_model(
    request: RunRequest, spec: str, group: Group | None, events: RunEvents
) -> list[StoredRun]:
    """Load one model, evaluate all the request's tasks on one plan, store one run per task."""
    config = request.config
    main = group is None or group.is_main
    load = partial(load_scorer, spec, device=config.device, precision=config.precision,
                   text_policy=config.text_policy)  # fmt: skip
    scorer = everywhere(group, load)
    with contextlib.ExitStack() as stack:
        # Each run card names the task the protocol runs (elevater/KEY under clip_benchmark
        # is clip_benchmark/KEY); a sweep cell is still found by the name it asked for.
        tasks = request.run_tasks()
        writers = [
            stack.enter_context(_writer(request, spec, task, asked))
            for asked, task in (tasks.items() if main else ())  # rank 0 alone writes runs
        ]
        # No rank starts scoring before rank 0's run directories exist, so a rank that
        # dies at its first batch still leaves a run card that says the run failed.
        everywhere(group, lambda: None)
        results = evaluate_tasks(scorer, list(tasks.values()), config=config)
        if not main:
            return []
        return _store(writers, results, events)


def _writer(request: RunRequest, spec: str, task: str, asked: str) -> RunWriter:
    """The writer of ``task``'s run, requested as ``asked`` (its sweep cell's name)."""
    return RunWriter(
        request.results_dir,
        model_spec=spec,
        task=task,
        config=request.config,
        command=request.command_line(),
        **(request.sweep.card_fields(asked) if request.sweep else {}),
    )


def _store(
    writers: Sequence[RunWriter], results: Sequence[Any], events: RunEvents
) -> list[StoredRun]:
    """Complete (or fail) each task's run; report skipped images and unavailable tasks.

    ``results`` are `RunResult`s; typed Any as `RunWriter.complete`'s protocol declares
    mutable Mapping members, which a RunResult's dict members do not match for mypy.
    """
    stored: list[StoredRun] = []
    seen: set[tuple[str, str]] = set()
    for writer, result in zip(writers, results, strict=True):
        for item in result.skipped:
            key = (str(getattr(item, "image", item)), str(getattr(item, "reason", "")))
            if key not in seen:
                seen.add(key)
                events.on_skipped(*key)
        for task, message in getattr(result, "unavailable", {}).items():
            # Data not under the root leaves a partial suite, not a failed run, as long as
            # something of the suite was scored.
            only_absent = task in getattr(result, "absent", ()) and result.metrics
            (events.on_absent if only_absent else events.on_unavailable)(task, message)
        if not result.metrics:  # none of its tasks could run: failed, with the reason
            writer.fail("; ".join(dict.fromkeys(getattr(result, "unavailable", {}).values())))
            continue
        run = writer.complete(result)
        stored.append(run)
        events.on_stored(run)
        crash_point("run-stored")
    return stored


def pick_data_root(data_root: str | os.PathLike[str] | None, *, sample: bool) -> Path:
    """The data root a run reads: the one given, the bundled sample (``sample``), else
    $DENSECAP_EVAL_DATA / the per-user default."""
    if data_root is not None:
        return Path(data_root).expanduser()
    if sample:
        return bundled_sample_root()
    return resolve_data_root(None)


def default_request(
    *,
    models: Sequence[str] | None,
    tasks: Sequence[str] | None,
    sample: bool,
    results_dir: str | os.PathLike[str] | None,
    data_root: str | os.PathLike[str] | None = None,
    **options: Any,
) -> RunRequest:
    """Fill in the product's defaults: no model means ``builtin:tiny`` on the bundled sample."""
    return RunRequest(
        models=tuple(models or (DEFAULT_MODEL,)),
        tasks=tuple(tasks or (DEFAULT_TASK,)),
        results_dir=Path(results_dir or DEFAULT_RESULTS_DIR).expanduser(),
        config=RunConfig.from_options(
            data_root=pick_data_root(data_root, sample=sample or not models), **options
        ),
    )
