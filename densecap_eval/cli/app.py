"""Entry point of the `densecap-eval` command.

Each command lives in its own module and registers itself on the root app
(`densecap_eval.cli.root`); they are imported here for that. Heavy libraries are imported inside the commands so that
`densecap-eval --help` stays instant.
"""

from __future__ import annotations

import importlib
import os
import sys

from densecap_eval.cli.errors import HANDLED, exit_code_for
from densecap_eval.cli.logs import setup_logging
from densecap_eval.cli.root import app
from densecap_eval.core.paths import default_cache_dir

__all__ = ["app", "main"]

# The command modules, imported for their registration on `app`, in the order `--help` lists
# their commands (they import `densecap_eval.cli.root`, never this module).
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


def keep_torch_out_of_tmp() -> None:
    """Importing open_clip (through timm) makes torch create ``$TMPDIR/torchinductor_<user>``;
    a run writes only under --out, the cache and the temporary files it removes, so the CLI
    points torch's compiler cache into ours (a user's own setting wins)."""
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
    except HANDLED as exc:
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
