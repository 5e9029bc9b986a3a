"""The root Typer application: every command module registers its commands on `app`.

A module of its own so that the command modules and the entry point (`densecap_eval.cli.app`)
both import it without importing each other.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="densecap-eval",
    help="Evaluate CLIP-style and vision-language models on densely captioned images.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
