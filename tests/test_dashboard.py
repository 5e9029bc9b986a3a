"""The Streamlit dashboard: its data helpers on hand-made stores, and the app itself driven by
Streamlit's `AppTest` over a store made by real runs of the bundled model on the bundled sample."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from densecap_eval.core.errors import ResultsError
from densecap_eval.dashboard import charts, compare_view, data, explorer
from densecap_eval.results.store import RunWriter, StoredRun, list_runs

APP = Path(data.__file__).with_name("app.py")
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
ALL = "dci/all_swaps"
BASE = "dci/base_swaps"


# --------------------------------------------------------------------------- hand-made stores


@dataclass
class Result:
    metrics: dict[str, dict[str, Any]]
    examples: pd.DataFrame
    skipped: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    started_at: Any = None
    finished_at: Any = None


def examples_frame(neg: list[bool], *, task: str = ALL) -> pd.DataFrame:
    """DCI-like rows on photos p0, p0, p1, p1, ... with 10, 20, 30, ... positive tokens."""
    n = len(neg)
    return pd.DataFrame(
        {
            "task": task,
            "image": [f"p{i // 2}" for i in range(n)],
            "entry_key": ["base" if i % 2 == 0 else "m-1-sc" for i in range(n)],
            "positives": [[f"a red ball number {i}"] for i in range(n)],
            "negative": [f"a blue ball number {i}" for i in range(n)],
            "negative_key": ["swaps_0" if i % 2 == 0 else "layout_1" for i in range(n)],
            "pos_scores": [[0.5]] * n,
            "neg_score": [0.4] * n,
            "neg_correct": neg,
            "pos_tokens": [[10 * (i + 1)] for i in range(n)],
            "neg_tokens": [10 * (i + 1) for i in range(n)],
            "pos_cut": [[10 * (i + 1) > 77] for i in range(n)],
            "neg_cut": [10 * (i + 1) > 77 for i in range(n)],
        }
    )


def store(
    root: Path, model: str, metrics: dict[str, dict[str, Any]], frame: pd.DataFrame
) -> StoredRun:
    result = Result(metrics, frame, config={"dataset": {"name": "dci", "root": "/nowhere"}})
    with RunWriter(root, model_spec=model, task="dci") as writer:
        return writer.complete(result)


@pytest.fixture
def hand_store(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    store(root, "m:a", {ALL: {"neg": 0.5, "scm": 0.25, "n": 4, "cut_share": 0.5, "ci": {"neg": [0.2, 0.8]}},
                        BASE: {"neg": 1.0, "n": 2}},
          examples_frame([True, False, True, False]))  # fmt: skip
    store(
        root,
        "m:b",
        {ALL: {"neg": 0.75, "scm": 0.0, "n": 4, "cut_share": 0.25}},
        examples_frame([True] * 3 + [False]),
    )
    (root / "junk").mkdir()
    (root / "junk" / "run.json").write_text("{not json", encoding="utf-8")
    return root


# --------------------------------------------------------------------------- data helpers


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--results", "/a"], {}, "/a"),
        ([], {data.ENV_VAR: "/b"}, "/b"),
        (["--results", "/a"], {data.ENV_VAR: "/b"}, "/a"),  # the command line wins
        (["-x", "--other", "1"], {}, None),  # foreign arguments (a test runner's) are ignored
    ],
)
def test_results_dir_from(argv: list[str], env: dict[str, str], expected: str | None) -> None:
    found = data.results_dir_from(argv, env)
    assert (str(found) if found else None) == expected


def test_leaderboard_rows_best_and_filters(hand_store: Path) -> None:
    runs = list_runs(hand_store)
    assert [r.status for r in runs].count("corrupt") == 1
    frame = data.leaderboard_rows(runs)
    assert sorted(zip(frame["model"], frame["task"], strict=True)) == [
        ("m:a", ALL), ("m:a", BASE), ("m:b", ALL)
    ]  # fmt: skip
    assert data.metric_names(frame) == ["scm", "neg", "cut_share"]
    assert data.count_names(frame) == ["n"]  # an integer: a count, not a percentage
    a_all = frame[(frame["model"] == "m:a") & (frame["task"] == ALL)].iloc[0]
    assert (a_all["neg_lo"], a_all["neg_hi"]) == (0.2, 0.8)
    assert np.isnan(frame[frame["model"] == "m:b"].iloc[0]["neg_lo"])

    shown = data.display_leaderboard(frame).set_index(["model", "task"])
    # best within each task: m:b leads all_swaps on neg, m:a on scm; m:a is alone on base_swaps
    assert shown.loc[("m:a", ALL), "best"] == "scm"  # a larger cut_share is not "best"
    assert shown.loc[("m:b", ALL), "best"] == "neg"
    assert shown.loc[("m:a", BASE), "best"] == "neg"
    assert shown.loc[("m:a", ALL), "neg"] == 50.0
    assert shown.loc[("m:a", ALL), "neg 95% CI"] == "[20.0, 80.0]"
    assert shown.loc[("m:a", ALL), "n"] == 4

    assert len(data.filter_leaderboard(frame, tasks=[BASE])) == 1
    assert list(data.filter_leaderboard(frame, models=["m:b"])["model"]) == ["m:b"]
    assert data.filter_leaderboard(frame, dates=(date(2000, 1, 1), date(2000, 1, 2))).empty
    csv_text = data.leaderboard_csv(frame).decode()
    assert csv_text.splitlines()[0].startswith("model,task,date,run_id")


@pytest.fixture
def mixed_store(tmp_path: Path) -> Path:
    """A DCI run (two subtests and retrieval) and an Urban1k retrieval run."""
    root = tmp_path / "results"
    store(root, "m:a", {ALL: {"scm": 0.25, "neg": 0.5, "n": 4},
                        "dci/retrieval": {"i2t_r1": 0.5, "t2i_r1": 0.25, "n": 4}},
          pd.concat([examples_frame([True] * 4), examples_frame([True] * 4, task="dci/retrieval")],
                    ignore_index=True))  # fmt: skip
    store(root, "m:b", {"urban1k/retrieval": {"i2t_r1": 0.75, "t2i_r1": 0.5, "n": 4}},
          examples_frame([True] * 4, task="urban1k/retrieval"))  # fmt: skip
    return root


def test_leaderboard_by_dataset_without_empty_columns(mixed_store: Path) -> None:
    frame = data.leaderboard_rows(list_runs(mixed_store))
    # The dataset is the task's prefix (the urban1k run's card says dci here).
    datasets = dict(zip(frame["task"], frame["dataset"], strict=True))
    assert datasets == {ALL: "dci", "dci/retrieval": "dci", "urban1k/retrieval": "urban1k"}
    assert data.leaderboard_datasets(frame) == ["dci", "urban1k"]
    groups = dict(data.leaderboard_groups(frame))
    assert list(groups) == ["dci", "urban1k"]
    assert sorted(groups["dci"]["task"]) == [ALL, "dci/retrieval"]

    urban = data.display_leaderboard(groups["urban1k"])
    assert [c for c in urban.columns if c in data.metric_names(frame)] == ["i2t_r1", "t2i_r1"]
    dci = data.display_leaderboard(groups["dci"])
    assert [c for c in dci.columns if c in data.metric_names(frame)] == [
        "scm", "neg", "i2t_r1", "t2i_r1"
    ]  # fmt: skip
    only_urban = data.filter_leaderboard(frame, datasets=["urban1k"])
    assert list(only_urban["task"]) == ["urban1k/retrieval"]
    assert "scm" not in data.display_leaderboard(only_urban).columns


def test_status_frame_and_card_table(hand_store: Path) -> None:
    runs = list_runs(hand_store)
    status = data.status_frame(data.unusable_runs(runs))
    assert list(status["status"]) == ["corrupt"]
    assert "not valid JSON" in status["reason"].iloc[0]

    a, b = (r for r in runs if r.is_complete)
    table = data.card_table(a, b).set_index("field")
    assert table.loc["model.spec", "A"] == "m:a" and table.loc["model.spec", "B"] == "m:b"
    assert bool(table.loc["model.spec", "differs"]) is True
    assert bool(table.loc["dataset.root", "differs"]) is False
    broken = next(r for r in runs if not r.is_complete)
    assert "(reason)" in data.card_table(broken)["field"].tolist()


@pytest.mark.parametrize(
    ("key", "kind"),
    [("swaps_0", "swaps"), ("layout_12", "layout"), ("basic", "basic"), (None, "(none)")],
)
def test_negative_type(key: Any, kind: str) -> None:
    assert explorer.negative_type(key) == kind


@pytest.mark.parametrize(
    ("positive", "negative", "changed_pos", "changed_neg"),
    [
        ("a red ball", "a blue ball", ["red"], ["blue"]),
        ("the dog left of the cat", "the cat left of the dog", ["dog", "cat"], ["cat", "dog"]),
        ("same words", "same words", [], []),
        ("a ball", "a small ball", [], ["small"]),
    ],
)
def test_word_diff(
    positive: str, negative: str, changed_pos: list[str], changed_neg: list[str]
) -> None:
    pos, neg = explorer.word_diff(positive, negative)
    assert [w for w, on in pos if on] == changed_pos
    assert [w for w, on in neg if on] == changed_neg
    pos_html, neg_html = explorer.diff_pair_html("a <red> ball", "a blue ball")
    assert "&lt;red&gt;</span>" in pos_html and ">blue</span>" in neg_html


@pytest.mark.parametrize(
    ("spec", "expected_rows"),
    [
        (explorer.ExampleFilter(), [0, 1, 2, 3]),
        (explorer.ExampleFilter(outcome="correct"), [0, 2]),
        (explorer.ExampleFilter(outcome="wrong"), [1, 3]),
        (explorer.ExampleFilter(outcome="disagree"), [1]),  # the other run: T T T F
        (explorer.ExampleFilter(negative_types=("layout",)), [1, 3]),
        (explorer.ExampleFilter(tokens=(15, 30)), [1, 2]),  # 10, 20, 30, 40 tokens
        (explorer.ExampleFilter(outcome="wrong", tokens=(25, 100)), [3]),
    ],
)
def test_filter_examples(spec: explorer.ExampleFilter, expected_rows: list[int]) -> None:
    mine = examples_frame([True, False, True, False])
    other = examples_frame([True, True, True, False])
    frame = explorer.attach_other(mine, other, "neg_correct")
    assert list(explorer.filter_examples(frame, spec).index) == expected_rows


def test_paging() -> None:
    frame = pd.DataFrame({"x": range(20)})
    assert explorer.page_count(20, size=8) == 3 and explorer.page_count(0) == 1
    assert list(explorer.page_of(frame, 3, size=8)["x"]) == [16, 17, 18, 19]
    assert list(explorer.page_of(frame, 99, size=8)["x"]) == [16, 17, 18, 19]  # clamped


@pytest.mark.parametrize(
    ("count", "bucket"),
    [(1, "≤16"), (16, "≤16"), (17, "17–32"), (77, "65–77"), (78, "78–154"), (248, "155–248"),
     (249, ">248"), (None, None)],
)  # fmt: skip
def test_length_bucket(count: int | None, bucket: str | None) -> None:
    assert charts.length_bucket(count) == bucket


def test_length_accuracy_and_cut_share() -> None:
    frame = examples_frame([True, False, True, False, True, True, True, True, False])
    # tokens 10..90: buckets ≤16 {10}, 17–32 {20,30}, 33–48 {40}, 49–64 {50,60}, 65–77 {70},
    # 78–154 {80,90}
    got = charts.length_accuracy(frame, flag="neg_correct", series="m").set_index("bucket")
    assert list(got.index) == ["≤16", "17–32", "33–48", "49–64", "65–77", "78–154"]
    assert got.loc["17–32", "accuracy"] == 50.0 and got.loc["17–32", "n"] == 2
    assert got.loc["78–154", "accuracy"] == 50.0
    # 9 positives and 9 negatives, of which 80 and 90 tokens are cut: 4 of 18
    share = charts.cut_share(frame, series="m")
    assert (share["cut"], share["texts"]) == (4, 18)
    assert share["share"] == pytest.approx(100 * 4 / 18)


def test_position_accuracy_and_chart_specs() -> None:
    frame = pd.DataFrame(
        {"diff_position": [5, 25, 80, None, 10], "neg_correct": [True, False, False, True, False]}
    )
    got = charts.position_accuracy(frame, series="m")
    assert list(got["bucket"]) == ["0-19", "20-39", "77+"]  # the row without a position is out
    assert list(got["accuracy"]) == [50.0, 0.0, 0.0] and list(got["n"]) == [2, 1, 1]
    length = charts.length_accuracy(examples_frame([True, False]), flag="neg_correct", series="m")
    cut = pd.DataFrame([charts.cut_share(examples_frame([True]), series="m")])
    for chart in (charts.position_lines(got), charts.length_lines(length), charts.cut_bars(cut)):
        assert chart.to_dict()["$schema"].startswith("https://vega.github.io/schema/vega-lite/")


def test_metric_long_and_scatter(hand_store: Path) -> None:
    frame = data.leaderboard_rows(list_runs(hand_store))
    rows = frame[frame["task"] == ALL].reset_index(drop=True)
    long = charts.metric_long(rows).set_index(["series", "metric"])
    assert long.loc[("m:a", "neg"), "value"] == 50.0
    assert (long.loc[("m:a", "neg"), "lo"], long.loc[("m:a", "neg"), "hi"]) == (20.0, 80.0)
    points = charts.scm_neg_points(rows).set_index("series")
    assert points.loc["m:b", "neg"] == 75.0 and points.loc["m:b", "scm"] == 0.0
    charts.metric_bars(charts.metric_long(rows)).to_dict()  # a valid Vega-Lite spec
    charts.scm_neg_scatter(points).to_dict()


def test_disagreements_and_agreement_table() -> None:
    a = examples_frame([True, False, True, False])
    b = examples_frame([True, True, False, False])
    differ = compare_view.disagreements(a, b, flag="neg_correct", task=ALL)
    assert list(zip(differ["image"], differ["entry_key"], strict=True)) == [
        ("p0", "m-1-sc"), ("p1", "base")
    ]  # fmt: skip
    assert list(differ["A correct"]) == [False, True]
    assert differ.attrs["total"] == 2

    from densecap_eval.results.compare import MetricComparison

    m = MetricComparison(ALL, "neg", 4, 0.5, 0.5, 0.0, 1.0, None, 1, 1, 1, 1, None, None)
    table = compare_view.agreement_table(m)
    assert table.loc["A correct", "B wrong"] == 1 and table.loc["A wrong", "B correct"] == 1


def test_comparison_frame_shows_the_clustered_p_first() -> None:
    from densecap_eval.results.compare import MCNEMAR_LABEL, Comparison, MetricComparison

    test = "paired sign-flip permutation over photos (2 photos, exact)"
    m = MetricComparison(ALL, "neg", 4, 0.25, 0.75, 0.5, 0.5, (0.0, 1.0), 1, 1, 0, 2, None, None,
                         p_mcnemar_indep=0.5, n_photos=2, test=test)  # fmt: skip
    run = StoredRun(Path("r"), "complete", None)
    frame = compare_view.comparison_frame(Comparison(run, run, [m]))
    columns = list(frame.columns)
    assert columns.index("p (photos)") < columns.index("p McNemar (indep.)")
    assert "note" not in columns  # every row reference-exact
    row = frame.iloc[0]
    assert (row["photos"], row["p (photos)"], row["p McNemar (indep.)"]) == (2, 0.5, 0.5)
    caption = compare_view.caption(Comparison(run, run, [m]))
    assert f"p (photos): {test}" in caption and MCNEMAR_LABEL in caption

    from dataclasses import replace

    half = replace(m, reference_exact=False)
    frame = compare_view.comparison_frame(Comparison(run, run, [half, m]))
    assert list(frame["note"]) == ["not reference-exact", ""]


def test_draw_region_tints_mask_and_outlines_box(tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    Image.new("RGB", (100, 50), (255, 255, 255)).save(photo)
    mask = np.zeros((50, 100), dtype=bool)
    mask[:, :50] = True
    picture = explorer.draw_region(explorer.RegionSource(photo, mask), [60, 10, 90, 40], width=100)
    assert picture.size == (100, 50)
    assert picture.getpixel((99, 0)) == (255, 255, 255)  # outside mask and box
    tinted = picture.getpixel((10, 25))
    assert tinted != (255, 255, 255) and tinted[2] == 255 and tinted[0] < 255  # blue tint
    assert picture.getpixel((60, 25)) == explorer.BOX_COLOUR  # the box's left edge
    assert picture.getpixel((75, 25)) == (255, 255, 255)  # inside the box, not drawn over


def test_draw_region_scales_a_large_jpeg_and_its_mask(tmp_path: Path) -> None:
    photo = tmp_path / "big.jpg"
    Image.new("RGB", (1920, 1440), (255, 255, 255)).save(photo, quality=95)
    mask = np.zeros((1440, 1920), dtype=bool)
    mask[:, :960] = True  # the left half
    picture = explorer.draw_region(explorer.RegionSource(photo, mask), [960, 0, 1920, 1440],
                                   width=480)  # fmt: skip
    assert picture.size == (480, 360)  # scale 1/4
    tinted = picture.getpixel((100, 180))
    assert tinted[2] >= 250 and tinted[0] < 200  # blue tint on the left half
    assert min(picture.getpixel((350, 180))) >= 250  # right half untouched
    assert picture.getpixel((240, 180)) == explorer.BOX_COLOUR  # box's left edge at 960/4


def test_locate_region_on_the_sample() -> None:
    source = explorer.locate_region(SAMPLE, "synth_000000.json", "m-1-sc")
    assert source.photo.name == "synth_000000.jpg"
    assert source.mask is not None and source.mask.shape == (480, 640)
    assert source.mask.any()
    assert explorer.locate_region(SAMPLE, "synth_000000.json", "base").mask is None
    png = explorer.region_png(SAMPLE, "synth_000000.json", "m-1-sc", [0, 172, 640, 480])
    assert png.startswith(b"\x89PNG")


# --------------------------------------------------------------------------- the CLI command


def test_streamlit_command_binds_localhost_headless() -> None:
    from densecap_eval.cli.dashboard_cmd import app_path, streamlit_command

    argv = streamlit_command("/some/results", port=8600)
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] == str(app_path())
    pairs = dict(zip(argv[5::2], argv[6::2], strict=False))
    assert pairs["--server.address"] == "127.0.0.1"
    assert pairs["--server.headless"] == "true"
    assert pairs["--browser.gatherUsageStats"] == "false"
    assert pairs["--server.port"] == "8600"
    assert argv[-3:] == ["--", "--results", str(Path("/some/results").resolve())]
    assert app_path().is_file()


def test_launch_dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from densecap_eval.cli import dashboard_cmd
    from densecap_eval.cli.app import main

    with pytest.raises(ResultsError, match="does not exist"):
        dashboard_cmd.launch_dashboard(tmp_path / "missing")
    assert main(["dashboard", "--results", str(tmp_path / "missing")]) == 2

    started: list[list[str]] = []

    class FakeProcess:
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            started.append(argv)
            assert env[dashboard_cmd.RESULTS_ENV] == str(tmp_path.resolve())

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(dashboard_cmd.subprocess, "Popen", FakeProcess)
    assert dashboard_cmd.launch_dashboard(tmp_path, port=9000, host="0.0.0.0") == 0
    (argv,) = started
    assert "0.0.0.0" in argv and "9000" in argv


# --------------------------------------------------------------------------- the app (AppTest)


@pytest.fixture(scope="session")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real runs of the bundled model on the bundled sample: the model and its blind control."""
    from densecap_eval.cli.app import main

    root = tmp_path_factory.mktemp("dashboard") / "results"
    cache = root.parent / "cache"
    for extra in ([], ["--blind"]):
        code = main(["run", "--out", str(root), "--cache-dir", str(cache), "--bootstrap", "50",
                     *extra])  # fmt: skip
        assert code == 0
    runs = list_runs(root)
    assert len(runs) == 2 and all(r.is_complete for r in runs)
    return root


