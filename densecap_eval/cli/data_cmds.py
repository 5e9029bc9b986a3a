"""`densecap-eval download` and `densecap-eval inspect`: get a dataset, and see what it holds."""

from __future__ import annotations

import json
from enum import Enum
from inspect import signature as inspect_signature
from pathlib import Path
from typing import Annotated, Any

import typer

from densecap_eval.cli.errors import PhotosIncompleteError
from densecap_eval.cli.root import app
from densecap_eval.core.errors import DensecapError, UnknownNameError


class OutputFormat(str, Enum):
    json = "json"
    table = "table"


def _known_dataset(name: str) -> None:
    """Raise UnknownNameError (listing the known names) for a dataset nobody registered."""
    from densecap_eval.datasets import DATASETS

    if name not in DATASETS:  # a membership test: the loader itself need not import here
        raise UnknownNameError(DATASETS.unknown_message(name))


@app.command("download")
def download(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. dci or urban1k.")],
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="Data root (dci: gets densely_captioned_images/). Default: "
            "$DENSECAP_EVAL_DATA, then the per-user data folder.",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="dci only: re-check an existing root's photos; download nothing.",
        ),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Fetch the archive from this URL instead (a mirror); "
            "needs --sha256 of that file (mirrors, local test servers).",
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="sha256 the archive must have (64 hex digits)."),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a download progress bar.")
    ] = True,
) -> None:
    """Download a dataset with checksum verification and say what is left to do by hand.

    Every dataset with a downloader (see the error for an unknown one) goes through the same
    path; the downloader's message says what it fetched and what must be fetched by hand.
    For dci: fetches dci.tar.gz (sha256-checked), extracts it safely into
    ROOT/densely_captioned_images/, then checks photos/ against the records and says where to
    get missing photos (SA-1B archive sa_000138.tar, licensed separately). --url and --sha256
    replace the published archive (a mirror, or a local server in tests); --url needs
    --sha256.
    """
    from densecap_eval.core.paths import resolve_data_root
    from densecap_eval.datasets import DOWNLOADERS

    dataset, _, part = dataset.partition("/")  # NAME/PART: one set of a collection
    _known_dataset(dataset)
    if dataset not in DOWNLOADERS:
        raise DensecapError(
            f"no download path for dataset {dataset!r} "
            f"(downloadable: {', '.join(DOWNLOADERS.names())})"
        )
    if verify and dataset != "dci":
        raise DensecapError(
            f"--verify checks DCI's photos only; dataset {dataset!r} has no photo check "
            "(run `densecap-eval inspect` on it instead)"
        )
    if url is not None and sha256 is None:
        raise DensecapError("--url needs --sha256 (the checksum of the file at that URL)")
    data_root = resolve_data_root(root)
    if verify:
        _verify_dci(data_root, url=url, sha256=sha256)
        return
    downloader = DOWNLOADERS.get(dataset)
    extra = {"part": part} if part else {}
    if part and "part" not in inspect_signature(downloader).parameters:
        raise DensecapError(f"dataset {dataset!r} has no parts: `densecap-eval download {dataset}`")
    typer.echo(f"downloading {url or _default_source(dataset)} into {data_root}")
    message = downloader(data_root, url=url, sha256=sha256, progress=progress, **extra)
    # A downloader returns a str; DCI's (a DownloadMessage) keeps what is left to do apart.
    done, todo = getattr(message, "done", str(message)), getattr(message, "todo", "")
    if done:
        typer.echo(done)
    if todo:
        typer.echo(todo, err=True)


def _default_source(dataset: str) -> str:
    """What the download line names when no --url is given (DCI: its published archive)."""
    if dataset == "dci":
        from densecap_eval.datasets.dci.download import DCI_ANNOTATIONS_URL

        return DCI_ANNOTATIONS_URL
    return dataset


def _verify_dci(data_root: Path, *, url: str | None, sha256: str | None) -> None:
    """`download dci --verify`: the photo check alone; a failed check is a one-line error."""
    from densecap_eval.datasets.dci import download as dci_download

    if url is not None or sha256 is not None:
        raise DensecapError("--verify downloads nothing; drop --url/--sha256")
    if not data_root.is_dir():
        raise DensecapError(f"data root {data_root} does not exist; nothing to verify")
    report = dci_download.verify_photos(data_root)
    typer.echo(report.message(), err=not report.ok)
    if not report.ok:
        # An error rather than typer.Exit, so the report ends with the usual one-line `error:`.
        raise PhotosIncompleteError(
            f"photo check failed for {report.photos_dir}: {report.summary()}"
        )


