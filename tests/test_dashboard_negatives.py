"""The dashboard's "Where does the model stop reading?" chart: its data from a negatives task's
metrics.json, and the Charts page (Streamlit AppTest) over a truncate and a chunk-mean run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_scorers import FakeEmbeddingScorer

from densecap_eval.core.config import RunConfig
from densecap_eval.dashboard import charts, data
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.engine.engine import score_plan
from densecap_eval.engine.plan import ScoringPlan
from densecap_eval.metrics.length import diff_position_fn
from densecap_eval.results.store import RunWriter, list_runs
from densecap_eval.synth import generate_dci
from densecap_eval.tasks.context import ComputeContext
from densecap_eval.tasks.negatives import NegativesTask

APP = Path(data.__file__).with_name("app.py")
TASK = "docci/negatives"
HEADING = "Where does the model stop reading?"


@dataclass
class Result:
    metrics: dict[str, dict[str, Any]]
    examples: pd.DataFrame
    skipped: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    started_at: Any = None
    finished_at: Any = None


def _metrics(by_edit_position: dict[str, Any], *, policy: str, **extra: Any) -> dict[str, Any]:
    return {
        "neg": 0.5,
        "neg_visible": 0.75,
        "n": 8,
        "invisible": 2,
        "text_policy": policy,
        "model_max_text_tokens": 77,
        "by_edit_position": by_edit_position,
        "edit_position_bins": {"last_visible": 75, "width": 16},
        **extra,
    }


def test_reading_curve_from_metrics() -> None:
    bins = {
        "0-15": {"neg": 1.0, "neg_visible": 1.0, "n": 2, "invisible": 0},
        "16-31": {"neg": None, "neg_visible": None, "n": 0, "invisible": 0},  # empty: left out
        "80-95": {"neg": 0.0, "neg_visible": None, "n": 3, "invisible": 3},
        "512+": {"neg": 0.5, "neg_visible": None, "n": 2, "invisible": 2},
        "identical": {"neg": 0.0, "neg_visible": None, "n": 1, "invisible": 1},
    }
    curve = charts.reading_curve(_metrics(bins, policy="truncate"), series="m")
    assert list(curve.columns) == list(charts.READING_COLUMNS)
    assert curve["bin"].tolist() == ["0-15", "80-95", "512+"]
    assert curve["start"].tolist() == [0, 80, 512]
    assert curve["accuracy"].tolist() == [100.0, 0.0, 50.0]
    assert curve["invisible"].tolist() == [0, 3, 2]
    assert set(curve["policy"]) == {"truncate"} and set(curve["window_end"]) == {76}
    assert curve["visible_accuracy"].isna().tolist() == [False, True, True]
    # the policy given by the caller wins; runs without the breakdown give nothing
    assert set(
        charts.reading_curve(_metrics(bins, policy="x"), series="m", policy="chunk-mean")["policy"]
    ) == {"chunk-mean"}
    assert charts.reading_curve({"neg": 0.5}, series="m").empty
    assert charts.reading_curve(None, series="m").empty

    total = charts.reading_summary(_metrics(bins, policy="truncate"), series="m")
    assert total["invisible pairs"] == 2 and total["Neg (%)"] == 50.0
    assert total["Neg, visible pairs (%)"] == 75.0 and total["text policy"] == "truncate"

    spec = charts.reading_chart(curve).to_dict()
    assert len(spec["vconcat"]) == 2


# --------------------------------------------------------------------------- the page (AppTest)


@pytest.fixture(scope="module")
def neg_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A truncate run and a chunk-mean run of a negatives task (fake model, synthetic DCI)."""
    base = tmp_path_factory.mktemp("neg-dash")
    generate_dci(base / "data", images=4, seed=2, split_sizes=(0, 0, 4))
    dataset = DCIDataset(base / "data")
    task = NegativesTask(TASK, "generated", "test", "dci", text_kind="full", per_kind=2)
    results = base / "results"
    for policy in ("truncate", "chunk-mean"):
        scorer = FakeEmbeddingScorer(max_text_tokens=40, text_policy=policy)
        inst = task.prepare(dataset)
        plan = ScoringPlan()
        inst.add_to_plan(plan)
        table = score_plan(scorer, plan, text_policy=policy, num_workers=0, progress=False)
        ctx = ComputeContext(
            bootstrap_seed=0,
            n_boot=20,
            diff_positions=diff_position_fn(scorer)[0],
            max_text_tokens=40,
            text_policy=policy,
        )
        metrics, frame = inst.compute(table, ctx)
        config = RunConfig(text_policy=policy)
        with RunWriter(results, model_spec="fake:embedding", task=TASK, config=config) as writer:
            writer.complete(Result({TASK: metrics}, frame, config=config.to_dict()))
    assert len(list_runs(results)) == 2
    return results


def test_charts_page_draws_where_reading_stops(
    neg_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(data.ENV_VAR, str(neg_store))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["page"] = "charts"
    at = at.run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert HEADING in [s.value for s in at.subheader]
    totals = next(
        d.value for d in at.dataframe if "invisible pairs" in getattr(d.value, "columns", [])
    )
    assert sorted(totals["text policy"]) == ["chunk-mean", "truncate"]
    by_policy = dict(zip(totals["text policy"], totals["invisible pairs"], strict=True))
    assert by_policy["truncate"] > 0 and by_policy["chunk-mean"] == 0
    assert any("invisible" in c.value for c in at.caption)


def test_charts_page_without_negatives_has_no_reading_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    results = tmp_path / "results"
    frame = pd.DataFrame({"task": ["dci/all_swaps"], "neg_correct": [True]})
    with RunWriter(results, model_spec="m:a", task="dci") as writer:
        writer.complete(Result({"dci/all_swaps": {"neg": 1.0, "n": 1}}, frame))
    monkeypatch.setenv(data.ENV_VAR, str(results))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["page"] = "charts"
    at = at.run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert HEADING not in [s.value for s in at.subheader]


def test_two_negatives_runs_compare_pair_by_pair(neg_store: Path) -> None:
    from densecap_eval.results.compare import compare_runs
    from densecap_eval.results.store import load_examples

    run_a, run_b = sorted(list_runs(neg_store), key=lambda r: r.run_id)
    out = compare_runs(run_a, run_b, n_boot=20, seed=0)
    assert not any("share an identity" in note for note in out.notes), out.notes
    neg = next(r for r in out.metrics if r.metric == "neg")
    assert neg.task == TASK and neg.n == len(load_examples(run_a))