def app_test(results: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(data.ENV_VAR, str(results))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["page"] = page
    return at.run()


def texts(at: Any) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "header")
             for e in getattr(at, kind)]  # fmt: skip
    parts += [str(e.label) for e in at.expander]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize(
    "page", ["leaderboard", "charts", "explorer", "compare", "cards", "sweeps"]
)
def test_every_page_renders(real_store: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(real_store, page, monkeypatch)
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error
    from densecap_eval.dashboard.pages import PAGES

    assert at.header[0].value == PAGES[page][0]
    assert at.sidebar.radio(key="page").value == page


def test_leaderboard_filters_change_the_table(
    real_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_test(real_store, "leaderboard", monkeypatch)
    table = at.dataframe[0].value
    tasks = sorted(table["task"].unique())
    assert set(table["model"]) == {"builtin:tiny", "builtin:tiny (blind)"}
    assert len(tasks) >= 4 and len(table) == 2 * len(tasks)
    assert table["best"].str.len().gt(0).any()  # some metric of some task is marked best

    at.multiselect(key="lb_tasks").set_value([tasks[0]]).run()
    assert set(at.dataframe[0].value["task"]) == {tasks[0]}
    at.multiselect(key="lb_models").set_value(["builtin:tiny (blind)"]).run()
    assert list(at.dataframe[0].value["model"]) == ["builtin:tiny (blind)"]
    assert not at.exception


def test_explorer_filters_change_the_examples(
    real_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_test(real_store, "explorer", monkeypatch)

    def count() -> tuple[int, int]:
        line = next(c.value for c in at.caption if "examples match" in c.value)
        shown, _, total = line.split(" examples")[0].partition(" of ")
        return int(shown), int(total)

    shown, total = count()
    assert shown == total > 0
    assert 0 < len(at.image) <= explorer.PAGE_SIZE  # photos drawn, one page only
    last = explorer.page_count(total)
    at.number_input(key="ex_page").set_value(last).run()
    assert len(at.image) == total - (last - 1) * explorer.PAGE_SIZE
    at.selectbox(key="ex_per_page").set_value(max(explorer.PAGE_SIZES)).run()  # fewer pages
    big = max(explorer.PAGE_SIZES)
    fewer = explorer.page_count(total, size=big)
    assert not at.exception and at.number_input(key="ex_page").value == fewer  # clamped
    assert len(at.image) == total - (fewer - 1) * big
    at.selectbox(key="ex_per_page").set_value(explorer.PAGE_SIZE).run()
    at.radio(key="ex_outcome").set_value("wrong").run()
    wrong = count()[0]
    at.radio(key="ex_outcome").set_value("correct").run()
    correct = count()[0]
    assert wrong + correct == total and not at.exception
    at.radio(key="ex_outcome").set_value("disagree").run()
    assert count()[0] <= total and not at.exception
    assert "other_correct" not in texts(at)  # a verdict line, not a raw column


def test_compare_page_shows_the_paired_test(
    real_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_test(real_store, "compare", monkeypatch)
    table = at.dataframe[0].value
    assert {"neg", "scm"} <= set(table["metric"])
    agreement = at.table[0].value
    assert list(agreement.columns) == ["B correct", "B wrong"]
    row = table.iloc[0]
    assert int(agreement.to_numpy().sum()) == row["n"]
    columns = list(table.columns)
    assert columns.index("p (photos)") < columns.index("p McNemar (indep.)")
    assert 0 < row["p (photos)"] <= 1 and row["photos"] >= 1
    assert "Examples they disagree on" in "\n".join(s.value for s in at.subheader)


def test_leaderboard_has_a_table_per_dataset_and_a_selector(
    mixed_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_test(mixed_store, "leaderboard", monkeypatch)
    assert not at.exception
    assert [h.value for h in at.subheader] == ["dci", "urban1k"]
    dci, urban = (frame.value for frame in at.dataframe)
    assert set(dci["task"]) == {ALL, "dci/retrieval"} and "scm" in dci.columns
    assert list(urban["task"]) == ["urban1k/retrieval"]
    assert "scm" not in urban.columns and "neg" not in urban.columns  # no empty columns

    at.selectbox(key="lb_dataset").set_value("urban1k").run()
    assert not at.exception and len(at.subheader) == 0
    (only,) = (frame.value for frame in at.dataframe)
    assert list(only["task"]) == ["urban1k/retrieval"] and "scm" not in only.columns
    assert at.multiselect(key="lb_tasks").options == ["urban1k/retrieval"]


def test_empty_results_dir_explains_first_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for page in ("leaderboard", "cards"):
        at = app_test(tmp_path, page, monkeypatch)
        assert not at.exception
        assert "densecap-eval run" in texts(at)
    at = app_test(tmp_path / "missing", "leaderboard", monkeypatch)
    assert not at.exception and "does not exist" in at.error[0].value


@pytest.mark.parametrize("page", ["leaderboard", "charts", "explorer", "compare", "cards"])
def test_corrupt_runs_are_listed_not_fatal(
    hand_store: Path, page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a run whose parquet is cut short, beside the unreadable card of the fixture
    run = next(r for r in list_runs(hand_store) if r.card and r.card.model_spec == "m:b")
    parquet = run.path / "examples.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    at = app_test(hand_store, page, monkeypatch)
    assert not at.exception
    if page == "leaderboard":
        assert "2 run directories not shown (2 corrupt" in texts(at)
        status = at.dataframe[0].value
        assert sorted(status["status"]) == ["corrupt", "corrupt"]
        assert any("examples.parquet is unreadable" in r for r in status["reason"])
        assert list(at.dataframe[1].value["model"].unique()) == ["m:a"]


def test_only_corrupt_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "run.json").write_text(json.dumps({"schema_version": 99}), encoding="utf-8")
    at = app_test(tmp_path, "leaderboard", monkeypatch)
    assert not at.exception
    assert "No complete run" in texts(at) and "1 run directory not shown" in texts(at)


# --------------------------------------------------------------------------- screenshot check


def screenshot_script() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_dashboard.py"
    spec = importlib.util.spec_from_file_location("screenshot_dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SIDEBAR = '<div data-testid="stSidebar"><label><p>Example explorer</p></label></div>'
HEADING = '<h2 id="example-explorer"><span data-heading-text="">Example explorer</span></h2>'


@pytest.mark.parametrize(
    ("dom", "problem"),
    [
        (SIDEBAR + HEADING + "<img>", None),
        ('<div data-testid="stAppViewContainer"></div>', "did not render"),  # the skeleton
        (SIDEBAR, "did not render"),  # the sidebar's link is not the page's heading
        ("<p>Example explorer</p><h2>Charts</h2>", "did not render"),
        (HEADING + '<div data-testid="stSkeleton"></div>', "did not finish"),
        (HEADING + '<div data-testid="stStatusWidget">Running...</div>', "did not finish"),
        (HEADING + '<div data-testid="stException">boom</div>', "shows an exception"),
        ("<pre>Traceback (most recent call last):</pre>", "shows an exception"),
    ],
)
def test_screenshot_check_needs_the_heading_of_a_finished_page(
    dom: str, problem: str | None
) -> None:
    found = screenshot_script().check_page(dom, "Example explorer")
    assert (found is None) if problem is None else (found is not None and problem in found)


# --------------------------------------------------------------------------- status and marks


def _edit_card(run_dir: Path, **changes: Any) -> None:
    card = json.loads((run_dir / "run.json").read_text())
    card.update(changes)
    (run_dir / "run.json").write_text(json.dumps(card))


def test_interrupted_run_is_listed_with_its_reason(hand_store: Path) -> None:
    """A card left "running" by a killed writer: shown as interrupted, with why, not hidden."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    writer = RunWriter(hand_store, model_spec="m:killed", task="dci")
    run_dir = writer.start()
    _edit_card(run_dir, pid=int(dead.stdout))
    runs = list_runs(hand_store)
    bad = data.unusable_runs(runs)
    assert data.unusable_summary(bad) == "2 run directories not shown (1 corrupt, 1 interrupted)"
    status = data.status_frame(bad).set_index("run_id")
    reason = f"the process (pid {int(dead.stdout)}) writing it is gone"
    assert status.loc[run_dir.name, "status"] == "interrupted"
    assert status.loc[run_dir.name, "reason"] == reason
    killed = next(r for r in runs if r.path == run_dir)
    assert data.run_label(killed).endswith(f"{run_dir.name} (interrupted)")
    table = data.card_table(killed).set_index("field")
    assert table.loc["(status as read)", "A"] == "interrupted"
    assert table.loc["(reason)", "A"] == reason
    assert data.unusable_summary([]) == ""


def test_not_reference_exact_marks(hand_store: Path) -> None:
    runs = [r for r in list_runs(hand_store) if r.is_complete]
    half = next(r for r in runs if r.card is not None and r.card.model_spec == "m:a")
    _edit_card(half.path, precision="bf16")
    runs = list_runs(hand_store)
    frame = data.leaderboard_rows(runs)
    notes = dict(zip(zip(frame["model"], frame["task"], strict=True), frame["note"], strict=True))
    assert notes == {("m:a (bf16)", ALL): "bf16: not reference-exact",
                     ("m:a (bf16)", BASE): "bf16: not reference-exact", ("m:b", ALL): ""}  # fmt: skip
    shown = data.display_leaderboard(frame).set_index(["model", "task"])
    assert shown.loc[("m:a (bf16)", ALL), "note"] == "bf16: not reference-exact"
    assert data.metric_names(frame) == ["scm", "neg", "cut_share"]  # the note is no metric

    half = next(r for r in runs if r.card is not None and r.card.model_spec == "m:a")
    full = next(r for r in runs if r.card is not None and r.card.model_spec == "m:b")
    warning = data.reference_warning(half)
    assert warning is not None and "bf16" in warning and "not reference-exact" in warning
    assert data.reference_warning(full) is None  # fp32 (or no precision recorded)
    table = data.card_table(half, full).set_index("field")
    assert table.loc["(reference-exact)", "A"] == "no: bf16, DCI subtests not reference-exact"
    assert bool(table.loc["(reference-exact)", "differs"]) is True


@pytest.mark.parametrize(
    ("value", "mark"),
    [(True, "correct"), (False, "wrong"), (None, "–"), (float("nan"), "–"), (pd.NA, "–")],
)
def test_example_mark_handles_every_missing_value(value: Any, mark: str) -> None:
    """A nullable boolean column (e.g. scm_per_image_correct) holds pandas' NA, whose truth
    value raises: the explorer once crashed on it."""
    from densecap_eval.dashboard.pages import _mark

    assert mark in _mark(value)


def test_sweeps_page_without_sweeps_shows_how_to_run_one(
    real_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_test(real_store, "sweeps", monkeypatch)
    assert "No sweep runs in this results directory" in texts(at)
    assert "models:" in at.code[0].value and "grid:" in at.code[0].value
