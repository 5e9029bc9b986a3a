"""`densecap-eval synth --elevater` then `run --task elevater/...` offline with builtin:tiny."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from densecap_eval.cli.app import main
from densecap_eval.datasets.elevater import catalog

TASKS = ["elevater/cifar10", "elevater/voc2007classification", "elevater/kitti-distance"]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("elevater") / "data"
    assert main(["synth", str(root), "--elevater", "--images", "4"]) == 0
    return root


def _run(root: Path, tmp: Path, *args: str) -> int:
    return main(["run", "--model", "builtin:tiny", "--data-root", str(root), "--out",
                 str(tmp / "res"), "--cache-dir", str(tmp / "cache"), "--bootstrap", "0",
                 "--workers", "0", *args])  # fmt: skip


def test_synth_writes_every_dataset_in_its_layout(release: Path) -> None:
    for key in catalog.dataset_keys():
        s = catalog.spec(key)
        for name in [s.test_index, *s.test_files, *([s.labelmap] if s.labelmap else [])]:
            assert (release / s.root_folder / name).is_file(), (key, name)


def test_run_offline_and_report(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [x for t in TASKS for x in ("--task", t)]
    code = _run(release, tmp_path, *args)
    assert code == 0, capsys.readouterr().err
    runs = sorted((tmp_path / "res").iterdir())
    assert len(runs) == len(TASKS)
    seen = {}
    for run in runs:
        card = json.loads((run / "run.json").read_text())
        assert card["status"] == "complete" and card["protocol"] == "default"
        for task, m in json.loads((run / "metrics.json").read_text()).items():
            seen[task] = m
    assert sorted(seen) == sorted(TASKS)
    assert seen["elevater/voc2007classification"]["metric"] == "11point_mAP"
    assert all(m["n"] == 4 and 0.0 <= m["zeroshot"] <= 1.0 for m in seen.values())
    capsys.readouterr()
    assert main(["report", str(tmp_path / "res"), "--format", "json"]) == 0
    assert "zeroshot" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "res"), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "## zero-shot classification vs long captions" in out
    assert "| builtin:tiny |" in out and "3/20 partial" in out


def test_protocol_elevater_dci_is_for_zero_shot_tasks_only(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(release, tmp_path, "--task", "dci/all_swaps", "--protocol", "elevater-dci")
    assert code != 0
    assert "applies to zero-shot tasks only" in capsys.readouterr().err


def test_a_broken_dataset_is_one_error_line(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "broken"
    folder = catalog.spec("mnist").root_folder
    shutil.copytree(release / folder, root / folder)
    (root / folder / "labels.txt").unlink()
    assert _run(root, tmp_path, "--task", "elevater/mnist") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "labels.txt is missing" in err[-1]
