"""The report's "zero-shot vs long captions" line per model: mean over the datasets run, count,
partial mark, DCI SCM/Neg and retrieval R@1 beside it (hand-made rows)."""

from __future__ import annotations

from typing import Any

from densecap_eval.results.report import ReportRow
from densecap_eval.results.zeroshot_summary import summarise, table_cells


def _row(model: str, task: str, **metrics: Any) -> ReportRow:
    return ReportRow("run", model, task, metrics, "complete", None)  # type: ignore[arg-type]


def test_mean_count_partial_and_long_caption_metrics() -> None:
    rows = [
        _row("A", "elevater/cifar10", zeroshot=0.5),
        _row("A", "elevater/mnist", zeroshot=0.2),
        _row("A", "elevater/cifar10", zeroshot=0.9),  # a later run replaces the earlier
        _row("A", "elevater/voc2007classification", zeroshot=None),  # no value: not counted
        _row("A", "dci/all_swaps", scm=0.4, neg=0.3),
        _row("A", "docci/retrieval", t2i_r1=0.25, i2t_r1=0.5),
        _row("B (protocol elevater-dci)", "elevater/cifar10", zeroshot=0.1),
        _row("C", "dci/all_swaps", scm=0.9, neg=0.9),  # no zero-shot result: no line
    ]
    a, b = summarise(rows)
    assert (a.model, a.count, a.partial) == ("A", 2, True)
    assert a.mean == (0.9 + 0.2) / 2
    assert (a.scm, a.neg, a.retrieval_task, a.t2i_r1, a.i2t_r1) == (
        0.4, 0.3, "docci/retrieval", 0.25, 0.5,
    )  # fmt: skip
    assert b.model == "B (protocol elevater-dci)" and b.scm is None
    assert table_cells([a, b]) == [
        ["A", "55.0", "2/20 partial", "40.0", "30.0", "docci/retrieval", "25.0", "50.0"],
        ["B (protocol elevater-dci)", "10.0", "1/20 partial", "-", "-", "-", "-", "-"],
    ]


def test_all_twenty_is_not_partial() -> None:
    from densecap_eval.datasets.elevater.catalog import dataset_keys

    (s,) = summarise([_row("A", f"elevater/{k}", zeroshot=0.5) for k in dataset_keys()])
    assert (s.count, s.partial, s.mean) == (20, False, 0.5)
    assert table_cells([s])[0][2] == "20/20"


def test_the_run_card_may_name_the_base() -> None:
    from types import SimpleNamespace

    card = SimpleNamespace(model={"spec": "longclip:/m/b.pt", "base": "hf:openai/clip"},
                           model_spec="longclip:/m/b.pt")  # fmt: skip
    row = ReportRow("run", "longclip:/m/b.pt", "elevater/cifar10", {"zeroshot": 0.5},
                    "complete", SimpleNamespace(card=card))  # type: ignore[arg-type]  # fmt: skip
    (s,) = summarise([row])
    assert (s.spec, s.base) == ("longclip:/m/b.pt", "hf:openai/clip")
