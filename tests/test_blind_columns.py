"""The blind control beside each task: `report` and the dashboard leaderboard pair a run with
the blind run (``--blind``) of the same model spec, task, split, text policy and data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fake_scorers import FakeEmbeddingScorer
from test_results_store import make_result, store_run
from test_winoground import write_parquet

import densecap_eval
from densecap_eval.core.config import RunConfig
from densecap_eval.dashboard import data
from densecap_eval.results.compare import compare_runs
from densecap_eval.results.report import blind_partners, collect_rows, render_markdown
from densecap_eval.results.store import RunWriter, StoredRun, list_runs

TASK = "dci/all_swaps"
SPEC = "open_clip:ViT-B-32/openai"


def _metrics(scm: float, neg: float) -> dict[str, dict[str, object]]:
    return {TASK: {"scm": scm, "neg": neg, "n": 4, "ci": {"neg": [0.0, 1.0]}}}


def _store(out: Path, spec: str, *, blind: bool = False, scm: float = 0.5, neg: float = 0.75,
           split: str = "test", started: str | None = None) -> StoredRun:  # fmt: skip
    run = store_run(out, make_result(spec, metrics=_metrics(scm, neg), blind=blind))
    card = json.loads((run.path / "run.json").read_text())
    card["split"] = split
    card["started_at"] = started or card["started_at"]
    (run.path / "run.json").write_text(json.dumps(card))
    return next(r for r in list_runs(out) if r.path == run.path)


def _table(text: str, task: str = TASK) -> list[str]:
    sections = text.strip().split("\n\n")
    return sections[sections.index(f"### {task}") + 1].splitlines()


def test_unmatched_blind_runs_keep_their_row_and_no_column_appears(tmp_path: Path) -> None:
    _store(tmp_path, SPEC)
    _store(tmp_path, "hf:other", blind=True, scm=0.25, neg=0.5)
    table = _table(render_markdown(collect_rows(tmp_path)))
    assert table[0] == "| model | scm | neg | n | run |"  # as before: no blind pair here
    assert any(line.startswith("| hf:other (blind) | 25.0 | 50.0") for line in table)


def test_blind_column_sits_beside_each_metric(tmp_path: Path) -> None:
    clip = _store(tmp_path, SPEC)
    # the latest started control wins (whatever the order of the run ids)
    blind = _store(tmp_path, SPEC, blind=True, scm=0.25, neg=0.5, started="2026-03-01T00:00:00")
    old_blind = _store(tmp_path, SPEC, blind=True, scm=0.0, neg=0.0, started="2026-02-01T00:00:00")
    other = _store(tmp_path, "hf:other", scm=0.125, neg=0.875)
    table = _table(render_markdown(collect_rows(tmp_path)))
    assert table[0] == "| model | scm | scm blind | neg | neg blind | n | run | blind run |"
    assert f"| {SPEC} | 50.0 | 25.0 | 75.0 [0.0, 100.0] | 50.0 | 4 | {clip.run_id} | {blind.run_id} |" in table  # fmt: skip
    assert f"| hf:other | 12.5 | - | 87.5 [0.0, 100.0] | - | 4 | {other.run_id} |  |" in table
    # the latest control is folded in; an older one stays a row of its own (nothing hidden)
    assert [line.split(" | ")[0] for line in table if "(blind)" in line] == [f"| {SPEC} (blind)"]
    assert any(old_blind.run_id in line for line in table)


def test_blind_runs_pair_only_on_the_same_split(tmp_path: Path) -> None:
    _store(tmp_path, SPEC)
    _store(tmp_path, SPEC, blind=True, split="train")
    rows = collect_rows(tmp_path)
    assert blind_partners([(r.run.card, r.task) for r in rows]) == {}
    assert "blind run" not in render_markdown(rows)


def test_dashboard_leaderboard_shows_the_blind_value(tmp_path: Path) -> None:
    _store(tmp_path, SPEC)
    _store(tmp_path, SPEC, blind=True, scm=0.25, neg=0.5)
    _store(tmp_path, "hf:other", scm=0.125, neg=0.875)
    frame = data.leaderboard_rows(list_runs(tmp_path))
    assert len(frame) == 3  # the blind run keeps its own row (the Models filter can pick it)
    by_model = frame.set_index("model")
    assert by_model.at[SPEC, "neg_blind"] == 0.5 and by_model.at[SPEC, "scm_blind"] == 0.25
    assert math.isnan(by_model.at["hf:other", "neg_blind"])
    assert math.isnan(by_model.at[f"{SPEC} (blind)", "neg_blind"])
    assert "neg_blind" not in data.metric_names(frame)  # never ranked, never a metric
    assert list(data.best_marks(frame).columns) == ["scm", "neg"]
    view = data.display_leaderboard(frame).set_index("model")
    columns = list(view.columns)
    assert columns.index("neg blind") == columns.index("neg 95% CI") + 1
    assert view.at[SPEC, "neg blind"] == 50.0
    assert data.blind_columns(view.reset_index()) == ["scm blind", "neg blind"]


def test_dashboard_without_blind_runs_has_no_blind_columns(tmp_path: Path) -> None:
    _store(tmp_path, SPEC)
    frame = data.leaderboard_rows(list_runs(tmp_path))
    assert not [c for c in frame.columns if c.endswith("_blind")]
    assert data.blind_columns(data.display_leaderboard(frame)) == []


# --------------------------------------------------------------------------- winoground


@pytest.fixture
def winoground_runs(tmp_path: Path) -> tuple[Path, list[StoredRun]]:
    """A fake model on Winoground, its blind control, and a second model, stored."""
    root = write_parquet(tmp_path / "winoground")
    out = tmp_path / "results"
    runs = []
    for scorer, blind in ((FakeEmbeddingScorer(), False), (FakeEmbeddingScorer(), True),
                          (FakeEmbeddingScorer(dim=16, version="v2"), False)):  # fmt: skip
        result = densecap_eval.evaluate(scorer, "winoground", data_root=root, n_boot=20,
                                        use_cache=False, blind=blind)  # fmt: skip
        spec = "fake:embedding" if scorer.dim == 8 else "fake:embedding-16"
        with RunWriter(out, model_spec=spec, task="winoground",
                       config=RunConfig(blind=blind)) as writer:  # fmt: skip
            runs.append(writer.complete(result))
    return out, runs


def test_winoground_report_shows_the_text_prior(winoground_runs: tuple[Path, list[StoredRun]]) -> None:  # fmt: skip
    out, (normal, blind, _) = winoground_runs
    table = _table(render_markdown(collect_rows(out)), "winoground")
    assert table[0] == (
        "| model | text | text blind | image | image blind | group | group blind | n | run | "
        "blind run |"
    )
    row = next(line for line in table if line.startswith("| fake:embedding |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # grey images tie everywhere: the strict rule makes the blind control score 0
    assert (cells[2], cells[4], cells[6]) == ("0.0", "0.0", "0.0")
    assert cells[-2:] == [normal.run_id, blind.run_id]
    frame = data.leaderboard_rows(list_runs(out)).set_index("model")
    assert frame.at["fake:embedding", "group_blind"] == 0.0
    assert math.isnan(frame.at["fake:embedding-16", "group_blind"])


def test_winoground_runs_compare_per_example(winoground_runs: tuple[Path, list[StoredRun]]) -> None:  # fmt: skip
    _, (normal, _, second) = winoground_runs
    comparison = compare_runs(normal, second, n_boot=20)
    assert [(m.task, m.metric) for m in comparison.metrics] == [
        ("winoground", "text"), ("winoground", "image"), ("winoground", "group"),
    ]  # fmt: skip
    assert all(m.n == 3 and m.n_photos == 3 for m in comparison.metrics)  # clusters: examples


def test_dashboard_leaderboard_page_shows_blind_columns(
    winoground_runs: tuple[Path, list[StoredRun]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_dashboard import app_test

    out, _ = winoground_runs
    at = app_test(out, "leaderboard", monkeypatch)
    assert not at.exception
    table = at.dataframe[0].value.set_index("model")
    assert table.at["fake:embedding", "group blind"] == 0.0
    assert list(table.columns).index("text blind") == list(table.columns).index("text 95% CI") + 1
    assert any("blind control" in c.value for c in at.caption)
