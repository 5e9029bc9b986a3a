"""The `run` command's options: one per `RunConfig` field that declares a `Flag`, generated.

`densecap_eval.core.config` declares each option beside its field (flag, help, lower bound,
repeatable or not, how a run card's command line records it); the option's type and default
are the field's own. So a new setting is declared once, and `run --help`, the values the
command passes on and `RunConfig.command_line` follow it. Typer reads a command's options from
its signature: `with_parameters` gives the command one built from these declarations.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import Field, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from densecap_eval.cli.errors import fail
from densecap_eval.core.config import Flag, RunConfig, flag_of

F = TypeVar("F", bound=Callable[..., Any])


def _options() -> list[tuple[Field[Any], Flag]]:
    """The fields with an option of their own, in field order."""
    pairs = [(item, flag_of(item)) for item in fields(RunConfig)]
    return [(item, flag) for item, flag in pairs if flag is not None and flag.given_by is None]


def config_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per option, named as its field, annotated for Typer."""
    hints = get_type_hints(RunConfig)
    parameters = []
    for item, flag in _options():
        if flag.repeatable and item.name not in PARSERS:
            raise TypeError(f"the repeatable option {flag.name} has no parser in PARSERS")
        annotation: Any = list[str] | None if flag.repeatable else hints[item.name]
        default = None if flag.repeatable else item.default
        if annotation is bool:
            default = False  # a flag: given or not (`config_values` turns it into the value)
        option = typer.Option(flag.name, help=flag.help, min=flag.min)
        parameters.append(
            inspect.Parameter(
                item.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[annotation, option],
            )
        )
    return parameters


def config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """`RunConfig` options from the command's values (a repeatable option's texts parsed)."""
    options: dict[str, Any] = {}
    for item, flag in _options():
        value = values[item.name]
        if flag.repeatable:
            options.update(PARSERS[item.name](value or []))
        elif isinstance(item.default, bool):
            options[item.name] = (not item.default) if value else item.default
        else:
            options[item.name] = value
    return options


def with_parameters(*parameters: inspect.Parameter) -> Callable[[F], F]:
    """Give a ``**values`` command the signature Typer reads its options from."""

    def apply(command: F) -> F:
        command.__signature__ = inspect.Signature(list(parameters))  # type: ignore[attr-defined]
        return command

    return apply


# --------------------------------------------------------------------------- repeatable texts


def split_data_roots(values: list[str]) -> tuple[Path | None, tuple[tuple[str, Path], ...]]:
    """``--data-root`` values: one plain DIR (the default root) and any ``NAME=DIR`` pairs.

    ``NAME`` must be a registered dataset, so a path that merely contains ``=`` stays a path.
    """
    from densecap_eval.datasets import DATASETS  # the registry discovers every benchmark

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


def _data_roots(values: list[str]) -> dict[str, Any]:
    root, roots = split_data_roots(values)
    return {"data_root": root, "data_roots": roots}


def _dataset_options(values: list[str]) -> dict[str, Any]:
    return {"dataset_options": parse_dataset_options(values)}


# The config fields a repeatable option fills, from its texts (the CLI knows the datasets).
PARSERS: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "data_root": _data_roots,
    "dataset_options": _dataset_options,
}
