"""The dashboard's length and position charts on runs with the window buckets and the CLIP BPE
reference counts, and on older runs that stored only raw positions and the model's counts."""

from __future__ import annotations

import pandas as pd

from densecap_eval.dashboard import charts


def test_position_chart_uses_the_window_buckets_when_stored() -> None:
    frame = pd.DataFrame(
        {
            "diff_position": [5, 74, 76, None, 10],
            "diff_bucket": ["inside", "edge", "beyond", "identical", "inside"],
            "neg_correct": [True, False, False, False, False],
        }
    )
    got = charts.position_accuracy(frame, series="m")
    assert list(got["bucket"]) == ["inside", "edge", "beyond", "identical"]
    assert list(got["accuracy"]) == [50.0, 0.0, 0.0, 0.0] and list(got["n"]) == [2, 1, 1, 1]
    charts.position_lines(got).to_dict()  # a valid Vega-Lite spec


def test_old_and_new_runs_share_one_position_chart() -> None:
    new = pd.DataFrame(
        {
            "diff_position": [5, 80],
            "diff_bucket": ["inside", "later_chunk"],
            "neg_correct": [True, False],
        }
    )
    old = pd.DataFrame({"diff_position": [5, 76], "neg_correct": [True, False]})  # no bucket
    both = pd.concat(
        [charts.position_accuracy(new, series="new"), charts.position_accuracy(old, series="old")],
        ignore_index=True,
    )
    assert list(both["bucket"]) == ["inside", "later_chunk", "0-19", "60-76"]
    order = charts.position_order()
    assert order.index("inside") < order.index("edge") < order.index("beyond")
    assert set(both["bucket"]) <= set(order)
    charts.position_lines(both).to_dict()


def test_position_chart_without_positions_is_empty() -> None:
    got = charts.position_accuracy(pd.DataFrame({"neg_correct": [True]}), series="m")
    assert got.empty
    got = charts.position_accuracy(
        pd.DataFrame({"diff_bucket": pd.array([None], dtype="string"), "neg_correct": [True]}),
        series="m",
    )
    assert got.empty


def test_length_chart_prefers_the_reference_count() -> None:
    frame = pd.DataFrame(
        {
            "pos_tokens": [[10], [10], [10]],  # the model's own count (a VLM, say)
            "ref_tokens": [12, 70, 100],  # CLIP BPE
            "neg_correct": [True, False, True],
        }
    )
    got = charts.length_accuracy(frame, flag="neg_correct", series="m")
    assert list(got["bucket"]) == ["≤16", "65–77", "78–154"]
    old = frame.drop(columns=["ref_tokens"])  # older run: the model's counts
    assert list(charts.length_accuracy(old, flag="neg_correct", series="m")["bucket"]) == ["≤16"]
    columns = charts.chart_columns([*frame.columns, "diff_bucket", "task"], "neg_correct")
    assert "ref_tokens" in columns and "diff_bucket" in columns
