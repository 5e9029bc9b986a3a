"""`densecap-eval dashboard`: start the Streamlit dashboard over a results directory.

The app ships inside the package (``densecap_eval.dashboard``, mapped from the top-level
``dashboard/`` folder), so this works after a non-editable install too. It binds 127.0.0.1
unless told otherwise, runs headless and sends no usage statistics.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from densecap_eval.cli.root import app
from densecap_eval.core.errors import DensecapError, ResultsError
from densecap_eval.core.paths import DEFAULT_RESULTS_DIR

DEFAULT_HOST = "127.0.0.1"
RESULTS_ENV = "DENSECAP_EVAL_RESULTS"  # read by dashboard/app.py as well


def app_path() -> Path:
    """The installed dashboard script (``densecap_eval/dashboard/app.py``)."""
    from importlib.resources import files

    path = Path(str(files("densecap_eval.dashboard").joinpath("app.py")))
    if not path.is_file():
        raise DensecapError(f"the dashboard app is missing from the installation ({path})")
    return path


def streamlit_command(
    results_dir: str | os.PathLike[str], *, port: int | None = None, host: str = DEFAULT_HOST
) -> list[str]:
    """The ``python -m streamlit run ...`` command line that serves the dashboard."""
    argv = [sys.executable, "-m", "streamlit", "run", str(app_path()),
            "--server.address", host,
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false"]  # fmt: skip
    if port is not None:
        argv += ["--server.port", str(port)]
    return [*argv, "--", "--results", str(Path(results_dir).expanduser().resolve())]


def launch_dashboard(
    results_dir: str | os.PathLike[str], *, port: int | None = None, host: str = DEFAULT_HOST
) -> int:
    """Serve the dashboard over ``results_dir`` until interrupted; returns Streamlit's exit code.

    An empty results directory is fine (the dashboard explains how to make a first run); one
    that does not exist is an error, found before Streamlit starts.
    """
    path = Path(results_dir).expanduser()
    if not path.is_dir():
        raise ResultsError(
            f"results directory {path} does not exist or is not a directory "
            f"(make a first run with: densecap-eval run --out {path})"
        )
    argv = streamlit_command(path, port=port, host=host)
    env = {**os.environ, RESULTS_ENV: str(path.resolve()),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}  # fmt: skip
    shown = f"http://{host}:{port if port is not None else 8501}"
    typer.echo(f"dashboard over {path} at {shown} (Ctrl-C to stop)", err=True)
    process = subprocess.Popen(argv, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:  # Streamlit got the same Ctrl-C and shuts itself down
        return process.wait()


@app.command("dashboard")
def dashboard_command(
    results: Annotated[
        Path, typer.Option("--results", "-r", help="Results directory to show.")
    ] = DEFAULT_RESULTS_DIR,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port (default: 8501).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (default: 127.0.0.1, this machine only).")
    ] = DEFAULT_HOST,
) -> None:
    """Browse stored results: leaderboard, charts, examples, paired comparisons, run cards."""
    code = launch_dashboard(results, port=port, host=host)
    if code not in (0, -2):  # -2: stopped by SIGINT
        raise DensecapError(f"the dashboard stopped with exit code {code}")
