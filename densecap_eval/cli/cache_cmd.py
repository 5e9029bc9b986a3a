"""`densecap-eval cache info|clear`: look at or empty the embedding cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from densecap_eval.cli.root import app

cache_app = typer.Typer(
    name="cache",
    help="Inspect or clear the on-disk embedding cache.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(cache_app, name="cache")

CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Cache root (default: $DENSECAP_EVAL_CACHE or the user cache)."
    ),
]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@cache_app.command("info")
def info(
    cache_dir: CacheDir = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Show the models in the cache, their entries and their size on disk."""
    from densecap_eval.engine.cache import EmbeddingCache

    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"--format must be table or json, got {fmt!r}")
    data = EmbeddingCache(cache_dir).info()
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    models = data["models"]
    assert isinstance(models, list)
    typer.echo(f"cache: {data['root']}")
    if not models:
        typer.echo("(empty)")
        return
    for model in models:
        typer.echo(f"{model['fingerprint']}  {model['precision']} on {model['device_type']}")
        for store in model["stores"]:
            typer.echo(
                f"  {store['kind']:<6} {store['variant']:<40} "
                f"{store['entries']:>8} entries  {_human(int(store['bytes'])):>9}"
            )
    typer.echo(
        f"total: {len(models)} models, {data['entries']} entries, {_human(int(data['bytes']))}"
    )


@cache_app.command("clear")
def clear(
    cache_dir: CacheDir = None,
    model_fingerprint: Annotated[
        str | None,
        typer.Option(
            "--model-fingerprint", help="Only this model's entries (as `cache info` shows it)."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete cached embeddings: all of them, or one model's."""
    from densecap_eval.engine.cache import EmbeddingCache

    cache = EmbeddingCache(cache_dir)
    what = f"model {model_fingerprint!r}" if model_fingerprint else "every model"
    if not yes and not typer.confirm(f"Delete cached embeddings of {what} under {cache.root}?"):
        typer.echo("nothing deleted")
        raise typer.Exit(1)
    removed = cache.clear(model_fingerprint)
    if model_fingerprint and removed == 0:
        typer.echo(f"no cached model matches {model_fingerprint!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {removed} model(s) from {cache.root}")
