"""Contract tests over the registries: every registered dataset keeps the promises docs/data.md
makes, whichever benchmark it is (issue 20, item 10).

Parametrized from ``list_datasets()``, so a new registration is covered without editing this
file; its valid release comes from tests/releases.py (`RELEASES`), and a dataset without one
fails here saying so. For each dataset:

- its fingerprint changes when one record of the release changes (and only then);
- one bad record is skipped loudly without ``--strict`` and stops the run with ``--strict``;
- an unknown ``--split`` is refused in one line naming the splits there are;
- a missing data root names the download command (or, for a dataset that cannot be
  downloaded, how to get it).

And every registered task's declared metrics (``Task.metrics``) are in the metrics.json its
run stores, each with its per-example column in examples.parquet.

Every run goes through the real CLI in-process with ``builtin:tiny`` (tests/bad_input.py's
harness: the release is copied first and must not be written to). Each release is written once
per module.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from bad_input import Case, Outcome, _load_once, check_strict, run_case, skip
from releases import RELEASES, Release
from text_tools import FAKE_TEXT_TOOLS

from densecap_eval.cli.app import main
from densecap_eval.datasets import DOWNLOADERS, list_datasets, load_dataset
from densecap_eval.datasets.aro import order_tasks
from densecap_eval.run import runner
from densecap_eval.tasks import concrete_tasks, get_task, list_tasks

DATASETS = list_datasets()

# How the "missing root" error says to get a dataset that `densecap-eval download` cannot fetch.
HOW_TO_GET = {
    "clip_benchmark": "wds_",  # point --data-root at CLIP_benchmark's wds_<name> copies
    "files": "JSONL",  # files reads the user's own JSONL, CSV or parquet file (or folder)
}


def release_of(name: str) -> Release:
    if name not in RELEASES:
        pytest.fail(
            f"dataset {name!r} is registered but has no valid release: add a writer to "
            "tests/releases.py (an entry in RELEASES)",
            pytrace=False,
        )
    return RELEASES[name]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``written(name)``: the folder of dataset ``name``'s valid release, written once."""
    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folders[name] = release_of(name).write(tmp_path_factory.mktemp(name) / "release")
        return folders[name]

    return get


@pytest.fixture(autouse=True)
def _no_spacy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ARO order tasks tag with the stand-in tools (tests/text_tools.py), not spaCy/NLTK."""
    monkeypatch.setattr(order_tasks, "DEFAULT_TEXT_TOOLS", FAKE_TEXT_TOOLS)


def _data_root(release: Path, entry: Release) -> Path:
    return release / entry.data if entry.data else release


def _errors(outcome: Outcome) -> list[str]:
    assert "Traceback" not in outcome.err, outcome.err
    return [line for line in outcome.err.splitlines() if line.startswith("error:")]


def _run(
    release: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    entry: Release,
    change: Callable[[Path], None] = lambda root: None,
    *args: str,
) -> Outcome:
    case = Case(change, "ok", args=(*entry.options, *args), data=entry.data)
    return run_case(release, tmp_path, case, task=entry.task, capsys=capsys)


# --- the table itself -------------------------------------------------------------------------


def test_every_release_is_of_a_registered_dataset_and_task() -> None:
    """No stale entry in tests/releases.py; each entry's task reads that entry's dataset."""
    assert sorted(RELEASES) == sorted(set(RELEASES) & set(DATASETS)), "unregistered dataset"
    tasks = set(list_tasks())
    for name, entry in RELEASES.items():
        assert entry.task in tasks, (name, entry.task)
        assert get_task(entry.task).dataset == name, (name, entry.task)


def test_a_dataset_without_a_release_fails_naming_the_file() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"add a writer to tests/releases\.py"):
        release_of("a-new-benchmark")


# --- the contracts ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_fingerprint_changes_with_the_content(
    name: str, written: Callable[[str], Path], tmp_path: Path
) -> None:
    entry = release_of(name)
    release = written(name)
    copy = tmp_path / "copy"
    shutil.copytree(release, copy, symlinks=True)

    def fingerprint(root: Path) -> str:
        dataset = load_dataset(name, root=str(_data_root(root, entry)))
        return str(dataset.fingerprint(list(dataset.splits())))

    before = fingerprint(release)
    assert fingerprint(copy) == before, "the same content in another folder"
    entry.defect(copy)
    assert fingerprint(copy) != before, "one record changed"


@pytest.mark.parametrize("name", DATASETS)
def test_a_bad_record_is_skipped_loudly(
    name: str, written: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = release_of(name)
    good = _run(written(name), tmp_path / "good", capsys, entry)
    assert good.code == 0 and not _errors(good), good.err
    (intact,) = good.runs
    bad = _run(written(name), tmp_path / "bad", capsys, entry, entry.defect)
    assert bad.code == 0 and not _errors(bad), bad.err
    (run,) = bad.runs
    assert run["status"] == "complete"
    assert run["n_skipped"] == len(run["skipped"]) == 1, run["skipped"]
    (item,) = run["skipped"]
    said = f"{item['image']}: {item['reason']}"
    for word in entry.bad:
        assert word in said, (word, said)
    assert f"skipped image {item['image']}" in bad.err, bad.err
    assert 0 < run["n_examples"] < intact["n_examples"], (run["n_examples"], intact["n_examples"])


@pytest.mark.parametrize("name", DATASETS)
def test_strict_stops_at_the_bad_record(
    name: str, written: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1, one ``error:`` line naming the record, no traceback, no complete run."""
    entry = release_of(name)
    case = skip(entry.defect, 0, *entry.bad, args=entry.options, data=entry.data)
    check_strict(written(name), tmp_path, case, task=entry.task, capsys=capsys)


