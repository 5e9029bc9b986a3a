"""A disk that fills up mid-write, a small /dev/shm, a worker that dies: one clear line, no hang.

What each gets (docs/reliability.md):
- the cache cannot be written: one warning, the run goes on uncached, the shards already
  written stay readable;
- a results file cannot be written: one ``error:`` line, exit 1, no file that looks complete
  (every file goes through a temporary name and a rename) and no temporary file left;
- a decoding worker fails, dies, or cannot put its batch into shared memory: one ``error:``
  line naming the cause and the fix (``--workers``, /dev/shm), exit 1, never a wait for ever.

The full disk is simulated the way the issue found the faults: a file-size limit
(RLIMIT_FSIZE, with SIGXFSZ ignored so a write fails with EFBIG) at 4 KB, 32 KB, 256 KB and
2 MB on a real `densecap-eval run`; and, where this machine lets a test mount one (root in a
private mount namespace), a tiny tmpfs as the results and cache folder, and as /dev/shm.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer
from PIL import Image

from densecap_eval.datasets.regions import Region
from densecap_eval.engine import cache as cache_mod
from densecap_eval.engine import engine as engine_mod
from densecap_eval.engine.cache import EmbeddingCache, ModelKey
from densecap_eval.engine.engine import WorkerError, score_plan
from densecap_eval.engine.plan import ScoringPlan
from densecap_eval.results import store as store_mod
from densecap_eval.results.store import ResultsWriteError, RunWriter, list_runs

CLI = "import sys; from densecap_eval.cli.app import main; sys.exit(main(sys.argv[1:]))"
RUN = ["run", "--model", "builtin:tiny", "--sample", "--task", "dci/base_swaps",
       "--bootstrap", "0", "--batch-size", "4"]  # fmt: skip


def _plan(tmp_path: Path) -> ScoringPlan:
    plan = ScoringPlan()
    for i in range(3):
        photo = tmp_path / f"p{i}.png"
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(photo)
        plan.add_region(Region(str(photo), None))
    for text in ("a red square", "a blue square", "grey"):
        plan.add_text(text)
    plan.need_all([0, 1, 2], [0, 1, 2])
    return plan


def _efbig(*_: Any, **__: Any) -> None:
    raise OSError(errno.EFBIG, "File too large")


# --------------------------------------------------------------------------- the cache


def test_a_cache_that_cannot_be_written_is_one_warning_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plan = _plan(tmp_path)
    cache = EmbeddingCache(tmp_path / "cache")
    first = score_plan(FakeEmbeddingScorer(), plan, batch_size=1, cache=cache, num_workers=0)
    shards = sorted((tmp_path / "cache").rglob("*.npz"))
    plan.add_text("a text the cache has not seen")
    plan.need_all([0, 1, 2], [3])

    monkeypatch.setattr(cache_mod, "_unwritable", set())
    monkeypatch.setattr(cache_mod, "_atomic_write", _efbig)  # the disk is full from here on
    with caplog.at_level(logging.WARNING, logger="densecap_eval"):
        scorer = FakeEmbeddingScorer()
        second = score_plan(scorer, plan, batch_size=1, cache=cache, num_workers=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot write the embedding cache" in warnings[0], warnings
    assert "File too large" in warnings[0] and "going on without caching" in warnings[0]
    assert scorer.text_calls == [1]  # the old texts came from the cache, the new one encoded
    assert np.array_equal(second.text_embeddings[:3], first.text_embeddings)
    assert sorted((tmp_path / "cache").rglob("*.npz")) == shards  # nothing half-written
    monkeypatch.undo()
    store = cache.text_store(ModelKey.of(scorer), "truncate", max_tokens=scorer.max_text_tokens)
    assert len(store) == 3  # the cache is still readable, and whole


# --------------------------------------------------------------------------- the results


def test_results_that_cannot_be_written_fail_without_a_complete_looking_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    result = SimpleNamespace(metrics={"dci/base_swaps": {"scm": 0.5, "n": 2}},
                             examples=pd.DataFrame({"x": [1, 2]}), skipped=[], config={},
                             started_at=None, finished_at=None)  # fmt: skip

    real = store_mod._write_parquet

    def parquet_on_a_full_disk(target: Path, frame: Any) -> None:
        def write(tmp: Path) -> None:
            tmp.write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")

        store_mod._write_atomic(target, write)

    monkeypatch.setattr(store_mod, "_write_parquet", parquet_on_a_full_disk)
    with pytest.raises(ResultsWriteError) as info, RunWriter(tmp_path, model_spec="m:a",
                                                             task="dci/base_swaps") as writer:  # fmt: skip
        writer.complete(result)
    assert info.value.exit_code == 1
    assert "examples.parquet: No space left on device" in str(info.value)
    assert writer.run_dir is not None
    assert sorted(p.name for p in writer.run_dir.iterdir()) == ["metrics.json", "run.json"]
    (run,) = list_runs(tmp_path)
    assert run.status == "failed" and "No space left" in (run.reason or "")
    monkeypatch.setattr(store_mod, "_write_parquet", real)


@pytest.mark.parametrize(("err", "code"), [(errno.ENOSPC, 1), (errno.EDQUOT, 1), (errno.EACCES, 2)])
def test_a_full_disk_at_the_start_is_exit_1_a_forbidden_folder_exit_2(
    err: int, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(store_mod.tempfile, "mkstemp", refuse)
    with pytest.raises(store_mod.ResultsError) as info:
        store_mod.ensure_writable(tmp_path / "out")
    assert info.value.exit_code == code and os.strerror(err) in str(info.value)


# --------------------------------------------------------------------------- decoding workers


class _Batches(engine_mod._RegionBatches):
    """Batches whose second one misbehaves in the worker: sleeps, dies, or raises."""

    def __init__(self, mode: str, regions: list[Region]) -> None:
        super().__init__([regions[:1], regions[1:2], regions[2:]], blind=False, preprocess=None)
        self.mode = mode

    def __getitem__(self, i: int) -> Any:
        if i == 1:
            if self.mode == "sleep":
                time.sleep(30)
            elif self.mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            else:
                raise RuntimeError("unable to write to file </torch_1_2_3>: No space left (28)")
        return super().__getitem__(i)


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("sleep", "delivered no batch for 2 s"),
        ("die", "a decoding worker process failed (DataLoader worker (pid"),
        ("raise", "could not put its batch into shared memory (RuntimeError: unable to write"),
    ],
)
def test_a_worker_that_hangs_dies_or_fails_ends_the_run_with_the_fix(
    mode: str, words: str, tmp_path: Path
) -> None:
    regions = list(_plan(tmp_path).regions)
    started = time.monotonic()
    with pytest.raises(WorkerError) as info:
        list(engine_mod._iter_batches(_Batches(mode, regions), 1, timeout=2))
    assert time.monotonic() - started < 25  # the sleeping worker is not waited for
    message = str(info.value)
    assert words in message, message
    assert "--workers 0" in message and "/dev/shm" in message and "\n" not in message
    assert info.value.exit_code == 1


# --------------------------------------------------------------------------- a real run


def _limited(limit: int) -> Any:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _run(args: list[str], *, prefix: list[str] = (), **kwargs: Any) -> Any:  # type: ignore[assignment]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*prefix, sys.executable, "-c", CLI, *args], env=env,
                          capture_output=True, text=True, timeout=240, **kwargs)  # fmt: skip


def _check_leftovers(out: Path, cache: Path) -> None:
    """No complete-looking half file, no temporary file, and a cache that reads back."""
    for run in list_runs(out) if out.is_dir() else []:
        assert run.status in ("complete", "failed", "interrupted"), (run.path, run.reason)
    stray = [p for p in out.rglob(".*") if p.is_file()] if out.is_dir() else []
    assert stray == [], stray
    assert [p for p in cache.rglob(".tmp-*")] == []
    for shard in cache.rglob("*.npz"):
        with np.load(shard) as z:
            assert len(z.files) >= 1, shard
    EmbeddingCache(cache).info()  # reads every store back


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limit", "workers"), [(4 << 10, 0), (32 << 10, 0), (256 << 10, 1), (2 << 20, 1)]
)
def test_a_file_size_limit_gives_one_line_and_no_half_files(
    limit: int, workers: int, tmp_path: Path
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*RUN, "--workers", str(workers), "--cache-dir", str(cache), "--out", str(out)]
    done = _run(args, preexec_fn=_limited(limit))
    _check_leftovers(out, cache)
    if done.returncode == 0:  # everything fitted: a whole, complete run
        (run,) = list_runs(out)
        assert run.status == "complete", done.stderr
        return
    assert done.returncode == 1, done.stderr
    error = _one_error_line(done.stderr)
    if workers:  # the batch does not fit in shared memory under the limit
        assert "could not put its batch into shared memory" in error
        assert "File too large" in error and "--workers 0" in error
    else:
        assert "cannot write" in error and "File too large" in error, error
        assert "warning: cannot write the embedding cache" in done.stderr
        assert done.stderr.count("cannot write the embedding cache") == 1


def _can_mount() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                           capture_output=True, check=False)  # fmt: skip
    return probe.returncode == 0


CHECKER = """
import sys
from pathlib import Path

