"""`densecap-eval run`, `report`, `compare` and `demo`: score models and read stored results.

Thin commands: they parse, build a `RunRequest` or pick runs, and call densecap_eval.run and
densecap_eval.results. The options of `run` that set a `RunConfig` field are generated from
the field's declaration (`densecap_eval.cli.run_options`). Heavy imports (torch, the scorers,
pandas) happen inside the commands.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from densecap_eval.cli.errors import Interrupted, NothingToReport, TasksUnavailable, fail
from densecap_eval.cli.logs import setup_rank_logging
from densecap_eval.cli.root import app
from densecap_eval.cli.run_options import config_parameters, config_values, with_parameters
from densecap_eval.cli.sweep_print import print_sweep_grids
from densecap_eval.core.paths import DEFAULT_RESULTS_DIR

if TYPE_CHECKING:
    from densecap_eval.engine.distributed import Group
    from densecap_eval.run.runner import RunEvents, RunRequest, StoredRun


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


# --------------------------------------------------------------------------- run


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


# The options of `run` that are no `RunConfig` field: what to run, and where the results go.
_WHAT = [
    _parameter("model", Annotated[list[str] | None, typer.Option(
        "--model", "-m",
        help="Model spec (repeatable), e.g. open_clip:ViT-B-32/openai. Default: builtin:tiny.",
    )], None),
    _parameter("task", Annotated[list[str] | None, typer.Option(
        "--task", "-t", help="Task (repeatable): dci, dci/all_swaps, dci/retrieval ... Default: dci.",
    )], None),
]  # fmt: skip
_WHERE = [
    _parameter("images_root", Annotated[Path | None, typer.Option(
        "--images-root",
        help="Where a dataset's photos are when not under its data root (SugarCrepe's COCO "
        "val2017, VL-CheckList's images); same as --dataset-option images_root=DIR.",
    )], None),
    _parameter("sample", Annotated[bool, typer.Option(
        "--sample", help="Use the bundled sample dataset.",
    )], False),
    _parameter("out", Annotated[Path | None, typer.Option(
        "--out", "-o", help="Results directory. Default: ./densecap-results.",
    )], None),
]  # fmt: skip
_SWEEP_TAG = _parameter("sweep_tag", Annotated[str | None, typer.Option(
    "--sweep-tag", hidden=True, help="Set by `densecap-eval sweep` (JSON).",
)], None)  # fmt: skip


def _run_parameters() -> list[inspect.Parameter]:
    """`run --help` lists what to run, where the data and the results are, then how to score:
    the generated options up to the dataset options, ours, then the other generated ones."""
    config = config_parameters()
    data = 1 + next(i for i, p in enumerate(config) if p.name == "dataset_options")
    return [*_WHAT, *config[:data], *_WHERE, *config[data:], _SWEEP_TAG]


@app.command("run")
@with_parameters(*_run_parameters())
def run_command(**values: Any) -> None:
    """Evaluate models on tasks; one run directory per (model, task). No arguments: the bundled demo."""
    if values["images_root"]:
        values["dataset_options"] = [*(values["dataset_options"] or []),
                                     f"images_root={values['images_root']}"]  # fmt: skip
    results_dir, run_ids, unavailable = _main_job(
        models=values["model"], tasks=values["task"], sample=values["sample"], out=values["out"],
        sweep_tag=values["sweep_tag"], **config_values(values),
    )  # fmt: skip
    _print_runs(results_dir, run_ids)
    if unavailable:
        raise TasksUnavailable(
            f"{', '.join(unavailable)} could not run here (see the error above); the other "
            "tasks ran and are stored"
        )


def _main_job(
    *,
    models: list[str] | None,
    tasks: list[str] | None,
    sample: bool,
    out: Path | None,
    sweep_tag: str | None = None,
    **options: Any,
) -> tuple[Path, list[str], list[str]]:
    """Run and store; returns the results dir, the new run ids (none on torchrun rank > 0) and
    the tasks that could not run here."""
    from densecap_eval.engine import distributed
    from densecap_eval.run.runner import SweepTag, default_request, run_and_store

    # Under torchrun: join the job; this rank's device is cuda:LOCAL_RANK (or the CPU).
    group = distributed.init_from_env(options.get("device"))
    if group is not None:
        options = {**options, "world_size": group.world_size, "device": group.device}
    # One RunConfig, built here and passed unchanged to the runner, evaluation and the store.
    request = default_request(models=models, tasks=tasks, sample=sample, results_dir=out, **options)
    if sweep_tag is not None:  # a sweep cell run as its own process (densecap_eval.run.sweep)
        request = dataclasses.replace(request, sweep=SweepTag.from_json(sweep_tag))
    if group is not None:
        _announce_ranks(request, group)
    printer = _RunPrinter(request)
    try:
        runs = run_and_store(request, events=printer.events())
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the unfinished runs are marked so in {request.results_dir}"
        ) from None
    if printer.skipped:
        _warn(
            f"{len(printer.skipped)} image(s) skipped; the run cards list them with their reasons"
        )
    if printer.absent:
        _warn(f"{len(printer.absent)} task(s) of a suite not run: their data is not under the "
              "data root, so the suite's result is partial (the others ran and are stored):\n"
              + "\n".join(printer.absent))  # fmt: skip
    if group is not None:
        _print_throughput(runs)
        distributed.shutdown()
    return request.results_dir, [run.run_id for run in runs], printer.unavailable


def _announce_ranks(request: RunRequest, group: Group) -> None:
    """Under torchrun: a log file per rank, and (rank 0) where they are."""
    log_file = setup_rank_logging(request.results_dir, group)
    if group.is_main:
        typer.echo(
            f"{group.world_size} processes ({group.backend}); per-rank logs in {log_file.parent}",
            err=True,
        )


class _RunPrinter:
    """What `run` prints as a request goes, and what it remembers for the end."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.skipped: list[str] = []
        self.unavailable: list[str] = []
        self.absent: list[str] = []  # a partial suite: said once, loudly, after the run

    def events(self) -> RunEvents:
        from densecap_eval.run.runner import RunEvents

        return RunEvents(on_skipped=self.on_skipped, on_stored=self.on_stored,
                         on_model=self.on_model, on_unavailable=self.on_unavailable,
                         on_absent=self.on_absent)  # fmt: skip

    def on_skipped(self, image: str, reason: str) -> None:
        self.skipped.append(image)
        _warn(f"skipped image {image}: {reason}")

    def on_model(self, spec: str) -> None:
        tasks = ", ".join(self.request.run_tasks().values())  # as the protocol runs them
        typer.echo(f"evaluating {spec} on {tasks} ({_roots_text(self.request)})", err=True)

    def on_stored(self, run: StoredRun) -> None:
        typer.echo(f"stored {getattr(run, 'path', run)}", err=True)

    def on_unavailable(self, task: str, message: str) -> None:
        self.unavailable.append(task)
        typer.echo(f"error: {message}", err=True)

    def on_absent(self, task: str, message: str) -> None:
        self.absent.append(f"  {message}")


