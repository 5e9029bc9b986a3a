"""`densecap-eval run`, `report`, `compare` and `demo`: score models and read stored results.

Thin commands: they parse, build a `RunRequest` or pick runs, and call densecap_eval.results.
Heavy imports (torch, the scorers, pandas) happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from densecap_eval.cli.app import app
from densecap_eval.core.config import DEFAULT_WORKER_TIMEOUT
from densecap_eval.core.errors import DensecapError, ResultsError

DEFAULT_RESULTS_DIR = Path("densecap-results")


class NothingToReport(ResultsError):
    """A results directory without a complete run (matching the filters): exit 1, not a usage error."""

    exit_code = 1


class TasksUnavailable(DensecapError):
    """Some tasks could not run on this machine (a missing optional tool); the rest were stored."""

    exit_code = 1


class Interrupted(DensecapError):
    """Ctrl-C during a run (typer would turn it into an exit code that `main` drops)."""

    exit_code = 130


# Errors are raised, not `typer.Exit`ed: under `main()` click returns an Exit's code instead of
# raising it, and `main` does not pass that code on, while DensecapError gets its exit code.
def fail(message: str) -> DensecapError:
    return DensecapError(message)


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def split_data_roots(values: list[str]) -> tuple[Path | None, tuple[tuple[str, Path], ...]]:
    """``--data-root`` values: one plain DIR (the default root) and any ``NAME=DIR`` pairs.

    ``NAME`` must be a registered dataset, so a path that merely contains ``=`` stays a path.
    """
    from densecap_eval.datasets import DATASETS

    plain: list[str] = []
    named: dict[str, Path] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if sep and name in DATASETS:
            if name in named:
                raise fail(f"--data-root {name}= given twice")
            named[name] = Path(rest).expanduser()
        else:
            plain.append(value)
    if len(plain) > 1:
        raise fail(
            f"--data-root given {len(plain)} plain folders ({', '.join(plain)}); give one, and "
            "NAME=DIR for the others (NAME: a dataset, e.g. urban1k=~/data/Urban1k)"
        )
    return (Path(plain[0]).expanduser() if plain else None), tuple(named.items())


def parse_dataset_options(values: list[str]) -> tuple[tuple[str, str | None], ...]:
    """``--dataset-option KEY=VALUE`` values as pairs (``KEY=`` gives None: no such column)."""
    pairs: dict[str, str | None] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise fail(f"--dataset-option {value!r}: expected KEY=VALUE, e.g. caption_column=text")
        if key in pairs:
            raise fail(f"--dataset-option {key} given twice")
        pairs[key] = rest or None
    return tuple(pairs.items())


def _main_job(
    *,
    models: list[str] | None,
    tasks: list[str] | None,
    data_root: list[str] | None,
    sample: bool,
    out: Path | None,
    sweep_tag: str | None = None,
    **options: object,
) -> tuple[Path, list[str], list[str]]:
    """Run and store; returns the results dir, the new run ids (none on torchrun rank > 0) and
    the tasks that could not run here."""
    from densecap_eval.engine import distributed
    from densecap_eval.run.runner import RunEvents, default_request, run_and_store

    # Under torchrun: join the job; this rank's device is cuda:LOCAL_RANK (or the CPU).
    group = distributed.init_from_env(options.get("device"))  # type: ignore[arg-type]
    if group is not None:
        options = {**options, "world_size": group.world_size, "device": group.device}
    # One RunConfig, built here and passed unchanged to the runner, evaluation and the store.
    root, roots = split_data_roots(data_root or [])
    request = default_request(
        models=models, tasks=tasks, data_root=root, sample=sample, results_dir=out,
        data_roots=roots, **options,
    )  # fmt: skip
    if sweep_tag is not None:  # a sweep cell run as its own process (densecap_eval.run.sweep)
        import dataclasses

        from densecap_eval.run.sweep import SweepTag

        request = dataclasses.replace(request, sweep=SweepTag.from_json(sweep_tag))
    if group is not None:
        from densecap_eval.cli.app import setup_rank_logging

        log_file = setup_rank_logging(request.results_dir, group)
        if group.is_main:
            typer.echo(
                f"{group.world_size} processes ({group.backend}); per-rank logs in "
                f"{log_file.parent}",
                err=True,
            )
    skipped: list[str] = []

    def on_skipped(image: str, reason: str) -> None:
        skipped.append(image)
        _warn(f"skipped image {image}: {reason}")

    def on_model(spec: str) -> None:
        tasks_text = ", ".join(request.tasks)
        typer.echo(f"evaluating {spec} on {tasks_text} ({_roots_text(request)})", err=True)

    def on_stored(run: object) -> None:
        typer.echo(f"stored {getattr(run, 'path', run)}", err=True)

    unavailable: list[str] = []

    def on_unavailable(task: str, message: str) -> None:
        unavailable.append(task)
        typer.echo(f"error: {message}", err=True)

    absent: list[str] = []  # a partial suite: said once, loudly, after the run; not a failure

    try:
        runs = run_and_store(
            request,
            events=RunEvents(
                on_skipped=on_skipped,
                on_stored=on_stored,
                on_model=on_model,
                on_unavailable=on_unavailable,
                on_absent=lambda task, message: absent.append(f"  {message}"),
            ),
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the unfinished runs are marked so in {request.results_dir}"
        ) from None
    if skipped:
        _warn(f"{len(skipped)} image(s) skipped; the run cards list them with their reasons")
    if absent:
        _warn(f"{len(absent)} task(s) of a suite not run: their data is not under the data "
              "root, so the suite's result is partial (the others ran and are stored):\n"
              + "\n".join(absent))  # fmt: skip
    if group is not None:
        _print_throughput(runs)
        distributed.shutdown()
    return request.results_dir, [run.run_id for run in runs], unavailable


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


@app.command("run")
def run_command(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model spec (repeatable), e.g. open_clip:ViT-B-32/openai. Default: builtin:tiny.",
        ),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "-t",
            help="Task (repeatable): dci, dci/all_swaps, dci/retrieval ... Default: dci.",
        ),
    ] = None,
    data_root: Annotated[
        list[str] | None,
        typer.Option(
            "--data-root",
            help="Dataset root (the folder of the release's files), or NAME=DIR for one dataset "
            "(repeatable: several datasets in one command). Default: the bundled sample without "
            "--model, else $DENSECAP_EVAL_DATA.",
        ),
    ] = None,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset-option",
            help="KEY=VALUE for the dataset loaders (repeatable), e.g. caption_column=text for "
            "your own files (KEY= means none).",
        ),
    ] = None,
    images_root: Annotated[
        Path | None,
        typer.Option(
            "--images-root",
            help="Where a dataset's photos are when not under its data root (SugarCrepe's COCO "
            "val2017, VL-CheckList's images); same as --dataset-option images_root=DIR.",
        ),
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Use the bundled sample dataset.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Results directory. Default: ./densecap-results."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="cpu, cuda, cuda:1, mps ... Default: best available."),
    ] = None,
    precision: Annotated[
        Literal["fp32", "fp16", "bf16"],
        typer.Option(
            "--precision",
            help="fp32 (default on every device: what the reference computes), or bf16 / fp16 "
            "under autocast (faster on a GPU; DCI subtests then marked not reference-exact).",
        ),
    ] = "fp32",
    text_policy: Annotated[
        Literal["truncate", "chunk-mean", "error"],
        typer.Option(
            "--text-policy", help="Past the model's text limit: truncate, chunk-mean or error."
        ),
    ] = "truncate",
    split: Annotated[
        str | None,
        typer.Option("--split", help="Dataset split. Default: the task's own (test for DCI)."),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seed of the bootstrap intervals.")
    ] = 0,
    blind: Annotated[
        bool,
        typer.Option("--blind", help="Blind control: every image region replaced by uniform grey."),
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")
    ] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir")] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Stop at the first unusable image instead of skipping it."),
    ] = False,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals.")
    ] = 1000,
    rerank_from: Annotated[
        str | None,
        typer.Option(
            "--rerank-from",
            help="Retrieval with a pair scorer (vqascore:, captionlik:, itm:): the embedding "
            "scorer whose top --rerank-k candidates it re-ranks, e.g. open_clip:ViT-B-32/openai.",
        ),
    ] = None,
    ties: Annotated[
        Literal["pessimistic", "first"],
        typer.Option(
            "--ties",
            help="Retrieval ties: pessimistic (a tie counts against the model) or first (the "
            "first index of the maximum, as Long-CLIP/LoTLIP compute it).",
        ),
    ] = "pessimistic",
    protocol: Annotated[
        Literal["default", "elevater-dci"],
        typer.Option(
            "--protocol",
            help="Zero-shot classification (elevater/...): default (the model's own "
            "preprocessing) or elevater-dci (DCI's ELEVATER run: ImageNet mean/std, ELEVATER's "
            "prompt cleaning). Recorded on the run card.",
        ),
    ] = "default",
    rerank_k: Annotated[
        int,
        typer.Option(
            "--rerank-k",
            min=1,
            help="Candidates per query the pair scorer re-ranks (>= 10 keeps R@10 its own).",
        ),
    ] = 10,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Processes decoding photos (0: none, decode in the main process). Default: "
            "by the number of photos and CPUs.",
        ),
    ] = None,
    worker_timeout: Annotated[
        float,
        typer.Option(
            "--worker-timeout",
            min=1,
            help="Seconds a decoding process may take to deliver one batch before the run "
            "stops with an error (rather than wait for ever).",
        ),
    ] = DEFAULT_WORKER_TIMEOUT,
    sweep_tag: Annotated[
        str | None,
        typer.Option("--sweep-tag", hidden=True, help="Set by `densecap-eval sweep` (JSON)."),
    ] = None,
) -> None:
    """Evaluate models on tasks; one run directory per (model, task). No arguments: the bundled demo."""
    results_dir, run_ids, unavailable = _main_job(
        sweep_tag=sweep_tag,
        models=model,
        tasks=task,
        data_root=data_root,
        sample=sample,
        out=out,
        dataset_options=parse_dataset_options(
            [*(dataset_option or []), *([f"images_root={images_root}"] if images_root else [])]
        ),
        split=split,
        seed=seed,
        batch_size=batch_size,
        device=device,
        precision=precision,
        text_policy=text_policy,
        ties=ties,
        protocol=protocol,
        blind=blind,
        use_cache=not no_cache,
        cache_dir=cache_dir,
        strict=strict,
        n_boot=bootstrap,
        rerank_from=rerank_from,
        rerank_k=rerank_k,
        num_workers=workers,
        worker_timeout=worker_timeout,
    )
    _print_runs(results_dir, run_ids)
    if unavailable:
        raise TasksUnavailable(
            f"{', '.join(unavailable)} could not run here (see the error above); the other "
            "tasks ran and are stored"
        )


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
    from densecap_eval.cli.sweep_cmd import print_sweep_grids
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
    results_dir, run_ids, _ = _main_job(models=None, tasks=None, data_root=None, sample=True, out=out,
                                     text_policy="truncate")  # fmt: skip
    _print_runs(results_dir, run_ids)
    if no_dashboard:
        return
    try:
        from densecap_eval.cli.dashboard_cmd import launch_dashboard
    except ImportError as exc:
        typer.echo(
            f"the dashboard is not available ({exc}); view the results with:\n"
            f"  densecap-eval report {results_dir}",
            err=True,
        )
        return
    launch_dashboard(results_dir, port=port)


def _roots_text(request: Any) -> str:
    """The data root each requested task's dataset reads (``--data-root NAME=DIR`` included)."""
    from densecap_eval.run.runner import check_task, task_dataset_name
    from densecap_eval.tasks import concrete_tasks

    names = sorted({task_dataset_name(check_task(t)) for t in concrete_tasks(request.tasks)})
    roots = {name: request.config.root_for(name) or request.data_root for name in names}
    if len(set(roots.values())) == 1:
        return str(next(iter(roots.values())))
    return ", ".join(f"{name}={root}" for name, root in roots.items())
