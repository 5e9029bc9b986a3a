"""The CLI's errors and how each failure becomes one line on stderr and an exit code.

Commands raise, they do not ``typer.Exit``: under ``main()`` click *returns* an Exit's code
instead of raising it, while a `DensecapError` carries its exit code to `exit_code_for`.

Exit codes: 0 done; 1 the data or the run failed (an unreadable dataset or record, a run that
failed, a results directory with nothing to report); 2 what the user asked for cannot be had (a
usage mistake, an unknown name or value, a model, download or task that cannot be got: each
`DensecapError` subclass in core/errors.py states its code); 130 interrupted or aborted.
"""

from __future__ import annotations

import typer

from densecap_eval.core.errors import DatasetError, DensecapError, ResultsError

USAGE_ERROR = 2
INTERRUPTED = 130


def fail(message: str) -> DensecapError:
    """A usage error to raise: ``error: message`` on stderr, exit 2."""
    return DensecapError(message)


class NothingToReport(ResultsError):
    """A results directory without a complete run (matching the filters): exit 1, not a usage error."""

    exit_code = 1


class TasksUnavailable(DensecapError):
    """Some tasks could not run on this machine (a missing optional tool); the rest were stored."""

    exit_code = 1


class Interrupted(DensecapError):
    """Ctrl-C during a run (typer would turn it into an exit code that `main` drops)."""

    exit_code = INTERRUPTED


class PhotosIncompleteError(DatasetError):
    """`download --verify` found photos missing or unusable (the report is printed above)."""

    exit_code = 1


def exit_code_for(exc: BaseException) -> int:
    """Report ``exc`` (one line on stderr, or click's usage text) and return the exit code.

    Raises ``exc`` again when it is none of the failures a command may end with (a bug).
    """
    if isinstance(exc, DensecapError):
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return INTERRUPTED
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code or 0)
    if isinstance(exc, SystemExit):  # click raises this for --help etc. under standalone_mode=False
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    if isinstance(exc, typer.Abort):  # e.g. Ctrl-D at a confirmation prompt
        typer.echo("aborted", err=True)
        return INTERRUPTED
    if isinstance(exc, typer.TyperException):
        return _usage_error(exc)
    raise exc  # not a failure a command ends with: a bug, with its traceback


# What `exit_code_for` reports; anything else escaping a command is a bug in densecap-eval.
HANDLED: tuple[type[BaseException], ...] = (DensecapError, KeyboardInterrupt, typer.Exit,
                                            SystemExit, typer.Abort, typer.TyperException)  # fmt: skip


def _usage_error(exc: typer.TyperException) -> int:
    """Usage mistakes (unknown option, out-of-range value, missing argument).

    Recent Typer (0.29 here) vendors click as ``typer._click``, whose exceptions are *not*
    ``click.ClickException``, so they are caught through their public base class. ``show()``
    prints click's usage line, the "Try ... --help" hint and one ``Error: ...`` line; usage
    errors exit 2.
    """
    show = getattr(exc, "show", None)
    if callable(show):
        show()
    else:
        typer.echo(f"Error: {exc.format_message()}", err=True)
    return int(exc.exit_code)