@app.command("inspect")
def inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. dci or urban1k.")],
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="Data root (dci: holding densely_captioned_images/). Default: "
            "$DENSECAP_EVAL_DATA, then the per-user data folder.",
        ),
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Inspect the bundled synthetic DCI sample.")
    ] = False,
    split: Annotated[
        str | None,
        typer.Option("--split", help="Split to inspect (dci default: test; others: every split)."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="json or table.")
    ] = OutputFormat.table,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Stop at the first bad record instead of skipping it."),
    ] = False,
) -> None:
    """Records, skipped images and description token lengths of a split (any dataset).

    Every dataset gets a token-length profile of its description texts: count, min, p25,
    median, p75, p90 and max of the untruncated OpenAI CLIP BPE count and the share over 77
    and over 248 tokens. dci adds entries per subtest and the long-caption and summary lengths.
    """
    from densecap_eval.core.paths import bundled_sample_root
    from densecap_eval.datasets import load_dataset
    from densecap_eval.run.inspect import inspect_dataset

    _known_dataset(dataset)
    if sample and root is not None:
        raise DensecapError("give --root or --sample, not both")
    if sample and dataset != "dci":
        raise DensecapError(f"--sample is the bundled DCI sample; give --root for {dataset!r}")
    data_root = bundled_sample_root() if sample else root
    # Loader options (the `files` column mapping ...) keep their defaults here.
    ds = load_dataset(dataset, root=None if data_root is None else str(data_root), strict=strict)
    report = inspect_dataset(dataset, ds, split=split)
    if report["skipped"]:
        typer.echo(
            f"{len(report['skipped'])} of {report['images']} images skipped "
            "(listed under 'skipped'; --strict stops at the first)",
            err=True,
        )
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report, indent=2))
    elif "subtests" in report:
        _print_table(report)
    else:
        _print_profile(report)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _profile_table(tokens: dict[str, dict[str, Any]], limits: list[int], title: str) -> Any:
    from rich import box
    from rich.table import Table

    # Borderless, so ten columns fit an 80-column terminal.
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    columns = ["text", "count", "min", "p25", "median", "p75", "p90", "max"]
    columns += [f">{limit}" for limit in limits]
    for column in columns:
        table.add_column(column, justify="left" if column == "text" else "right")
    for kind, stats in tokens.items():
        table.add_row(
            kind,
            str(stats["count"]),
            _fmt(stats["min"], "d"),
            *(_fmt(stats[q], ".1f") for q in ("p25", "median", "p75", "p90")),
            _fmt(stats["max"], "d"),
            *(_share(stats[f"over_{limit}"]) for limit in limits),
        )
    return table


def _print_skipped(console: Any, skipped: list[dict[str, str]]) -> None:
    from rich.table import Table

    if not skipped:
        return
    table = Table(title="Skipped images")
    table.add_column("image")
    table.add_column("reason")
    for item in skipped:
        table.add_row(item["image"], item["reason"])
    console.print(table)


def _print_profile(report: dict[str, Any]) -> None:
    """The generic profile (`inspect_records`) as a line and a table."""
    from rich.console import Console

    split = "every split" if report["split"] is None else f"split {report['split']!r}"
    typer.echo(  # plain echo: rich would wrap a long root path mid-sentence
        f"{report['dataset']} {split} at {report['root']}: {report['records']} records, "
        f"{len(report['skipped'])} skipped"
    )
    for line in report.get("about", {}).get("lines", []):  # the loader's own account
        typer.echo(line)
    console = Console(highlight=False)
    title = "OpenAI CLIP tokens per description (untruncated)"
    console.print(_profile_table(report["tokens"], report["limits"], title))
    _print_skipped(console, report["skipped"])


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    typer.echo(  # plain echo: rich would wrap a long root path mid-sentence
        f"{report['dataset']} split {report['split']!r} at {report['root']}: "
        f"{report['images']} images, {len(report['skipped'])} skipped, "
        f"{report['entries']} entries"
    )
    console = Console(highlight=False)
    subtests = Table(title="Entries per subtest")
    subtests.add_column("subtest")
    subtests.add_column("entries", justify="right")
    subtests.add_column("images skipped", justify="right")
    for name, counts in report["subtests"].items():
        subtests.add_row(name, str(counts["entries"]), str(counts["skipped"]))
    console.print(subtests)

    tokens = Table(title="OpenAI CLIP tokens per text (untruncated, incl. start/end)")
    for column in ("text", "count", "mean", "median", "p90", "max", "over 77"):
        tokens.add_column(column, justify="left" if column == "text" else "right")
    for field, stats in report["tokens"].items():
        tokens.add_row(
            field,
            str(stats["count"]),
            _fmt(stats["mean"], ".1f"),
            _fmt(stats["median"], ".1f"),
            _fmt(stats["p90"], ".1f"),
            _fmt(stats["max"], "d"),
            _share(stats["over_77"]),
        )
    console.print(tokens)
    profile = report.get("profile")
    if profile:
        title = "Description texts of the records (as other datasets are profiled)"
        console.print(_profile_table(profile["tokens"], profile["limits"], title))
    _print_skipped(console, report["skipped"])