@pytest.mark.parametrize("name", DATASETS)
def test_an_unknown_split_is_refused(
    name: str, written: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = release_of(name)
    outcome = _run(written(name), tmp_path, capsys, entry, lambda root: None, "--split", "nope")
    errors = _errors(outcome)
    assert outcome.code != 0 and len(errors) == 1, outcome.err
    assert not [r for r in outcome.runs if r["status"] == "complete"], outcome.runs
    dataset = load_dataset(name, root=str(_data_root(written(name), entry)))
    # The line names the splits there are: the release's, or the one its task reads ("test"
    # for the zero-shot tasks, whose dataset's splits are the datasets it holds).
    known = [*dataset.splits(), "test"] if entry.splits_declared else list(dataset.splits())
    assert any(split in errors[0] for split in known), (known, errors[0])


@pytest.mark.parametrize("name", DATASETS)
def test_a_missing_root_names_how_to_get_it(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = release_of(name)
    empty = tmp_path / "src" / "empty"
    empty.mkdir(parents=True)
    case = Case(lambda root: None, "fail", args=entry.options, data="absent")
    outcome = run_case(empty, tmp_path, case, task=entry.task, capsys=capsys)
    errors = _errors(outcome)
    assert outcome.code == 1 and len(errors) == 1, outcome.err
    how = f"densecap-eval download {name}" if name in DOWNLOADERS else HOW_TO_GET.get(name)
    assert how is not None, f"{name} has no download: add how to get it to HOW_TO_GET"
    assert how in errors[0], (how, errors[0])
    assert "absent" in errors[0], errors[0]


# --- every task's declared metrics are stored (tasks declare `metrics`: MetricSpec, ...) ----

TASKS = concrete_tasks(list_tasks())


def _signature(task: str) -> tuple[object, ...]:
    """Tasks of one dataset with the same class and declared metrics compute alike: one run of
    each signature covers them (ELEVATER's 20 zero-shot sets differ in their data only)."""
    found = get_task(task)
    return (found.dataset, type(found).__name__, tuple(found.metrics))


@pytest.fixture(scope="module")
def stored(
    written: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[dict[str, Any], list[str]]]:
    """``stored(task)``: metrics.json's entry and examples.parquet's columns of a run of
    ``task`` (or of the task of its dataset with the same signature, run in its place); one
    CLI run per dataset, of one task per signature."""
    import pandas as pd

    runs: dict[tuple[object, ...], tuple[dict[str, Any], list[str]]] = {}

    def get(task: str) -> tuple[dict[str, Any], list[str]]:
        if _signature(task) not in runs:
            dataset = get_task(task).dataset
            entry = release_of(dataset)
            chosen: dict[tuple[object, ...], str] = {}
            for name in [entry.task, *TASKS]:  # the release's own task first
                if get_task(name).dataset == dataset:
                    chosen.setdefault(_signature(name), name)
            out = tmp_path_factory.mktemp("runs")
            argv = ["run", "--model", "builtin:tiny", "--out", str(out), "--bootstrap", "0",
                    "--data-root", str(_data_root(written(dataset), entry)), *entry.options,
                    *(arg for name in chosen.values() for arg in ("--task", name))]  # fmt: skip
            with mock.patch.object(runner, "load_scorer", _load_once):
                assert main(argv) == 0, argv
            for card in out.glob("*/metrics.json"):
                metrics = json.loads(card.read_text(encoding="utf-8"))
                columns = list(pd.read_parquet(card.parent / "examples.parquet").columns)
                for name, entry_metrics in metrics.items():
                    runs[_signature(name)] = (entry_metrics, columns)
        return runs[_signature(task)]

    return get


@pytest.mark.parametrize("task", TASKS)
def test_declared_metrics_are_in_metrics_json(
    task: str, stored: Callable[[str], tuple[dict[str, Any], list[str]]]
) -> None:
    declared = get_task(task).metrics
    assert declared, f"{task} declares no metric"
    assert any(spec.headline for spec in declared), f"{task} declares no headline metric"
    metrics, columns = stored(task)
    for spec in declared:
        assert spec.name in metrics, (task, spec.name, sorted(metrics))
        if spec.column is not None:
            assert spec.column in columns, (task, spec.column, columns)
