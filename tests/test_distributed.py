"""Data-parallel scoring under torchrun (gloo on CPU): real processes, the real CLI.

Two processes must store exactly what one process stores (metrics.json byte for byte, the
examples frame equal), for an embedding scorer (``builtin:tiny``) and a pair scorer (a tiny
LLaVA under ``captionlik:``); only rank 0 writes to the results store; the run card records the
world size. A rank that fails (a scorer plugin, registered for these tests only through an
entry point on PYTHONPATH, raises on rank 1) fails the run visibly, and the rerun resumes from
the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tiny_vlms

pytestmark = pytest.mark.slow

FAULT_PLUGIN = '''
"""Test-only scorer: ``fault:RANK:MODE`` is builtin:tiny whose images fail on rank RANK."""
import os
import signal

from densecap_eval.scorers import load_scorer


def load(spec, device=None, precision=None, *, text_policy="truncate"):
    _, rank, mode = spec.split(":")
    scorer = load_scorer("builtin:tiny", device, precision, text_policy=text_policy)
    if os.environ.get("RANK") == rank:
        def encode_pixels(pixels):
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected fault on rank {rank}")

        scorer.encode_pixels = encode_pixels
    return scorer
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One thread per process, and the fault plugin importable with its entry point."""
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "densecap_fault.py").write_text(FAULT_PLUGIN, encoding="utf-8")
    info = plugins / "densecap_fault-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: densecap-fault\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[densecap_eval.scorers]\nfault = densecap_fault:load\n")
    path = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def run(env: dict[str, str], nproc: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`densecap-eval run ARGS` on the bundled sample, under torchrun with ``nproc`` ranks."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "densecap_eval",
               "run", "--sample", "--bootstrap", "0", *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def run_here(*args: str) -> None:
    """The same command in this process (one thread, like each torchrun rank): the reference.

    In-process saves a Python + torch start-up per reference run (the test's time budget).
    """
    import torch

    from densecap_eval.cli.app import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "--sample", "--bootstrap", "0", *args]) == 0
    finally:
        torch.set_num_threads(threads)


def only_run(out: Path) -> Path:
    """The one run directory in ``out`` (hidden folders, such as .logs, are not runs)."""
    runs = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def assert_same_results(one: Path, two: Path) -> None:
    a, b = only_run(one), only_run(two)
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "examples.parquet"), pd.read_parquet(b / "examples.parquet")
    )


def card(out: Path) -> dict:
    return json.loads((only_run(out) / "run.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["embedding", "pair"])
def test_two_processes_store_what_one_stores(
    kind: str, env: dict[str, str], tmp_path: Path
) -> None:
    if kind == "embedding":
        args = ["--model", "builtin:tiny", "--no-cache"]
    else:
        llava = tiny_vlms.build_llava(tmp_path / "llava")
        args = ["--model", f"captionlik:{llava}", "--task", "dci/base_swaps", "--no-cache"]
    run_here(*args, "--out", str(tmp_path / "one"))
    two = run(env, 2, *args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr

    assert_same_results(tmp_path / "one", tmp_path / "two")
    record = card(tmp_path / "two")
    assert record["world_size"] == 2 and card(tmp_path / "one")["world_size"] == 1
    ranks = record["config"]["distributed"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    phase = "texts" if kind == "embedding" else "pairs"
    assert all(r["phases"][phase]["items"] > 0 for r in ranks)  # both ranks did work
    # One summary and one table, from rank 0; each rank logged to its own file.
    assert two.stderr.count("throughput per rank") == 1
    assert two.stdout.count("dci/base_swaps") == 1
    (logs,) = (tmp_path / "two" / ".logs").iterdir()
    assert sorted(p.name for p in logs.iterdir()) == ["rank0.log", "rank1.log"]
    assert f"{phase}: " in (logs / "rank1.log").read_text()


def test_a_failing_rank_fails_the_run_and_the_rerun_resumes(
    env: dict[str, str], tmp_path: Path
) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    # batches of 4: both ranks encode texts, then rank 1 fails on its first batch of regions
    common = ["--task", "dci/base_swaps", "--batch-size", "4", "--cache-dir", str(cache)]
    failed = run(env, 2, "--model", "fault:1:raise", *common, "--out", str(out))
    assert failed.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: injected fault on rank 1" in failed.stderr
    record = card(out)
    assert record["status"] == "failed" and record["world_size"] == 2
    assert "injected fault on rank 1" in record["error"]
    # Every text was encoded (by one rank or the other) and written before the failure.
    text_shards = sorted(cache.rglob("text-*/shard-*.npz"))
    assert len(text_shards) == 5  # 20 texts, batches of 4

    run_here("--model", "builtin:tiny", *common, "--out", str(tmp_path / "rerun"))
    assert card(tmp_path / "rerun")["status"] == "complete"
    assert sorted(cache.rglob("text-*/shard-*.npz")) == text_shards  # all from the cache


def test_a_killed_rank_fails_the_run(env: dict[str, str], tmp_path: Path) -> None:
    failed = run(env, 2, "--model", "fault:1:kill", "--task", "dci/base_swaps", "--batch-size",
                 "4", "--no-cache", "--out", str(tmp_path / "out"))  # fmt: skip
    assert failed.returncode != 0
    assert (tmp_path / "out").is_dir(), failed.stderr[-3000:]
    record = card(tmp_path / "out")
    # Rank 0 loses its gloo peer at the next exchange (or torchrun's SIGTERM comes first).
    assert record["status"] == "failed", record
    assert "lost contact with another rank" in record["error"] or "SIGTERM" in record["error"]


def test_module_entry_point_is_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "densecap_eval", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "densecap-eval" in out.stdout
