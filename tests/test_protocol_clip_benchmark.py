"""``--protocol clip_benchmark``: the ELEVATER tasks run as CLIP_benchmark's (its wds copies).

``elevater/<key>`` becomes ``clip_benchmark/<key>`` and the suite ``elevater`` becomes
``clip_benchmark``; the stored run names the task run and the card the protocol; what a protocol
cannot run is one usage-error line (exit 2). docs/protocols/elevater.md, "Protocols".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from densecap_eval.cli.app import main
from densecap_eval.core.config import ConfigError, RunConfig
from densecap_eval.run.protocols import run_tasks

KEYS = ("cifar10", "voc2007classification")


@pytest.fixture(scope="module")
def wds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding CLIP_benchmark's wds copies of two sets (and no ELEVATER layout)."""
    from densecap_eval.datasets.elevater.synth import write_dataset, write_wds_copy

    base = tmp_path_factory.mktemp("cbproto")
    for key in KEYS:
        write_dataset(base / "elevater", key, images=5)
        write_wds_copy(base / "elevater", key, base / "wds")
    return base / "wds"


def _run(root: Path, out: Path, *args: str) -> int:
    return main(["run", "--model", "builtin:tiny", "--data-root", str(root), "--out", str(out),
                 "--cache-dir", str(out.parent / "cache"), "--bootstrap", "0", "--workers", "0",
                 *args])  # fmt: skip


def _runs(out: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(run card, metrics) of every stored run, oldest first."""
    return [(json.loads((run / "run.json").read_text()),
             json.loads((run / "metrics.json").read_text()))
            for run in sorted(out.iterdir())]  # fmt: skip


def test_mapping() -> None:
    assert run_tasks(["elevater/cifar10", "dci"], "default") == {
        "elevater/cifar10": "elevater/cifar10", "dci": "dci"}  # fmt: skip
    assert run_tasks(["elevater", "elevater/mnist", "clip_benchmark/dtd"], "clip_benchmark") == {
        "elevater": "clip_benchmark", "elevater/mnist": "clip_benchmark/mnist",
        "clip_benchmark/dtd": "clip_benchmark/dtd"}  # fmt: skip
    assert run_tasks(["elevater/mnist"], "elevater-dci") == {"elevater/mnist": "elevater/mnist"}
    # default keeps today's behaviour: a clip_benchmark task runs CLIP_benchmark's protocol
    assert run_tasks(["clip_benchmark/mnist"], "default") == {
        "clip_benchmark/mnist": "clip_benchmark/mnist"}  # fmt: skip
    assert RunConfig(protocol="clip_benchmark").protocol == "clip_benchmark"  # sweep axes too


@pytest.mark.parametrize(
    ("tasks", "protocol", "says"),
    [
        (["elevater/food101"], "clip_benchmark", "run elevater/food101 under --protocol default"),
        (["elevater/hateful-memes"], "clip_benchmark", "no copy of elevater/hateful-memes"),
        (["clip_benchmark/cifar10"], "elevater-dci", "run it under --protocol clip_benchmark"),
        (["clip_benchmark"], "elevater-dci", "does not apply to clip_benchmark/"),
        (["dci/all_swaps"], "clip_benchmark", "applies to zero-shot tasks only"),
        (["elevater/cifar10", "clip_benchmark/cifar10"], "clip_benchmark", "give it once"),
    ],
)
def test_refused(tasks: list[str], protocol: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        run_tasks(tasks, protocol)


@pytest.mark.parametrize(
    ("task", "protocol"),
    [("elevater/food101", "clip_benchmark"), ("clip_benchmark/cifar10", "elevater-dci"),
     ("dci", "clip_benchmark")],
)  # fmt: skip
def test_refused_on_the_command_line(
    wds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, protocol: str
) -> None:
    capsys.readouterr()
    assert _run(wds, tmp_path / "res", "--task", task, "--protocol", protocol) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())


def test_elevater_task_runs_clip_benchmarks_protocol(wds: Path, tmp_path: Path) -> None:
    assert _run(wds, tmp_path / "a", "--task", "elevater/cifar10",
                "--protocol", "clip_benchmark") == 0  # fmt: skip
    assert _run(wds, tmp_path / "b", "--task", "clip_benchmark/cifar10") == 0
    ((card, metrics),) = _runs(tmp_path / "a")
    ((direct_card, direct),) = _runs(tmp_path / "b")
    assert card["status"] == "complete" and card["task"] == "clip_benchmark/cifar10"
    assert card["protocol"] == "clip_benchmark" and direct_card["protocol"] == "default"
    assert card["tasks"] == ["clip_benchmark/cifar10"]
    assert "--task" in card["command"] and "elevater/cifar10" in card["command"]
    assert list(metrics) == ["clip_benchmark/cifar10"]
    assert metrics == direct
    assert metrics["clip_benchmark/cifar10"]["protocol"] == "clip_benchmark"


def test_suite_runs_clip_benchmarks_suite(wds: Path, tmp_path: Path) -> None:
    """The suite under clip_benchmark: the copies under the root run, the rest are absent."""
    assert _run(wds, tmp_path / "a", "--task", "elevater", "--protocol", "clip_benchmark") == 0
    assert _run(wds, tmp_path / "b", "--task", "clip_benchmark") == 0
    ((card, metrics),) = _runs(tmp_path / "a")
    ((_, direct),) = _runs(tmp_path / "b")
    assert card["task"] == "clip_benchmark" and card["protocol"] == "clip_benchmark"
    assert sorted(metrics) == sorted(f"clip_benchmark/{k}" for k in KEYS)
    assert metrics == direct


def test_evaluate_api_resolves_too(wds: Path, tmp_path: Path) -> None:
    from densecap_eval import evaluate

    result = evaluate("builtin:tiny", "elevater/cifar10", protocol="clip_benchmark",
                      data_root=wds, cache_dir=tmp_path / "cache", n_boot=0,
                      num_workers=0)  # fmt: skip
    assert result.task == "clip_benchmark/cifar10"
    assert result.config["protocol"] == "clip_benchmark"
    assert list(result.metrics) == ["clip_benchmark/cifar10"]


def test_help_lists_clip_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "<default|elevater-dci|clip_benchmark>" in out
    assert (
        "clip_benchmark (CLIP_benchmark's protocol: elevater/KEY runs as clip_benchmark/KEY" in out
    )


def test_sweep_axis(wds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol grid over elevater/cifar10: each cell stored as the task its protocol runs,
    and a second launch finds every cell complete (by its id)."""
    import yaml

    from densecap_eval.run.sweep.spec import load_sweep
    from densecap_eval.run.sweep.states import plan

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "models": ["builtin:tiny"], "tasks": ["elevater/cifar10"], "data_root": str(wds),
        "out": str(tmp_path / "res"), "grid": {"protocol": ["clip_benchmark"]},
        "options": {"n_boot": 0, "num_workers": 0, "cache_dir": str(tmp_path / "cache")},
    }))  # fmt: skip
    assert main(["sweep", str(path)]) == 0, capsys.readouterr().err
    (state,) = plan(load_sweep(path))
    assert state.status == "complete" and state.run is not None
    assert state.run.card.task == "clip_benchmark/cifar10"
    assert state.run.card.protocol == "clip_benchmark"
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 0
    assert "1 cell: 1 complete; 0 to run" in capsys.readouterr().err
