"""``densecap-eval models``: the model table, one row per family a spec prefix reads."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from densecap_eval.cli.data_cmds import OutputFormat
from densecap_eval.cli.root import app

COLUMNS: tuple[str, ...] = ("prefix", "family", "text_limit", "kind", "conversion", "example")


@app.command("models")
def models_command(
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="json or table.")
    ] = OutputFormat.table,
) -> None:
    """List every model spec prefix: family, text limit, scorer kind, conversion, an example."""
    from densecap_eval.scorers import list_models

    rows = [row.as_dict() for row in list_models()]
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in COLUMNS:
        # a spec must stay copyable: prefix, kind and example never wrap
        keep = column in ("prefix", "kind", "example")
        table.add_column(column.replace("_", " "), no_wrap=keep, overflow="fold")
    for row in rows:
        table.add_row(*(str(row[column]) for column in COLUMNS))
    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: never cut a spec at 80 columns
        console.width = 200
    console.print(table)