def _roots_text(request: RunRequest) -> str:
    """The data root each requested task's dataset reads (``--data-root NAME=DIR`` included)."""
    from densecap_eval.run.runner import request_datasets

    names = request_datasets(list(request.run_tasks().values()))
    roots = {name: request.config.root_for(name) or request.data_root for name in names}
    if len(set(roots.values())) == 1:
        return _shown(next(iter(roots.values())))
    return ", ".join(f"{name}={_shown(root)}" for name, root in roots.items())


def _shown(root: object) -> str:
    """A root under the working directory as a relative path (what the user would type), any
    other as it is: a pasted session then names no machine's absolute path."""
    path = Path(str(root))
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(root)


def _print_throughput(runs: list[Any]) -> None:
    """Rank 0, after a torchrun job: what each rank computed, per model (from the run cards)."""
    seen: set[str] = set()
    for run in runs:
        config = run.card.config if run.card is not None else {}
        scaling = config.get("distributed") or {}
        if str(config.get("model")) in seen or not scaling.get("ranks"):
            continue
        seen.add(str(config.get("model")))
        typer.echo(f"throughput per rank, {config.get('model')}:", err=True)
        for rank in scaling["ranks"]:
            parts = [
                f"{phase} {p['items']} in {p['seconds']:.1f} s"
                + (f" ({p['items'] / p['seconds']:.1f}/s)" if p["seconds"] > 0 else "")
                for phase, p in rank["phases"].items()
            ]
            typer.echo(f"  rank {rank['rank']} ({rank['device']}): {', '.join(parts) or 'nothing to do'}",
                       err=True)  # fmt: skip


