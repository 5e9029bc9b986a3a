"""Entry point of the `densecap-eval` command.

Each command lives in its own module and registers itself on `app`; heavy libraries are imported
inside the commands so that `densecap-eval --help` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from densecap_eval.core.errors import DensecapError

app = typer.Typer(
    name="densecap-eval",
    help="Evaluate CLIP-style and vision-language models on densely captioned images.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


# Command modules, imported for their registration side effect on `app`.
COMMAND_MODULES: tuple[str, ...] = (
    "densecap_eval.cli.data_cmds",
    "densecap_eval.cli.models_cmd",
    "densecap_eval.cli.synth_cmd",
    "densecap_eval.cli.cache_cmd",
    "densecap_eval.cli.run_cmds",
    "densecap_eval.cli.dashboard_cmd",
    "densecap_eval.cli.sweep_cmd",
)
for _module in COMMAND_MODULES:
    importlib.import_module(_module)


class _StderrLines(logging.StreamHandler):  # type: ignore[type-arg]
    """One ``warning: ...`` line per record, always on the *current* sys.stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # follows sys.stderr when tests or callers swap it
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def setup_logging() -> None:
    """Library warnings (skipped records, damaged cache shards) go to stderr as one line each.

    The root logger gets a NullHandler when it has none, so that a library calling the module
    level ``logging.info`` (open_clip does) does not trigger ``basicConfig`` and print every
    warning a second time.
    """
    logger = logging.getLogger("densecap_eval")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
    logger.setLevel(logging.WARNING)
    if not logging.root.handlers:
        logging.root.addHandler(logging.NullHandler())


def setup_rank_logging(results_dir: Path, group: Any) -> Path:
    """Under torchrun: each rank logs (info and up) to ``<results>/.logs/<job>/rank<N>.log``.

    ``<job>`` is rank 0's start time, shared with the others; the folder is hidden, so the
    results store ignores it. Only rank 0 keeps printing warnings on stderr (the others'
    are in their files), so a job prints each warning once.
    """
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    job = group.all_gather(f"{stamp}-{os.getpid()}")[0]  # rank 0's name, on every rank
    log_dir = Path(results_dir) / ".logs" / job
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"rank{group.rank}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s rank{group.rank} %(levelname)s %(name)s: %(message)s")
    )
    logger = logging.getLogger("densecap_eval")
    for h in logger.handlers:
        if isinstance(h, _StderrLines):
            h.setLevel(logging.WARNING if group.is_main else logging.CRITICAL + 1)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return path


def keep_torch_out_of_tmp() -> None:
    """Importing open_clip (through timm) makes torch create ``$TMPDIR/torchinductor_<user>``;
    a run writes only under --out, the cache and the temporary files it removes, so the CLI
    points torch's compiler cache into ours (a user's own setting wins)."""
    from densecap_eval.core.paths import default_cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default_cache_dir() / "torchinductor"))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every expected failure becomes one line on stderr and a non-zero exit."""
    setup_logging()
    keep_torch_out_of_tmp()
    try:
        # Under standalone_mode=False click *returns* the code of typer.Exit / Ctrl-C.
        # prog_name: usage lines say `densecap-eval ...` however the CLI was started (tests too).
        code = app(args=argv, prog_name="densecap-eval", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except DensecapError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except SystemExit as exc:  # click raises this for --help etc. under standalone_mode=False
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except typer.Abort:  # e.g. Ctrl-D at a confirmation prompt
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as exc:
        # Usage mistakes (unknown option, out-of-range value, missing argument): recent Typer
        # (0.29 here) vendors click as ``typer._click``, whose exceptions are *not*
        # ``click.ClickException``, so they are caught through their public base class.
        # ``show()`` prints click's usage line, the "Try ... --help" hint and one
        # ``Error: ...`` line; usage errors exit 2.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"Error: {exc.format_message()}", err=True)
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
