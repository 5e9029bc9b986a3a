"""A sweep on SLURM, without a cluster: a cell is never submitted twice, a dead job's once again.

Fake ``sbatch`` and ``sacct`` on PATH keep their queue in a file, as a cluster would: ``sbatch``
answers "Submitted batch job N" (what submitit parses) and queues one PENDING line per array
task; ``sacct -o JobID,State,NodeList --parsable2 -j N`` prints those lines (submitit's reader
parses them). submitit calls ``sbatch`` to submit and ``sacct`` to ask for states (not
``squeue``); a ``srun`` that exists only makes submitit believe it is on a cluster. The test
changes job states in the queue file, as SLURM would, and runs ``sweep`` again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from densecap_eval.cli.app import main
from densecap_eval.results.store import RunWriter
from densecap_eval.run.sweep import SweepTag, expand, load_sweep, read_ledger

pytest.importorskip("submitit")

SBATCH = """#!/bin/sh
# fake sbatch: a new job id, one PENDING line per array task in the queue file
dir=$(dirname "$0")
n=$(cat "$dir/next_id" 2>/dev/null || echo 100)
echo $((n + 1)) > "$dir/next_id"
echo "$n" >> "$dir/sbatch_calls"
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$1")
for i in $(seq 0 "${last:-0}"); do echo "${n}_${i}|PENDING|" >> "$dir/queue"; done
echo "Submitted batch job $n"
"""
SACCT = """#!/bin/sh
# fake sacct: the queue file, under the header submitit asks for
dir=$(dirname "$0")
echo "JobID|State|NodeList"
cat "$dir/queue" 2>/dev/null
"""
CLI = "import sys; from densecap_eval.cli.app import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("sacct", SACCT), ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def _sweep(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    data = {"models": ["builtin:tiny"], "tasks": ["dci/all_swaps", "dci/retrieval"],
            "sample": True, "out": "results", "launcher": "slurm", "options": {"n_boot": 0}}  # fmt: skip
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _set_state(bin_dir: Path, job_id: str, state: str) -> None:
    queue = bin_dir / "queue"
    lines = queue.read_text().splitlines()
    queue.write_text("".join(f"{job_id}|{state}|\n" if line.split("|")[0] == job_id else
                             f"{line}\n" for line in lines))  # fmt: skip


def _submissions(bin_dir: Path) -> list[str]:
    calls = bin_dir / "sbatch_calls"
    return calls.read_text().split() if calls.exists() else []


def _queue(bin_dir: Path) -> list[str]:
    return [line.split("|")[0] for line in (bin_dir / "queue").read_text().splitlines()]


def test_queued_and_running_cells_are_never_submitted_twice_dead_ones_once(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _sweep(tmp_path)
    spec = load_sweep(path)
    cells = expand(spec)

    assert main(["sweep", str(path)]) == 0
    assert _submissions(cluster) == ["100"] and _queue(cluster) == ["100_0", "100_1"]
    assert read_ledger(spec) == {cells[0].id: "100_0", cells[1].id: "100_1"}

    # Again while both wait in the queue, then while one runs: nothing is submitted.
    for state in ("PENDING", "RUNNING"):
        _set_state(cluster, "100_0", state)
        capsys.readouterr()
        assert main(["sweep", str(path)]) == 0
        assert _submissions(cluster) == ["100"]
        err = capsys.readouterr().err
        assert f"cell {cells[0].id}: job 100_0 queued or running ({state})" in err, err

    # Cell 0's job dies on its node, its run card left saying "running" (another host);
    # cell 1's job fails before writing anything. Both are submitted again, once, together.
    with RunWriter(spec.out, model_spec=cells[0].model, task=cells[0].task,
                   config=cells[0].config,
                   **SweepTag(spec.name, ((cells[0].task, cells[0].id),)).card_fields(
                       cells[0].task)) as writer:  # fmt: skip
        writer.card.host = f"not-{socket.gethostname()}"
        writer._write_card()
        writer._finished = True  # leave the card as a dead node leaves it
    _set_state(cluster, "100_0", "NODE_FAIL")
    _set_state(cluster, "100_1", "FAILED")
    assert main(["sweep", str(path)]) == 0
    assert _submissions(cluster) == ["100", "101"]
    assert _queue(cluster)[2:] == ["101_0", "101_1"]
    assert read_ledger(spec) == {cells[0].id: "101_0", cells[1].id: "101_1"}

    # The new jobs are queued: a third sweep submits nothing.
    assert main(["sweep", str(path)]) == 0
    assert _submissions(cluster) == ["100", "101"]


def test_a_job_sacct_does_not_know_is_left_alone_unless_asked(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _sweep(tmp_path)
    assert main(["sweep", str(path)]) == 0
    (cluster / "queue").write_text("")  # sacct answers nothing (accounting down, purged)
    assert main(["sweep", str(path)]) == 0
    assert _submissions(cluster) == ["100"]
    assert "unknown to sacct (--rerun-running)" in capsys.readouterr().err
    assert main(["sweep", str(path), "--rerun-running"]) == 0
    assert _submissions(cluster) == ["100", "101"]


def test_two_sweeps_at_once_submit_each_cell_once(cluster: Path, tmp_path: Path) -> None:
    path = _sweep(tmp_path)
    env: dict[str, Any] = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CLI, "sweep", str(path)], env=env,
                              stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert _submissions(cluster) == ["100"]
    assert _queue(cluster) == ["100_0", "100_1"]
