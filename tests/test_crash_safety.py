"""kill -9 at any point, then the same command again: the same results, and nothing re-encoded.

`run`, `sweep` and a 2-process torchrun are started as real processes and killed by SIGKILL,
either by the test after a seeded random delay or at a named point
(`densecap_eval.core.crashpoints`: after the k-th encoded batch, inside the k-th atomic write of a
results file, after a run is stored and before the next starts). Then the same command runs
again, to the end.

"The final results" of a command are, for each task it runs, the newest complete run's
``metrics.json`` (compared byte for byte) and ``examples.parquet`` (compared as a table: every
column, type and value); run ids, times and pids differ by design. Each trial checks besides:
every run directory left by the kill is either complete and readable or not complete (never a
complete-looking half), a sweep's complete cells are not run again, and the rerun took every
embedding the killed run had cached (each cache key is in exactly one shard: nothing was
encoded twice) and ended with every key an uninterrupted run writes.

``DENSECAP_EVAL_KILL_TRIALS`` sets the trials per command: 1 by default (each trial is two
process start-ups and a run, a minute or so for the three commands on an idle 2-core machine);
the issue's 10 of 10 is ``DENSECAP_EVAL_KILL_TRIALS=10`` (about 20 minutes there).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from densecap_eval.results.store import list_runs

pytestmark = pytest.mark.slow

TASK = "dci/base_swaps"  # 20 texts and 10 regions: 5 + 3 batches of 4
RUN_ARGS = ["--model", "builtin:tiny", "--sample", "--task", TASK, "--bootstrap", "20",
            "--batch-size", "4"]  # fmt: skip
SEEDS = (0, 1)  # the sweep's grid: two cells sharing every encoding (the seed is the bootstrap's)
CLI = "import sys; from densecap_eval.cli.app import main; sys.exit(main(sys.argv[1:]))"
TRIALS = int(os.environ.get("DENSECAP_EVAL_KILL_TRIALS", "1"))


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("DENSECAP_EVAL_CRASH_AT", None)
    env.update(extra)
    return env


def _command(kind: str, out: Path, cache: Path, sweep_file: Path) -> list[str]:
    if kind == "sweep":
        return [sys.executable, "-c", CLI, "sweep", str(sweep_file)]
    args = [*RUN_ARGS, "--cache-dir", str(cache), "--out", str(out)]
    if kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node=2", "-m", "densecap_eval", "run", *args]  # fmt: skip
    return [sys.executable, "-c", CLI, "run", *args]


def _write_sweep(path: Path, out: Path, cache: Path) -> Path:
    import yaml

    data = {"name": "crash", "models": ["builtin:tiny"], "tasks": [TASK], "sample": True,
            "out": str(out), "grid": {"seed": list(SEEDS)},
            "options": {"n_boot": 20, "batch_size": 4, "cache_dir": str(cache)}}  # fmt: skip
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _cache_keys(cache: Path) -> collections.Counter[tuple[str, str]]:
    """(store, key) -> in how many shards it is (more than 1: encoded more than once)."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for shard in cache.rglob("shard-*.npz"):
        with np.load(shard) as z:
            counts.update((shard.parent.name, str(k)) for k in z["keys"])
    return counts


def _final(out: Path) -> dict[int, tuple[bytes, Any]]:
    """seed -> (metrics.json bytes, examples table) of the newest complete run with that seed."""
    final: dict[int, tuple[bytes, Any]] = {}
    for run in list_runs(out):
        if run.is_complete:
            assert run.card is not None and run.card.task == TASK
            final[int(run.card.seed)] = (
                (run.path / "metrics.json").read_bytes(),
                pq.read_table(run.path / "examples.parquet"),
            )
    return final


def _check_no_half_runs(out: Path) -> None:
    """Whatever a kill left: a run is complete and whole, or says it is not complete."""
    for run in list_runs(out) if out.is_dir() else []:
        assert run.status != "corrupt" or run.card is None, (run.path, run.reason)
        if run.status == "complete":
            pq.read_table(run.path / "examples.parquet")  # whole, or this raises


def _kill_plan(kind: str, rng: random.Random) -> tuple[str | None, float]:
    """A crash point (``NAME:K[:RANK]``), or None and a delay for a kill from outside (counted
    from the first cache shard on disk, so that it lands in the middle of the work)."""
    choice = rng.random()
    rank = f":{rng.randrange(2)}" if kind == "torchrun" else ""
    if choice < 0.4:  # during encoding: 5 text batches, then 3 of regions (torchrun: every
        # other batch of each, so rank 0 encodes 3 + 2 and rank 1 encodes 2 + 1)
        most = {"": 8, ":0": 5, ":1": 3}[rank]
        return f"encoded:{rng.randint(1, most)}{rank}", 0.0
    if choice < 0.6:  # inside a results file's write: the card, metrics, examples, the card
        return f"stored:{rng.randint(1, 8 if kind == 'sweep' else 4)}{':0' if rank else ''}", 0.0
    if choice < 0.75 and kind == "sweep":  # between the sweep's two cells
        return "run-stored:1", 0.0
    return None, rng.uniform(0.0, 2.0)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its ranks in sessions of their own)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_all(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command and every process it started: the whole job dies at once."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _run_killed(
    command: list[str], env: dict[str, str], point: str | None, delay: float, cache: Path
) -> str:
    """Start the command, have it killed (SIGKILL), wait for it; no process of it outlives this."""
    if point is not None:
        env = {**env, "DENSECAP_EVAL_CRASH_AT": point}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        if point is None:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                if next(cache.rglob("shard-*.npz"), None) is not None:
                    break
                time.sleep(0.05)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                _kill_all(proc)
        _, err = proc.communicate(timeout=240)
    finally:
        _kill_all(proc)  # a rank left behind by a killed launcher, or a command that hung
        proc.wait()
    return f"rc={proc.returncode} {err.decode(errors='replace')[-800:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Uninterrupted `run`s (processes, like the trials), one per seed: results, cache keys."""
    root = tmp_path_factory.mktemp("reference")
    out, cache = root / "out", root / "cache"
    for seed in SEEDS:
        command = [*_command("run", out, cache, root / "unused.yaml"), "--seed", str(seed)]
        done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
    return {"final": _final(out), "keys": _cache_keys(cache)}


