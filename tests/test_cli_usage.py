"""Usage mistakes read as such: click's usage line and one ``Error:`` line, exit 2, no traceback.

Every command and subcommand is found by walking the Typer app, so a command added later is
covered without touching this file. Out-of-range numbers are rejected by the option's own range
(``typer.Option(min=..., max=...)``), before any model or dataset is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from densecap_eval.cli.app import app, main


def _command_paths() -> list[tuple[str, ...]]:
    """(), ("run",), ("cache",), ("cache", "info") ...: every group and command of the CLI."""
    import typer.main

    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


COMMAND_PATHS = _command_paths()


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path in COMMAND_PATHS}
    expected = {"", "run", "report", "compare", "demo", "download", "inspect", "synth", "dashboard",
                "cache", "cache info", "cache clear"}  # fmt: skip
    assert expected <= names


def _assert_usage_error(err: str, path: tuple[str, ...], message: str) -> None:
    assert "Traceback" not in err
    usage = " ".join(("Usage: densecap-eval", *path))
    assert err.startswith(usage + " "), err
    assert f"Try '{' '.join(('densecap-eval', *path))} --help' for help." in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Error: {message}"), err


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "densecap-eval")
def test_unknown_option_is_a_usage_error(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_usage_error(captured.err, path, "No such option: --bogus")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    _assert_usage_error(capsys.readouterr().err, (), "No such command 'bogus'")
    assert main(["cache", "bogus"]) == 2
    _assert_usage_error(capsys.readouterr().err, ("cache",), "No such command 'bogus'")


OUT_OF_RANGE = [
    (["run", "--sample", "--batch-size", "0"], "--batch-size"),
    (["run", "--sample", "--seed", "-1"], "--seed"),
    (["run", "--sample", "--bootstrap", "-1"], "--bootstrap"),
    (["run", "--sample", "--rerank-k", "0"], "--rerank-k"),
    (["run", "--sample", "--batch-size", "two"], "--batch-size"),
    (["compare", "a", "b", "--bootstrap", "-5"], "--bootstrap"),
    (["compare", "a", "b", "--seed", "-1"], "--seed"),
    (["demo", "--port", "0"], "--port"),
    (["demo", "--port", "65536"], "--port"),
    (["dashboard", "--port", "-1"], "--port"),
    (["synth", "out", "--images", "0"], "--images"),
    (["synth", "out", "--seed", "-3"], "--seed"),
    (["synth", "out", "--width", "63"], "--width"),
    (["synth", "out", "--height", "4097"], "--height"),
    (["synth", "out", "--jpeg-quality", "0"], "--jpeg-quality"),
    (["synth", "out", "--jpeg-quality", "96"], "--jpeg-quality"),
]


@pytest.mark.parametrize(
    ("argv", "option"), OUT_OF_RANGE, ids=[" ".join(a) for a, _ in OUT_OF_RANGE]
)
def test_out_of_range_number_is_a_usage_error(
    argv: list[str],
    option: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, it lands here
    assert main(argv) == 2
    err = capsys.readouterr().err
    _assert_usage_error(err, (argv[0],), f"Invalid value for '{option}'")
    assert list(tmp_path.iterdir()) == []


def _console_script() -> str:
    found = Path(sys.executable).parent / "densecap-eval"
    if found.is_file():
        return str(found)
    which = shutil.which("densecap-eval")
    if which is None:
        pytest.skip("the densecap-eval console script is not installed")
    return which


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--sample", "--bogus"], "Error: No such option: --bogus"),
        (["run", "--sample", "--batch-size", "0"], "Error: Invalid value for '--batch-size'"),
        (["cache", "clear", "--bogus"], "Error: No such option: --bogus"),
    ],
)
def test_console_script_prints_no_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    """The real entry point, as a user's terminal sees it."""
    env = {**os.environ, "DENSECAP_EVAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [_console_script(), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Usage: densecap-eval {args[0]}")
    assert done.stderr.rstrip().splitlines()[-1].startswith(message)
