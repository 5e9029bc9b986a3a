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


def test_a_partial_suite_is_stored_marked_and_not_a_failure(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--task elevater` with 2 of the 20 datasets under the root: both scored and stored, the
    other 18 named once with how to get each, the report says 2/20 partial, exit 0."""
    root = tmp_path / "two"
    for key in ("cifar10", "mnist"):
        folder = catalog.spec(key).root_folder
        shutil.copytree(release / folder, root / folder)
    assert _run(root, tmp_path, "--task", "elevater") == 0
    err = capsys.readouterr().err
    assert "error:" not in err
    assert "18 task(s) of a suite not run" in err and "partial" in err
    for key in catalog.dataset_keys():
        if key not in ("cifar10", "mnist"):
            assert f"`densecap-eval download elevater/{key}` says how to get it" in err, key
    (run,) = (tmp_path / "res").iterdir()
    card = json.loads((run / "run.json").read_text())
    assert card["status"] == "complete" and len(card["config"]["unavailable"]) == 18
    assert sorted(json.loads((run / "metrics.json").read_text())) == [
        "elevater/cifar10", "elevater/mnist",
    ]  # fmt: skip
    assert main(["report", str(tmp_path / "res"), "--format", "markdown"]) == 0
    assert "| 2/20 partial |" in capsys.readouterr().out


def test_an_absent_dataset_asked_for_alone_fails(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "one"
    folder = catalog.spec("mnist").root_folder
    shutil.copytree(release / folder, root / folder)
    assert _run(root, tmp_path, "--task", "elevater/cifar10") != 0  # nothing scored: an error
    assert "error: elevater/cifar10:" in capsys.readouterr().err


def test_a_failed_dataset_in_a_suite_still_fails_the_run(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A present dataset with no usable photo is a failure (exit 1), absent ones are not."""
    import zipfile

    root = tmp_path / "bad"
    for key in ("cifar10", "mnist"):
        folder = catalog.spec(key).root_folder
        shutil.copytree(release / folder, root / folder)
    spec = catalog.spec("mnist")
    path = root / spec.root_folder / spec.test_files[0]
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"not an image")
    assert _run(root, tmp_path, "--task", "elevater") == 1
    err = capsys.readouterr().err
    assert "error: " in err and "elevater/mnist could not run here" in err
    assert "18 task(s) of a suite not run" in err


def test_decoded_photos_follow_cache_dir(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ELEVATER's zip members are decoded into <--cache-dir>/elevater-photos/, not the per-user
    cache; without --cache-dir they go to the per-user cache, as the embeddings do."""
    user = tmp_path / "user-cache"
    monkeypatch.setenv("DENSECAP_EVAL_CACHE", str(user))
    assert _run(release, tmp_path, "--task", "elevater/cifar10") == 0
    photos = list((tmp_path / "cache" / "elevater-photos").rglob("*.*"))
    assert len(photos) >= 4 and not (user / "elevater-photos").exists()
    code = main(["run", "--model", "builtin:tiny", "--data-root", str(release), "--out",
                 str(tmp_path / "res2"), "--bootstrap", "0", "--workers", "0", "--task",
                 "elevater/cifar10"])  # fmt: skip
    assert code == 0 and len(list((user / "elevater-photos").rglob("*.*"))) == len(photos)