@pytest.mark.parametrize("kind", ["run", "sweep", "torchrun"])
def test_kill_9_then_the_same_command_gives_the_same_results(
    kind: str, reference: dict[str, Any], tmp_path: Path
) -> None:
    rng = random.Random(f"kill-9 {kind}")
    expected = reference["final"]
    assert sorted(expected) == list(SEEDS)
    seeds = list(SEEDS) if kind == "sweep" else [0]
    outcomes = []
    for trial in range(TRIALS):
        out, cache = tmp_path / f"out{trial}", tmp_path / f"cache{trial}"
        command = _command(kind, out, cache, _write_sweep(tmp_path / f"s{trial}.yaml", out, cache))
        point, delay = _kill_plan(kind, rng)
        started = time.monotonic()
        killed = _run_killed(command, _env(), point, delay, cache)
        where = f"trial {trial}: {point or f'SIGKILL {delay:.1f} s after the first shard'}"
        if point is not None:  # the named point is always reached: the kill happened there
            assert "rc=0 " not in killed, f"{where}: never reached ({killed})"
        _check_no_half_runs(out)
        complete_before = {r.card.cell for r in list_runs(out) if r.is_complete and r.card} if out.is_dir() else set()  # fmt: skip
        cached_before = _cache_keys(cache)

        rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=240)
        assert rerun.returncode == 0, f"{where}: {rerun.stderr[-3000:]}"
        final = _final(out)
        assert sorted(final) == seeds, where
        for seed, (metrics, examples) in final.items():
            assert metrics == expected[seed][0], f"{where}: seed {seed}: metrics.json differs"
            assert examples.equals(expected[seed][1]), f"{where}: seed {seed}: examples differ"
        cached_after = _cache_keys(cache)
        assert max(cached_after.values()) == 1, f"{where}: a cached input was encoded again"
        assert set(cached_before) <= set(cached_after) == set(reference["keys"]), where
        if kind == "sweep":  # a complete cell is never run again
            cells = [r.card.cell for r in list_runs(out) if r.is_complete and r.card]
            assert len(cells) == len(set(cells)) == len(SEEDS), where
            assert complete_before <= set(cells), where
        outcomes.append((where, len(cached_before), round(time.monotonic() - started, 1)))
    print(f"\n{kind}: {len(outcomes)}/{TRIALS} identical after kill -9:", *outcomes, sep="\n  ")
    assert len(outcomes) == TRIALS


def test_examples_compare_as_tables() -> None:
    """The comparison above is not vacuous: a changed value or column type is a difference."""
    import pyarrow as pa

    a = pa.Table.from_pandas(pd.DataFrame({"x": [1.0, 2.0]}), preserve_index=False)
    assert a.equals(pa.Table.from_pandas(pd.DataFrame({"x": [1.0, 2.0]}), preserve_index=False))
    assert not a.equals(pa.Table.from_pandas(pd.DataFrame({"x": [1.0, 2.5]}), preserve_index=False))
    assert not a.equals(pa.Table.from_pandas(pd.DataFrame({"x": [1, 2]}), preserve_index=False))


def test_two_runs_writing_one_cache_at_once_both_finish_correctly(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """Two `run`s (two processes, one machine) share a cold cache: both store the reference
    results, and the cache reads back whole (every shard, every key, the index)."""
    from densecap_eval.engine.cache import EmbeddingCache

    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(_command("run", tmp_path / f"out{i}", cache, tmp_path / "unused.yaml"),
                         env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for i in range(2)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
        assert b"warning" not in err, err.decode()
    for i in range(2):
        ((seed, (metrics, examples)),) = _final(tmp_path / f"out{i}").items()
        assert metrics == reference["final"][seed][0] and examples.equals(
            reference["final"][seed][1]
        )
    assert set(_cache_keys(cache)) == set(reference["keys"])
    assert EmbeddingCache(cache).info()["entries"] == len(reference["keys"])


def test_killing_the_torchrun_launcher_alone_ends_its_ranks(tmp_path: Path) -> None:
    """torchrun starts its ranks in sessions of their own: a kill -9 of torchrun alone must not
    leave them waiting on its store (for 30 minutes); they die with it (PR_SET_PDEATHSIG)."""
    cache = tmp_path / "cache"
    command = _command("torchrun", tmp_path / "out", cache, tmp_path / "unused.yaml")
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while next(cache.rglob("shard-*.npz"), None) is None and time.monotonic() < deadline:
            assert proc.poll() is None, "torchrun ended before it was killed"
            time.sleep(0.05)
        ranks[:] = _descendants(proc.pid)
        assert len(ranks) >= 2, ranks
        os.kill(proc.pid, signal.SIGKILL)  # the launcher only
        proc.wait()
        deadline = time.monotonic() + 20
        alive = ranks
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in ranks if _running(pid)]
            time.sleep(0.1)
        assert alive == [], f"ranks {alive} outlived their launcher"
    finally:
        for pid in [*ranks, *_descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            _kill_all(proc)
            proc.wait()


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (dead, not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