import numpy as np

from densecap_eval.engine.cache import EmbeddingCache
from densecap_eval.results.store import list_runs

out, cache = Path(sys.argv[1]), Path(sys.argv[2])
bad = [(r.path.name, r.status) for r in (list_runs(out) if out.is_dir() else [])
       if r.status not in ("complete", "failed", "interrupted")]
bad += [str(p) for p in out.rglob(".*") if p.is_file()] if out.is_dir() else []
bad += [str(p) for p in cache.rglob(".tmp-*")]
for shard in cache.rglob("*.npz"):
    with np.load(shard) as z:
        z.files
EmbeddingCache(cache).info()
print("leftovers:", bad)
sys.exit(1 if bad else 0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["results", "shm"])
def test_a_tiny_tmpfs(where: str, tmp_path: Path) -> None:
    """A real small file system, mounted in a private namespace (gone when the run ends, so the
    leftovers are checked inside it, right after the run)."""
    if not _can_mount():
        pytest.skip("cannot mount a tmpfs here (needs root and unshare); the rlimit test stands in")
    disk = tmp_path / "disk"
    disk.mkdir()
    out, cache = disk / "out", disk / "cache"
    checker = tmp_path / "check.py"
    checker.write_text(CHECKER, encoding="utf-8")
    args = [*RUN, "--cache-dir", str(cache), "--out", str(out)]
    if where == "results":  # results and cache on a 16 KB disk
        mount = f"mount -t tmpfs -o size=16k tmpfs {disk}"
        args += ["--workers", "0"]
    else:  # a 256 KB /dev/shm, as in a container started without --shm-size
        mount = "mount -t tmpfs -o size=256k tmpfs /dev/shm"
        args += ["--workers", "1"]
    script = (f'{mount} && "$@"; code=$?; {sys.executable} {checker} {out} {cache} >&2 '
              "|| exit 99; exit $code")  # fmt: skip
    done = _run(args, prefix=["unshare", "-m", "sh", "-c", script, "sh"])
    assert "leftovers: []" in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    error = _one_error_line(done.stderr)
    if where == "results":
        assert "No space left on device" in error and "cannot write" in error, error
        assert done.stderr.count("cannot write the embedding cache") <= 1
    else:
        assert "could not put its batch into shared memory" in error, error
        assert "No space left on device" in error and "/dev/shm" in error