def _print_runs(results_dir: Path, run_ids: list[str]) -> None:
    from densecap_eval.results.report import print_report, rows_for_runs
    from densecap_eval.results.store import read_run

    if not run_ids:  # a torchrun rank other than 0: rank 0 prints
        return
    rows = rows_for_runs([read_run(results_dir / run_id) for run_id in run_ids])
    print_report(rows, "table")


# --------------------------------------------------------------------------- results


@app.command("report")
def report_command(
    results_dir: Annotated[
        Path, typer.Argument(help="Results directory written by `run`.")
    ] = DEFAULT_RESULTS_DIR,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, markdown, csv or json.")
    ] = "table",
    task: Annotated[
        str | None, typer.Option("--task", help="Only this task (dci keeps every dci/* subtest).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Only models whose spec contains this.")
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="Only the sweeps, each as a grid (model x task) of its cells' states and "
            "headline numbers; the table and markdown reports end with them anyway.",
        ),
    ] = False,
) -> None:
    """Print the complete runs of a results directory; broken runs are skipped with a warning."""
    from densecap_eval.results.report import REPORT_FORMATS, collect_rows, print_report, skip_reason

    if fmt not in REPORT_FORMATS:
        raise fail(f"unknown --format {fmt!r} (known: {', '.join(REPORT_FORMATS)})")
    if sweep:
        if not print_sweep_grids(results_dir, fmt):
            raise NothingToReport(
                f"no sweep runs in {results_dir}; run one with `densecap-eval sweep SWEEP.yaml`"
            )
        return
    rows = collect_rows(
        results_dir,
        task=task,
        model=model,
        on_skip=lambda run: _warn(f"skipping {run.path}: {skip_reason(run)}"),
    )
    if not rows:
        filters = " matching the filters" if task or model else ""
        raise NothingToReport(
            f"no complete runs{filters} in {results_dir}; "
            f"create some with `densecap-eval run --out {results_dir}`"
        )
    print_report(rows, fmt)
    if fmt in ("table", "markdown") and task is None and model is None:  # csv, json: one table
        print_sweep_grids(results_dir, fmt, heading=True)


@app.command("compare")
def compare_command(
    run_a: Annotated[str, typer.Argument(help="Run directory, or run id inside --results.")],
    run_b: Annotated[str, typer.Argument(help="Run directory, or run id inside --results.")],
    results: Annotated[
        Path | None, typer.Option("--results", help="Results directory to look run ids up in.")
    ] = None,
    fmt: Annotated[
        Literal["table", "markdown", "csv", "json"],
        typer.Option("--format", "-f", help="table, markdown, csv or json."),
    ] = "table",
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="Paired bootstrap resamples.")
    ] = 1000,
    permutations: Annotated[
        int,
        typer.Option(
            "--permutations",
            min=1,
            help="Random sign flips of the photo-level test when more than 20 photos differ "
            "(all flips are enumerated below that).",
        ),
    ] = 10_000,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seed of the sign flips and the bootstrap.")
    ] = 0,
) -> None:
    """Paired comparison of two runs on the examples they share.

    The p-value is a sign-flip permutation test over photos (examples of one photo are not
    independent); beside it a bootstrap interval that resamples photos, and McNemar's test
    labelled as assuming independent examples.
    """
    from densecap_eval.results.compare import compare_runs, print_comparison
    from densecap_eval.results.store import resolve_run

    a = resolve_run(run_a, results_dir=results)
    b = resolve_run(run_b, results_dir=results)
    comparison = compare_runs(a, b, n_boot=bootstrap, seed=seed, n_perm=permutations)
    print_comparison(comparison, fmt)


@app.command("demo")
def demo_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Results directory.")
    ] = DEFAULT_RESULTS_DIR,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Dashboard port.")
    ] = None,
    no_dashboard: Annotated[
        bool, typer.Option("--no-dashboard", help="Only run and report.")
    ] = False,
) -> None:
    """The bundled tiny model on the bundled sample, then the dashboard over the results."""
    results_dir, run_ids, _ = _main_job(models=None, tasks=None, sample=True, out=out,
                                        text_policy="truncate")  # fmt: skip
    _print_runs(results_dir, run_ids)
    if no_dashboard:
        return
    try:  # the dashboard's libraries are an optional extra: without them, say how to read
        from densecap_eval.cli.dashboard_cmd import launch_dashboard
    except ImportError as exc:
        typer.echo(
            f"the dashboard is not available ({exc}); view the results with:\n"
            f"  densecap-eval report {results_dir}",
            err=True,
        )
        return
    launch_dashboard(results_dir, port=port)
