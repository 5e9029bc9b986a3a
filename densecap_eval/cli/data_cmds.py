"""`densecap-eval download` and `densecap-eval inspect`: get a dataset, and see what it holds."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from densecap_eval.cli.app import app
from densecap_eval.errors import DatasetError, DensecapError

# Datasets with a download path.
DOWNLOADABLE = ("dci",)


class PhotosIncompleteError(DatasetError):
    """`download --verify` found photos missing or unusable (the report is printed above)."""

    exit_code = 1


class OutputFormat(str, Enum):
    json = "json"
    table = "table"


def _known_dataset(name: str) -> None:
    """Raise UnknownNameError (listing the known names) for a dataset nobody registered."""
    from densecap_eval.datasets import DATASETS

    DATASETS.get(name)


@app.command("download")
def download(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. dci.")],
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="Data root; gets densely_captioned_images/. Default: $DENSECAP_EVAL_DATA, "
            "then the per-user data folder.",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Only re-check an existing root's photos; download nothing."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Fetch the annotations archive from this URL instead (a mirror); "
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
    """Download a dataset's annotations with checksum verification, then check its photos.

    For dci: fetches dci.tar.gz (sha256-checked), extracts it safely into
    ROOT/densely_captioned_images/, then checks photos/ against the records and says where to
    get missing photos (SA-1B archive sa_000138.tar, licensed separately). --url and --sha256
    replace the published archive (a mirror, or a local server in tests); --url needs
    --sha256.
    """
    from densecap_eval.datasets.dci import download as dci_download
    from densecap_eval.paths import resolve_data_root

    _known_dataset(dataset)
    if dataset not in DOWNLOADABLE:
        raise DensecapError(
            f"no download path for dataset {dataset!r} (downloadable: {', '.join(DOWNLOADABLE)})"
        )
    if url is not None and sha256 is None:
        raise DensecapError("--url needs --sha256 (the checksum of the file at that URL)")
    data_root = resolve_data_root(root)
    if verify:
        if url is not None or sha256 is not None:
            raise DensecapError("--verify downloads nothing; drop --url/--sha256")
        if not data_root.is_dir():
            raise DensecapError(f"data root {data_root} does not exist; nothing to verify")
    else:
        typer.echo(f"downloading {url or dci_download.DCI_ANNOTATIONS_URL} into {data_root}")
        base = dci_download.download_dci(
            data_root,
            url=url or dci_download.DCI_ANNOTATIONS_URL,
            sha256=sha256 or dci_download.DCI_ANNOTATIONS_SHA256,
            progress=progress,
        )
        typer.echo(f"annotations extracted to {base}")
    report = dci_download.verify_photos(data_root)
    typer.echo(report.message(), err=not report.ok)
    if verify and not report.ok:
        # An error rather than typer.Exit, so the report ends with the usual one-line `error:`.
        raise PhotosIncompleteError(
            f"photo check failed for {report.photos_dir}: {report.summary()}"
        )


@app.command("inspect")
def inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. dci.")],
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="Data root holding densely_captioned_images/. Default: $DENSECAP_EVAL_DATA, "
            "then the per-user data folder.",
        ),
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Inspect the bundled synthetic sample.")
    ] = False,
    split: Annotated[str, typer.Option("--split", help="Split to inspect.")] = "test",
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="json or table.")
    ] = OutputFormat.table,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Stop at the first bad record instead of skipping it."),
    ] = False,
) -> None:
    """Images, skipped images, entries per subtest and caption token lengths of a split."""
    from densecap_eval.datasets import load_dataset
    from densecap_eval.inspection import inspect_dataset
    from densecap_eval.paths import bundled_sample_root

    _known_dataset(dataset)
    if sample and root is not None:
        raise DensecapError("give --root or --sample, not both")
    data_root = bundled_sample_root() if sample else root
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
    else:
        _print_table(report)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


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
        over = stats["over_77"]
        tokens.add_row(
            field,
            str(stats["count"]),
            _fmt(stats["mean"], ".1f"),
            _fmt(stats["median"], ".1f"),
            _fmt(stats["p90"], ".1f"),
            _fmt(stats["max"], "d"),
            "-" if over is None else f"{100 * over:.1f}%",
        )
    console.print(tokens)

    if report["skipped"]:
        skipped = Table(title="Skipped images")
        skipped.add_column("image")
        skipped.add_column("reason")
        for item in report["skipped"]:
            skipped.add_row(item["image"], item["reason"])
        console.print(skipped)
