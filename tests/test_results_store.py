"""The results store: layout, atomic status, corrupt directories, run ids, reading back.

Also home of `make_result` / `store_run`, the hand-made RunResult stand-ins that
test_report.py and test_compare.py import.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from densecap_eval.core.config import RunConfig
from densecap_eval.core.errors import ResultsError
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.results import schema, store
from densecap_eval.results.store import (
    RunWriter,
    StoredRun,
    ensure_writable,
    list_runs,
    load_examples,
    load_metrics,
    new_run_id,
    read_run,
    resolve_run,
)


@dataclass
class FakeResult:
    """What `RunWriter.complete` reads of a RunResult, built by hand."""

    model: str
    task: str
    metrics: dict[str, dict[str, Any]]
    examples: pd.DataFrame
    skipped: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    started_at: Any = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    finished_at: Any = datetime(2026, 1, 2, 3, 5, 0, tzinfo=timezone.utc)


def make_examples(
    task: str, correct: list[bool], *, images: list[str] | None = None
) -> pd.DataFrame:
    n = len(correct)
    images = images or [f"img{i // 2}.json" for i in range(n)]
    return pd.DataFrame(
        {
            "task": [task] * n,
            "image": images,
            "entry_key": [f"m-{i}-sc" if i % 2 else "base" for i in range(n)],
            "positives": [["a cat", f"caption {i}"] for i in range(n)],
            "pos_score": np.linspace(0.1, 0.9, n),
            "neg_correct": correct,
            "n_tokens": np.arange(n, dtype=np.int64) + 5,
        }
    )


def make_result(
    model: str = "open_clip:ViT-B-32/openai",
    task: str = "dci",
    metrics: dict[str, dict[str, Any]] | None = None,
    *,
    blind: bool = False,
    examples: pd.DataFrame | None = None,
    skipped: list[Any] | None = None,
    split: str = "test",
) -> FakeResult:
    metrics = metrics or {
        "dci/all_swaps": {"scm": 0.5, "neg": 0.75, "n": 4, "ci": {"neg": [0.5, 1.0]}},
        "dci/base_swaps": {"scm": 0.25, "neg": 0.5, "n": 2, "ci": {"neg": [0.0, 1.0]}},
    }
    if examples is None:
        examples = pd.concat(
            [
                make_examples(t, [True, False, True, True][: int(m.get("n", 4))])
                for t, m in metrics.items()
            ],
            ignore_index=True,
        )
    return FakeResult(
        model=model,
        task=task,
        metrics=metrics,
        examples=examples,
        skipped=list(skipped or []),
        config={
            "dataset": {"name": "dci", "root": "/data/dci", "fingerprint": "abc123"},
            "split": split,
            "seed": 0,
            "batch_size": 8,
            "precision": "fp32",
            "device": "cpu",
            "text_policy": "truncate",
            "blind": blind,
            "model_fingerprint": f"fp-{model}",
            "max_text_tokens": 77,
        },
    )


def store_run(results_dir: Path, result: FakeResult | None = None) -> StoredRun:
    result = result or make_result()
    config = RunConfig(blind=bool(result.config.get("blind")))
    with RunWriter(results_dir, model_spec=result.model, task=result.task, config=config) as writer:
        return writer.complete(result)


# --------------------------------------------------------------------------- writing


def test_complete_run_layout_and_card(tmp_path: Path) -> None:
    skipped = [
        SkippedImage("bad.json", "no summaries"),
        {"image": "worse.json", "reason": "empty crop"},
    ]
    run = store_run(tmp_path, make_result(skipped=skipped))

    assert sorted(p.name for p in run.path.iterdir()) == [
        "examples.parquet",
        "metrics.json",
        "run.json",
    ]
    assert run.path.parent == tmp_path and run.path.name == run.run_id
    card = json.loads((run.path / "run.json").read_text())
    assert card["schema_version"] == schema.SCHEMA_VERSION
    assert card["status"] == "complete"
    assert card["model"] == {
        "spec": "open_clip:ViT-B-32/openai",
        "fingerprint": "fp-open_clip:ViT-B-32/openai",
        "max_text_tokens": 77,
    }
    assert card["task"] == "dci"
    assert card["tasks"] == ["dci/all_swaps", "dci/base_swaps"]
    assert card["dataset"] == {"name": "dci", "root": "/data/dci", "fingerprint": "abc123"}
    assert (card["split"], card["text_policy"], card["batch_size"]) == ("test", "truncate", 8)
    assert (card["precision"], card["device"], card["seed"], card["blind"]) == (
        "fp32",
        "cpu",
        0,
        False,
    )
    assert set(card["versions"]) == {
        "densecap-eval",
        "torch",
        "open_clip",
        "transformers",
        "python",
    }
    assert card["versions"]["densecap-eval"] == "0.1.0"
    assert card["git_revision"] is None or re.fullmatch(r"[0-9a-f]{40}", card["git_revision"])
    assert card["started_at"] == "2026-01-02T03:04:05+00:00"
    assert card["finished_at"] == "2026-01-02T03:05:00+00:00"
    assert card["skipped"] == [
        {"image": "bad.json", "reason": "no summaries"},
        {"image": "worse.json", "reason": "empty crop"},
    ]
    assert card["n_skipped"] == 2
    assert card["host"] and card["error"] is None


def test_metrics_and_examples_round_trip(tmp_path: Path) -> None:
    result = make_result()
    run = store_run(tmp_path, result)
    (read,) = list_runs(tmp_path)
    assert read.status == "complete" and read.reason is None
    assert load_metrics(read) == result.metrics
    examples = load_examples(read)
    assert list(examples.columns) == list(result.examples.columns)
    assert [list(x) for x in examples["positives"]] == list(result.examples["positives"])
    assert examples["neg_correct"].tolist() == result.examples["neg_correct"].tolist()
    assert examples["n_tokens"].dtype == np.int64
    only = load_examples(run, columns=["image", "neg_correct"])
    assert list(only.columns) == ["image", "neg_correct"]
    with pytest.raises(ResultsError, match="no column 'nope'"):
        load_examples(run, columns=["nope"])
    # no temporary files are left behind by the atomic writes
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]


def test_metrics_json_is_strict_json(tmp_path: Path) -> None:
    metrics = {"dci/all_swaps": {"scm": np.float32(0.5), "neg": float("nan"), "n": np.int64(3)}}
    run = store_run(
        tmp_path, make_result(metrics=metrics, examples=make_examples("dci/all_swaps", [True] * 3))
    )
    text = (run.path / "metrics.json").read_text()
    assert json.loads(text) == {"dci/all_swaps": {"scm": 0.5, "neg": None, "n": 3}}
    assert "NaN" not in text


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (RuntimeError("CUDA out of memory"), "failed", "RuntimeError: CUDA out of memory"),
        (KeyboardInterrupt(), "interrupted", "interrupted by the user"),
    ],
)
def test_run_killed_midway_is_never_complete(
    tmp_path: Path, exc: BaseException, status: str, error: str
) -> None:
    with (
        pytest.raises(type(exc)),
        RunWriter(tmp_path, model_spec="builtin:tiny", task="dci") as writer,
    ):
        assert json.loads((writer.run_dir / "run.json").read_text())["status"] == "running"
        raise exc
    (run,) = list_runs(tmp_path)
    assert (run.status, run.reason) == (status, error)
    card = json.loads((run.path / "run.json").read_text())
    assert card["status"] == status and card["error"] == error
    with pytest.raises(ResultsError, match=f"is {status}"):
        load_metrics(run)


def test_failure_while_storing_leaves_the_run_failed(tmp_path: Path) -> None:
    # metrics.json gets written, then the examples cannot be stored: the run must not be complete.
    bad = pd.DataFrame({"task": ["dci/all_swaps"], "mixed": [object()]})
    with (
        pytest.raises(ResultsError, match="parquet"),
        RunWriter(tmp_path, model_spec="m:x", task="dci") as w,
    ):
        w.complete(make_result(examples=bad))
    (run,) = list_runs(tmp_path)
    assert run.status == "failed" and "parquet" in (run.reason or "")
    assert (run.path / "metrics.json").exists()


def test_leaving_the_block_without_results_marks_failed(tmp_path: Path) -> None:
    with RunWriter(tmp_path, model_spec="m:x", task="dci"):
        pass
    (run,) = list_runs(tmp_path)
    assert run.status == "failed"
    assert run.reason == "the run ended before its results were stored"


def test_running_run_whose_writer_died_reads_as_interrupted(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    writer = RunWriter(tmp_path, model_spec="m:x", task="dci")
    writer.start()
    card_path = writer.run_dir / "run.json"
    card = json.loads(card_path.read_text())
    assert read_run(writer.run_dir).status == "running"  # our own pid is alive
    card["pid"] = int(dead.stdout)
    card_path.write_text(json.dumps(card))
    run = read_run(writer.run_dir)
    assert run.status == "interrupted" and "is gone" in (run.reason or "")


# A writer that starts a run, says where, and hangs mid-run until killed.
_HANGING_WRITER = """
import sys, time
from densecap_eval.results.store import RunWriter
writer = RunWriter(sys.argv[1], model_spec="m:x", task="dci")
print(writer.start(), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_run_killed_with_sigkill_reads_as_interrupted(tmp_path: Path, reaped: bool) -> None:
    """kill -9 mid-run leaves "running" on disk; readers say interrupted, with the reason."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HANGING_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        run_dir = Path(process.stdout.readline().strip())
        card = json.loads((run_dir / "run.json").read_text())
        assert card["status"] == "running" and card["pid"] == process.pid
        if sys.platform.startswith("linux"):
            assert card["pid_start"] == store.process_start(process.pid)
        assert read_run(run_dir).status == "running"  # alive: not taken for dead
        process.send_signal(signal.SIGKILL)
        if reaped:
            process.wait(timeout=30)
        else:  # killed but not yet waited for: a zombie still answers kill(pid, 0)
            _wait_until_zombie(process.pid)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
        run = read_run(run_dir)
        assert run.status == "interrupted"
        assert run.reason == f"the process (pid {process.pid}) writing it is gone"
    finally:
        process.kill()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def _wait_until_zombie(pid: int) -> None:
    if not Path(f"/proc/{pid}/stat").exists():
        pytest.skip("no /proc: cannot watch for a zombie")
    deadline = time.monotonic() + 30
    while (store._proc_stat(pid) or ["?"])[0] != "Z":
        assert time.monotonic() < deadline, "the killed writer never became a zombie"
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc only")
def test_reused_pid_does_not_pass_for_the_writer(tmp_path: Path) -> None:
    """The card's pid is alive, but as another process (a later start time): interrupted."""
    writer = RunWriter(tmp_path, model_spec="m:x", task="dci")
    writer.start()
    card_path = writer.run_dir / "run.json"
    card = json.loads(card_path.read_text())
    assert card["pid_start"] == store.process_start(os.getpid())
    assert read_run(writer.run_dir).status == "running"
    card["pid_start"] = card["pid_start"].rpartition(":")[0] + ":1"  # an older process's start
    card_path.write_text(json.dumps(card))
    run = read_run(writer.run_dir)
    assert run.status == "interrupted"
    assert run.reason == (
        f"the process (pid {os.getpid()}) writing it is gone; "
        "the pid now belongs to another process"
    )


def test_running_run_from_another_host_stays_running(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, model_spec="m:x", task="dci")
    writer.start()
    card_path = writer.run_dir / "run.json"
    card = json.loads(card_path.read_text())
    card.update(host="some-other-machine", pid=2**22 + 7, pid_start="x:1")
    card_path.write_text(json.dumps(card))
    assert read_run(writer.run_dir).status == "running"


def test_cards_without_pid_start_still_read(tmp_path: Path) -> None:
    """Cards written before pid_start existed: the pid check alone, as before."""
    writer = RunWriter(tmp_path, model_spec="m:x", task="dci")
    writer.start()
    card_path = writer.run_dir / "run.json"
    card = json.loads(card_path.read_text())
    del card["pid_start"]
    card_path.write_text(json.dumps(card))
    run = read_run(writer.run_dir)
    assert run.status == "running" and run.card is not None and run.card.pid_start is None


# --------------------------------------------------------------------------- corrupt runs


def _break_bad_json(run: Path) -> None:
    (run / "run.json").write_text('{"status": "complete", ')


def _break_missing_parquet(run: Path) -> None:
    (run / "examples.parquet").unlink()


def _break_truncated_parquet(run: Path) -> None:
    data = (run / "examples.parquet").read_bytes()
    (run / "examples.parquet").write_bytes(data[: len(data) // 2])


def _break_missing_metrics(run: Path) -> None:
    (run / "metrics.json").unlink()


def _break_bad_metrics(run: Path) -> None:
    (run / "metrics.json").write_text('{"dci/all_swaps": 0.5}')


def _break_schema(run: Path) -> None:
    card = json.loads((run / "run.json").read_text())
    card["schema_version"] = 99
    (run / "run.json").write_text(json.dumps(card))


def _break_no_card(run: Path) -> None:
    (run / "run.json").unlink()


def _break_status(run: Path) -> None:
    card = json.loads((run / "run.json").read_text())
    card["status"] = "done"
    (run / "run.json").write_text(json.dumps(card))


def _break_no_model(run: Path) -> None:
    card = json.loads((run / "run.json").read_text())
    del card["model"]
    (run / "run.json").write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("breaker", "reason"),
    [
        (_break_bad_json, "run.json is not valid JSON"),
        (_break_missing_parquet, "status is complete but examples.parquet is missing"),
        (_break_truncated_parquet, "status is complete but examples.parquet is unreadable"),
        (_break_missing_metrics, "status is complete but metrics.json is missing"),
        (_break_bad_metrics, "status is complete but metrics.json is not {task: {metric: value}}"),
        (_break_schema, "run.json: unknown schema_version 99"),
        (_break_no_card, "no run.json"),
        (_break_status, "run.json: unknown status 'done'"),
        (_break_no_model, "run.json: run.json lacks model"),
    ],
)
def test_corrupt_run_is_reported_with_its_reason(tmp_path: Path, breaker: Any, reason: str) -> None:
    good = store_run(tmp_path)
    broken = store_run(tmp_path, make_result(model="hf:other"))
    breaker(broken.path)
    runs = {run.path: run for run in list_runs(tmp_path)}
    assert runs[good.path].status == "complete"
    assert runs[broken.path].status == "corrupt"
    assert runs[broken.path].reason.startswith(reason)


def test_list_runs_ignores_hidden_entries_and_files(tmp_path: Path) -> None:
    store_run(tmp_path)
    (tmp_path / ".trash").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    assert [r.status for r in list_runs(tmp_path)] == ["complete"]


def test_list_runs_of_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="does not exist"):
        list_runs(tmp_path / "nowhere")


# --------------------------------------------------------------------------- ids and paths


def test_run_ids_sort_by_time_and_are_unique() -> None:
    t1 = datetime(2026, 11, 23, 10, 15, 0, tzinfo=timezone.utc)
    t2 = datetime(2026, 11, 23, 10, 15, 1, tzinfo=timezone.utc)
    first = new_run_id("open_clip:ViT-B-32/openai", "dci/all_swaps", now=t1)
    assert re.fullmatch(
        r"20261123T101500Z-open-clip-vit-b-32-openai-dci-all-swaps-[0-9a-f]{4}", first
    )
    assert new_run_id("a:b", "dci", now=t1) < new_run_id("a:b", "dci", now=t2)
    assert "-blind-" in new_run_id("a:b", "dci", blind=True, now=t1)
    long_spec = "open_clip:/tmp/pytest-of-root/pytest-1/test_x0/model/config.json/weights.pt"
    long_id = new_run_id(long_spec, "dci", now=t1)  # keeps the prefix and the path's tail
    assert re.fullmatch(
        r"20261123T101500Z-open-clip-[a-z0-9-]*config-json-weights-pt-dci-[0-9a-f]{4}", long_id
    )
    assert len(long_id) < 80
    assert len({new_run_id("a:b", "dci", now=t1) for _ in range(20)}) > 1


def test_run_dir_collision_draws_a_new_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(
        [
            "20260101T000000Z-a-dci-0000",
            "20260101T000000Z-a-dci-0000",
            "20260101T000000Z-a-dci-0001",
        ]
    )
    monkeypatch.setattr(store, "new_run_id", lambda *a, **k: next(ids))
    first = RunWriter(tmp_path, model_spec="a:b", task="dci")
    second = RunWriter(tmp_path, model_spec="a:b", task="dci")
    assert first.start().name == "20260101T000000Z-a-dci-0000"
    assert second.start().name == "20260101T000000Z-a-dci-0001"


@pytest.mark.parametrize(
    "make_bad", [lambda p: p / "file.txt" / "results", lambda p: p / "file.txt"]
)
def test_unwritable_results_dir(tmp_path: Path, make_bad: Any) -> None:
    (tmp_path / "file.txt").write_text("not a directory")
    bad = make_bad(tmp_path)
    with pytest.raises(ResultsError, match=re.escape(str(bad))):
        ensure_writable(bad)
    with pytest.raises(ResultsError):
        RunWriter(bad, model_spec="a:b", task="dci").start()


def test_ensure_writable_creates_the_dir(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert ensure_writable(target) == target and target.is_dir()
    assert list(target.iterdir()) == []


def test_resolve_run_by_path_id_and_prefix(tmp_path: Path) -> None:
    a = store_run(tmp_path, make_result(model="m:aaa"))
    b = store_run(tmp_path, make_result(model="m:bbb"))
    assert resolve_run(a.path).path == a.path
    assert resolve_run(a.run_id, results_dir=tmp_path).path == a.path
    assert resolve_run(b.run_id[:-2], results_dir=tmp_path).path == b.path
    with pytest.raises(ResultsError, match="ambiguous"):
        resolve_run(a.run_id[:8], results_dir=tmp_path)
    with pytest.raises(ResultsError, match="no run 'zzz'"):
        resolve_run("zzz", results_dir=tmp_path)


def test_jsonable() -> None:
    value = {"a": (1, np.float64(2.5)), 3: np.array([1, 2]), "inf": float("inf"), "p": Path("/x")}
    assert schema.jsonable(value) == {"a": [1, 2.5], "3": [1, 2], "inf": None, "p": "/x"}
    with pytest.raises(TypeError):
        schema.jsonable(object())


@pytest.mark.parametrize(
    ("settings", "label"),
    [
        ({}, "m:x"),
        ({"text_policy": "truncate", "precision": "fp32", "ties": "pessimistic"}, "m:x"),
        ({"text_policy": "chunk-mean"}, "m:x (chunk-mean)"),
        ({"precision": "bf16", "blind": True}, "m:x (bf16, blind)"),
        ({"ties": "first", "text_policy": "error"}, "m:x (error, ties first)"),
    ],
)
def test_label_names_the_settings_that_set_a_run_apart(settings: dict, label: str) -> None:
    from densecap_eval.results.schema import RunCard

    card = RunCard(run_id="r", model={"spec": "m:x"}, task="dci", **settings)
    assert card.label == label
