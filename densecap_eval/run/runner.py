"""Run models on tasks and store each (model, task) as one run directory.

This is what ``densecap-eval run`` does, as a library call: validate everything that can be
validated cheaply (task names, model prefixes, the data root, the results directory) before any
model is loaded, then for each model load it once, evaluate all its tasks on one shared
encoding plan, and store one run per requested task through `RunWriter`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import DEFAULT_WORKER_TIMEOUT, RunConfig
from densecap_eval.core.crashpoints import crash_point
from densecap_eval.core.errors import DensecapError, UnknownNameError
from densecap_eval.results.store import RunWriter, StoredRun, ensure_writable

if TYPE_CHECKING:
    from densecap_eval.run.sweep import SweepTag

DEFAULT_MODEL = "builtin:tiny"
DEFAULT_TASK = "dci"
DEFAULT_RESULTS_DIR = "densecap-results"


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
        cfg = self.config
        argv = ["densecap-eval", "run"]
        for model in self.models:
            argv += ["--model", model]
        for task in self.tasks:
            argv += ["--task", task]
        argv += ["--data-root", str(cfg.data_root)]
        for name, root in cfg.data_roots:
            argv += ["--data-root", f"{name}={root}"]
        argv += ["--out", str(self.results_dir)]
        for key, value in cfg.dataset_options:
            argv += ["--dataset-option", f"{key}={'' if value is None else value}"]
        options: list[tuple[str, Any]] = [
            ("--split", cfg.split),
            ("--seed", cfg.seed),
            ("--batch-size", cfg.batch_size),
            ("--device", cfg.device),
            ("--precision", cfg.precision),
            ("--text-policy", cfg.text_policy),
            ("--ties", cfg.ties),
            ("--protocol", cfg.protocol if cfg.protocol != "default" else None),
            ("--cache-dir", cfg.cache_dir),
            ("--bootstrap", cfg.n_boot),
            ("--rerank-from", cfg.rerank_from),
            ("--rerank-k", cfg.rerank_k if cfg.rerank_from is not None else None),
            ("--workers", cfg.num_workers),
            (
                "--worker-timeout",
                cfg.worker_timeout if cfg.worker_timeout != DEFAULT_WORKER_TIMEOUT else None,
            ),
        ]
        argv += [str(x) for flag, value in options if value is not None for x in (flag, value)]
        argv += [flag for flag, on in (("--blind", cfg.blind), ("--no-cache", not cfg.use_cache),
                                       ("--strict", cfg.strict)) if on]  # fmt: skip
        if self.sweep is not None:
            argv += ["--sweep-tag", self.sweep.to_json()]
        return argv


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
    from densecap_eval.scorers import SCORERS

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
    from densecap_eval.tasks import get_task

    return get_task(name)


def task_dataset_name(task: Any) -> str:
    """The dataset a task reads (``dci`` unless the task says otherwise)."""
    name = getattr(task, "dataset", None) or getattr(task, "dataset_name", None)
    return name if isinstance(name, str) else "dci"


def check_data_root(dataset: str, root: Path, options: dict[str, Any] | None = None) -> None:
    """Open the dataset (cheap: the loader reads its index, not its photos) to fail early."""
    from densecap_eval.datasets import load_dataset, options_for

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
    from densecap_eval.tasks import concrete_tasks

    for name in request.tasks:
        check_task(name)  # an unknown name fails here, with the known ones
    datasets = {task_dataset_name(check_task(name)) for name in concrete_tasks(request.tasks)}
    for spec in request.models:
        check_model_spec(spec)
    check_rerank(request)
    if request.config.protocol != "default":
        from densecap_eval.datasets.elevater.protocol import check_protocol

        check_protocol(concrete_tasks(request.tasks), request.config.protocol)
    from densecap_eval.datasets import check_options

    options = dict(request.config.dataset_options)
    check_options(datasets, options)
    for dataset in sorted(datasets):
        root = request.config.root_for(dataset)
        check_data_root(dataset, root if root is not None else request.data_root, options)
    if check_results_dir:
        ensure_writable(request.results_dir)


def check_rerank(request: RunRequest) -> None:
    """--rerank-k >= 1, a known --rerank-from prefix, and no VLM retrieval without it."""
    from densecap_eval.scorers import scorer_kind
    from densecap_eval.tasks import concrete_tasks, needs_gallery

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
    # the model table knows each prefix's kind, so this fails before any model is loaded
    pair_models = [m for m in request.models if scorer_kind(m) == "pair"]
    if retrieval and pair_models:
        raise DensecapError(
            f"{retrieval[0]} with {pair_models[0]}: retrieval with a pair scorer needs "
            "--rerank-from SPEC (an embedding scorer whose top --rerank-k it re-ranks)"
        )


def load_scorer(spec: str, **options: Any) -> Any:
    from densecap_eval.scorers import load_scorer as _load

    return _load(spec, **options)


def evaluate_tasks(scorer: Any, tasks: list[str], *, config: RunConfig) -> list[Any]:
    from densecap_eval.run.evaluate import evaluate_tasks as _evaluate

    return _evaluate(scorer, tasks, config=config)


def run_and_store(request: RunRequest, *, events: RunEvents | None = None) -> list[StoredRun]:
    """Validate, then evaluate every model on every task, storing one run per (model, task).

    Under torchrun (`densecap_eval.engine.distributed.init_from_env` called first) every rank calls
    this: they validate, load and score together (a failure on one fails all), and rank 0
    alone writes the runs; the other ranks store nothing and return an empty list.
    """
    from densecap_eval.engine import distributed

    events = events or RunEvents()
    group = distributed.current()
    main = group is None or group.is_main

    def everywhere(fn: Callable[[], Any]) -> Any:
        return fn() if group is None else group.run(fn)

    everywhere(lambda: validate(request, check_results_dir=main))
    config = request.config
    stored: list[StoredRun] = []
    for spec in request.models:
        if main:
            events.on_model(spec)
        scorer = everywhere(
            partial(
                load_scorer,
                spec,
                device=config.device,
                precision=config.precision,
                text_policy=config.text_policy,
            )
        )
        with contextlib.ExitStack() as stack:
            writers = [
                stack.enter_context(
                    RunWriter(
                        request.results_dir,
                        model_spec=spec,
                        task=task,
                        config=config,
                        command=request.command_line(),
                        **(request.sweep.card_fields(task) if request.sweep else {}),
                    )
                )
                for task in (request.tasks if main else ())  # rank 0 alone writes runs
            ]
            # No rank starts scoring before rank 0's run directories exist, so a rank that
            # dies at its first batch still leaves a run card that says the run failed.
            everywhere(lambda: None)
            results = evaluate_tasks(scorer, list(request.tasks), config=config)
            if not main:
                continue
            seen: set[tuple[str, str]] = set()
            for writer, result in zip(writers, results, strict=True):
                for item in result.skipped:
                    key = (str(getattr(item, "image", item)), str(getattr(item, "reason", "")))
                    if key not in seen:
                        seen.add(key)
                        events.on_skipped(*key)
                for task, message in getattr(result, "unavailable", {}).items():
                    # Data not under the root leaves a partial suite, not a failed run, as long
                    # as something of the suite was scored.
                    only_absent = task in getattr(result, "absent", ()) and result.metrics
                    (events.on_absent if only_absent else events.on_unavailable)(task, message)
                if not result.metrics:  # none of its tasks could run: failed, with the reason
                    writer.fail(
                        "; ".join(dict.fromkeys(getattr(result, "unavailable", {}).values()))
                    )
                    continue
                run = writer.complete(result)
                stored.append(run)
                events.on_stored(run)
                crash_point("run-stored")
    return stored


def default_request(
    *,
    models: Sequence[str] | None,
    tasks: Sequence[str] | None,
    data_root: str | os.PathLike[str] | None,
    sample: bool,
    results_dir: str | os.PathLike[str] | None,
    **options: Any,
) -> RunRequest:
    """Fill in the product's defaults: no model means ``builtin:tiny`` on the bundled sample."""
    from densecap_eval.core.paths import bundled_sample_root, resolve_data_root

    if data_root is not None:
        root = Path(data_root).expanduser()
    elif sample or not models:
        root = bundled_sample_root()
    else:
        root = resolve_data_root(None)
    return RunRequest(
        models=tuple(models or (DEFAULT_MODEL,)),
        tasks=tuple(tasks or (DEFAULT_TASK,)),
        results_dir=Path(results_dir or DEFAULT_RESULTS_DIR).expanduser(),
        config=RunConfig.from_options(data_root=root, **options),
    )
