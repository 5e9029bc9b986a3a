"""`compare`: paired comparison of two hand-made runs with hand-computed tests and counts."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_results_store import make_result, store_run

from densecap_eval.cli.app import main
from densecap_eval.core.errors import ResultsError
from densecap_eval.results.compare import MCNEMAR_LABEL, compare_runs, print_comparison
from densecap_eval.results.schema import NOT_REFERENCE_EXACT, RunCard, reference_exact
from densecap_eval.results.store import RunWriter, StoredRun, read_run

ALL = "dci/all_swaps"
# Four photos of two entries each; B also scored a fifth photo that A did not.
IMAGES = ["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"]
KEYS = ["base", "m-1-sc"] * 4
A_NEG = [True, False, False, False, False, False, True, False]
B_NEG = [True, True, True, True, True, True, True, False]
# Per photo, d = sum(B - A) = [+1, +2, +2, 0]: of the 2**3 sign flips of the nonzero photos only
# +5 and -5 reach |5|, so the sign-flip p-value over photos is 2/8.
P_PHOTOS = 0.25
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


def test_compare_counts_clustered_test_and_mcnemar(runs: tuple[StoredRun, StoredRun]) -> None:
    comparison = compare_runs(*runs, n_boot=200, seed=0)
    (neg,) = comparison.metrics  # scm flags exist in B only: not compared
    assert (neg.task, neg.metric, neg.n, neg.n_photos) == (ALL, "neg", 8, 4)
    assert (neg.both_correct, neg.both_wrong, neg.only_a, neg.only_b) == (2, 1, 0, 5)
    assert (neg.acc_a, neg.acc_b) == (0.25, 0.875)
    assert neg.diff == pytest.approx(0.625)
    # the primary p: sign flips of whole photos (see P_PHOTOS)
    assert neg.p_value == pytest.approx(P_PHOTOS)
    assert neg.test == "paired sign-flip permutation over photos (4 photos, exact)"
    # exact McNemar, as if the 8 examples were independent: p = 2 * 0.5**5, too small
    assert neg.p_mcnemar_indep == pytest.approx(0.0625)
    assert neg.reference_exact
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
    assert (neg.diff, neg.p_value, neg.p_mcnemar_indep, neg.ci) == (0.0, 1.0, 1.0, (0.0, 0.0))


def test_compare_refuses_incomplete_runs(tmp_path: Path, runs: tuple[StoredRun, StoredRun]) -> None:
    with pytest.raises(RuntimeError), RunWriter(tmp_path, model_spec="m:c", task="dci") as writer:
        raise RuntimeError("boom")
    from densecap_eval.results.store import read_run

    failed = read_run(writer.run_dir)
    with pytest.raises(ResultsError, match="is failed: RuntimeError: boom"):
        compare_runs(runs[0], failed)


def test_compare_names_an_interrupted_run(
    tmp_path: Path, runs: tuple[StoredRun, StoredRun], capsys: pytest.CaptureFixture[str]
) -> None:
    # a "running" card whose writer (a finished process on this host) is gone reads as interrupted
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    writer = RunWriter(tmp_path / "other", model_spec="m:c", task="dci")
    writer.start()
    card_path = writer.run_dir / "run.json"
    card = json.loads(card_path.read_text())
    card["pid"] = int(dead.stdout)
    card_path.write_text(json.dumps(card))
    interrupted = read_run(writer.run_dir)
    assert interrupted.status == "interrupted"
    with pytest.raises(ResultsError, match=r"was interrupted before it finished \(the process"):
        compare_runs(interrupted, runs[1])

    code = main(["compare", str(runs[0].path), str(writer.run_dir)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert f"run {writer.run_dir} was interrupted" in err and "run it again" in err


@pytest.mark.parametrize(
    ("precision", "exact"), [(None, True), ("fp32", True), ("fp16", False), ("bf16", False)]
)
def test_reference_exact(precision: str | None, exact: bool) -> None:
    card = RunCard(run_id="r", model={"spec": "m:a"}, task="dci", precision=precision)
    assert reference_exact(card) is exact


def test_half_precision_marks_dci_subtests_not_reference_exact(tmp_path: Path) -> None:
    frame = _frame(A_NEG, ties=A_TIE)
    retrieval = pd.DataFrame(
        {"task": "dci/retrieval", "image": ["p0", "p1"], "i2t_r1_correct": [True, False]}
    )
    both = pd.concat([frame, retrieval], ignore_index=True)
    a = store_run(tmp_path, make_result("m:a", metrics={ALL: {"neg": 0.25}}, examples=both))
    b = store_run(tmp_path, make_result("m:b", metrics={ALL: {"neg": 0.25}}, examples=both))
    card = json.loads((b.path / "run.json").read_text())
    (b.path / "run.json").write_text(json.dumps({**card, "precision": "fp16"}))
    b = read_run(b.path)
    comparison = compare_runs(a, b, n_boot=20)
    flags = {(m.task, m.metric): m.reference_exact for m in comparison.metrics}
    assert flags == {(ALL, "neg"): False, ("dci/retrieval", "i2t_r1"): True}
    assert comparison.notes == [
        f"B ran in fp16, not fp32: DCI subtest results are {NOT_REFERENCE_EXACT}"
    ]
    out = io.StringIO()
    print_comparison(comparison, "table", file=out)
    rows = [line for line in out.getvalue().splitlines() if line.strip().startswith("dci/")]
    assert [row.rstrip().endswith(NOT_REFERENCE_EXACT) for row in rows] == [True, False]
    assert compare_runs(a, a, n_boot=0).notes == []  # both fp32: nothing marked


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
    assert neg["p_value"] == pytest.approx(P_PHOTOS) and neg["n_photos"] == 4
    assert neg["test"].startswith("paired sign-flip permutation over photos")
    assert neg["p_mcnemar_indep"] == pytest.approx(0.0625)
    assert data["tests"]["p_mcnemar_indep"] == MCNEMAR_LABEL
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
    assert cells[:7] == [ALL, "neg", "8", "4", "25.0", "87.5", "+62.5"]
    # after the interval: the clustered p first, then McNemar's
    assert cells[-7:] == ["0.25", "0.0625", "2", "1", "0", "5", "1/0"]
    header = next(line for line in out.splitlines() if line.strip().startswith("task"))
    assert header.index("p (photos)") < header.index("p McNemar (indep.)")
    assert "test: paired sign-flip permutation over photos (4 photos, exact)" in out
    assert f"p McNemar (indep.): {MCNEMAR_LABEL}" in out
    assert "note: the runs differ in split: A 'test', B 'valid'" in out


def test_compare_markdown_and_csv(runs: tuple[StoredRun, StoredRun]) -> None:
    comparison = compare_runs(*runs, n_boot=50)
    out = io.StringIO()
    print_comparison(comparison, "markdown", file=out)
    text = out.getvalue()
    header = next(line for line in text.splitlines() if line.startswith("| task"))
    assert header.index("p (photos)") < header.index("p McNemar (indep.)")
    assert f"| {ALL} | neg | 8 | 4 | 25.0 | 87.5 |" in text
    assert "- test: paired sign-flip permutation over photos (4 photos, exact)" in text
    assert MCNEMAR_LABEL in text and "- note: the runs differ in split" in text

    out = io.StringIO()
    print_comparison(comparison, "csv", file=out)
    (row,) = pd.read_csv(io.StringIO(out.getvalue())).to_dict("records")
    assert (row["task"], row["n"], row["n_photos"], row["ties_a"]) == (ALL, 8, 4, 1)
    assert row["p_value"] == pytest.approx(P_PHOTOS)
    assert row["p_mcnemar_indep"] == pytest.approx(0.0625)
    assert row["reference_exact"]
    with pytest.raises(ValueError, match="unknown compare format"):
        print_comparison(comparison, "html", file=io.StringIO())


def test_compare_cli_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "nope", "nada", "--results", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: no run 'nope' in")
