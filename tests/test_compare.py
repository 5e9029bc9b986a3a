"""`compare`: paired comparison of two hand-made runs with hand-computed McNemar counts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_results_store import make_result, store_run

from densecap_eval.cli.app import main
from densecap_eval.errors import ResultsError
from densecap_eval.results.compare import compare_runs
from densecap_eval.results.store import RunWriter, StoredRun

ALL = "dci/all_swaps"
# Four photos of two entries each; B also scored a fifth photo that A did not.
IMAGES = ["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"]
KEYS = ["base", "m-1-sc"] * 4
A_NEG = [True, False, False, False, False, False, True, False]
B_NEG = [True, True, True, True, True, True, True, False]
A_TIE = [False] * 7 + [True]  # A's last example was decided on equal scores


def _frame(
    neg: list[bool], *, ties: list[bool], extra: bool = False, scm: bool = False
) -> pd.DataFrame:
    images, keys, neg = list(IMAGES), list(KEYS), list(neg)
    ties = list(ties)
    if extra:
        images, keys, neg, ties = [*images, "p4"], [*keys, "base"], [*neg, True], [*ties, False]
    frame = pd.DataFrame(
        {
            "task": ALL,
            "image": images,
            "entry_key": keys,
            "positives": [[f"caption of {i}/{k}"] for i, k in zip(images, keys, strict=True)],
            "neg_correct": neg,
            "neg_tie": ties,
        }
    )
    if scm:
        frame["scm_correct"] = True
    return frame


@pytest.fixture
def runs(tmp_path: Path) -> tuple[StoredRun, StoredRun]:
    metrics_a = {ALL: {"neg": 0.25, "n": 8}}
    metrics_b = {ALL: {"neg": 8 / 9, "scm": 1.0, "n": 9}}
    a = store_run(
        tmp_path, make_result("m:a", metrics=metrics_a, examples=_frame(A_NEG, ties=A_TIE))
    )
    b = store_run(
        tmp_path,
        make_result("m:b", metrics=metrics_b, split="valid",
                    examples=_frame(B_NEG, ties=[False] * 8, extra=True, scm=True)),
    )  # fmt: skip
    return a, b


def test_compare_counts_and_mcnemar(runs: tuple[StoredRun, StoredRun]) -> None:
    comparison = compare_runs(*runs, n_boot=200, seed=0)
    (neg,) = comparison.metrics  # scm flags exist in B only: not compared
    assert (neg.task, neg.metric, neg.n) == (ALL, "neg", 8)
    assert (neg.both_correct, neg.both_wrong, neg.only_a, neg.only_b) == (2, 1, 0, 5)
    assert (neg.acc_a, neg.acc_b) == (0.25, 0.875)
    assert neg.diff == pytest.approx(0.625)
    # exact McNemar: 5 discordant pairs all one way, p = 2 * 0.5**5
    assert neg.p_value == pytest.approx(0.0625)
    assert (neg.ties_a, neg.ties_b) == (1, 0)
    lo, hi = neg.ci
    assert -1.0 <= lo <= neg.diff <= hi <= 1.0
    assert compare_runs(*runs, n_boot=200, seed=0).metrics[0].ci == neg.ci  # seeded
    assert comparison.notes == [
        "the runs differ in split: A 'test', B 'valid'",
        "8 examples shared; 0 only in A and 1 only in B are left out",
    ]


def test_identical_runs(tmp_path: Path) -> None:
    frame = _frame(A_NEG, ties=A_TIE)
    a = store_run(tmp_path, make_result("m:a", metrics={ALL: {"neg": 0.25}}, examples=frame))
    b = store_run(tmp_path, make_result("m:b", metrics={ALL: {"neg": 0.25}}, examples=frame))
    (neg,) = compare_runs(a, b, n_boot=50).metrics
    assert (neg.both_correct, neg.both_wrong, neg.only_a, neg.only_b) == (2, 6, 0, 0)
    assert (neg.diff, neg.p_value, neg.ci) == (0.0, 1.0, (0.0, 0.0))


def test_compare_refuses_incomplete_runs(tmp_path: Path, runs: tuple[StoredRun, StoredRun]) -> None:
    with pytest.raises(RuntimeError), RunWriter(tmp_path, model_spec="m:c", task="dci") as writer:
        raise RuntimeError("boom")
    from densecap_eval.results.store import read_run

    failed = read_run(writer.run_dir)
    with pytest.raises(ResultsError, match="is failed: RuntimeError: boom"):
        compare_runs(runs[0], failed)


def test_compare_cli_json(
    runs: tuple[StoredRun, StoredRun], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = runs
    code = main(
        [
            "compare",
            a.run_id,
            str(b.path),
            "--results",
            str(tmp_path),
            "--format",
            "json",
            "--bootstrap",
            "50",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["run_a"]["run_id"] == a.run_id and data["run_b"]["model"] == "m:b"
    (neg,) = data["metrics"]
    assert {k: neg[k] for k in ("metric", "n", "both_correct", "both_wrong", "only_a", "only_b")} == {
        "metric": "neg", "n": 8, "both_correct": 2, "both_wrong": 1, "only_a": 0, "only_b": 5,
    }  # fmt: skip
    assert len(data["notes"]) == 2


def test_compare_cli_table(
    runs: tuple[StoredRun, StoredRun], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = runs
    code = main(["compare", str(a.path), str(b.path), "--bootstrap", "50"])
    out = capsys.readouterr().out
    assert code == 0
    row = next(line for line in out.splitlines() if line.strip().startswith(ALL))
    cells = row.split()
    assert cells[:6] == [ALL, "neg", "8", "25.0", "87.5", "+62.5"]
    assert cells[-5:] == ["2", "1", "0", "5", "1/0"]
    assert "note: the runs differ in split: A 'test', B 'valid'" in out


def test_compare_cli_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "nope", "nada", "--results", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: no run 'nope' in")
