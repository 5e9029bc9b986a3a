"""A CLI run of one model on the bundled DCI sample, as the scorer families' tests make it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from densecap_eval.cli.app import main


def run_dci_sample(spec: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``densecap-eval run --task dci --sample`` on ``spec`` (CPU, 20 bootstrap draws, a cache
    under ``tmp_path``); asserts it exits 0 and returns its metrics and its run card."""
    out = tmp_path / "runs"
    argv = ["run", "--model", spec, "--task", "dci", "--sample",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
            "--bootstrap", "20"]  # fmt: skip
    assert main(argv) == 0
    (metrics_file,) = out.glob("*/metrics.json")
    card = json.loads((metrics_file.parent / "run.json").read_text())
    return json.loads(metrics_file.read_text()), card
