"""The five pages, drawn with Streamlit from the helpers in data / charts / explorer.

Each page takes a `Store` (the results directory as read once per script run) and draws itself;
reads go through `cache`. A read failure is shown where it happens and never stops the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import streamlit as st

from densecap_eval.core.errors import DensecapError
from densecap_eval.results.store import StoredRun
from densecap_eval.results.zeroshot_summary import ELEVATER_TOTAL

from . import cache, charts, compare_view, data, explorer, zeroshot_view

if TYPE_CHECKING:
    import pandas as pd

BEST_STYLE = "background-color: #d7f5dd; font-weight: 600"
DIFF_STYLE = "background-color: #fff2b3"


@dataclass(frozen=True)
class Store:
    """The results directory as this script run sees it."""

    results_dir: Path
    fingerprint: tuple[tuple[str, int], ...]
    runs: list[StoredRun]

    @property
    def complete(self) -> list[StoredRun]:
        return [run for run in self.runs if run.is_complete and run.card is not None]

    def leaderboard(self) -> Any:
        return cache.leaderboard(str(self.results_dir), self.fingerprint)


T = TypeVar("T")


def _chosen(value: T | None) -> T:
    """A selectbox's value: never None here (every box has options and an index), but typed
    optional by Streamlit."""
    assert value is not None
    return value


def _stamp(run: StoredRun) -> int:
    return data.run_stamp(run.path)


def _height(rows: int, *, most: int = 900) -> int:
    """Pixels for a table to show ``rows`` rows without inner scrolling, up to ``most``."""
    return min(most, 35 * (rows + 1) + 3)


def _pick_run(label: str, runs: list[StoredRun], *, key: str, default: int = -1) -> StoredRun:
    index = default % len(runs)
    return runs[_chosen(st.selectbox(label, range(len(runs)), index=index, key=key,
                                     format_func=lambda i: data.run_label(runs[i])))]  # fmt: skip


def show_unusable(store: Store) -> None:
    """List run directories that are not complete, with the reason, without stopping the page."""
    bad = data.unusable_runs(store.runs)
    if not bad:
        return
    # Each status with its count, and per run the reason (an interrupted run: why it is known
    # to be dead, e.g. "the process (pid 123) writing it is gone").
    with st.expander(data.unusable_summary(bad), expanded=False):
        st.dataframe(data.status_frame(bad), hide_index=True)


def _no_complete_runs(store: Store) -> None:
    st.info("No complete run in this results directory yet.")
    st.markdown(data.FIRST_RUN_HELP.format(results=store.results_dir))


# --------------------------------------------------------------------------- leaderboard


def leaderboard_page(store: Store) -> None:
    st.header("Leaderboard")
    show_unusable(store)
    frame = store.leaderboard()
    if frame.empty:
        _no_complete_runs(store)
        return
    pick_dataset, left, middle, right = st.columns(4)
    datasets = data.leaderboard_datasets(frame)
    dataset: str = _chosen(
        pick_dataset.selectbox("Dataset", ["all datasets", *datasets], key="lb_dataset")
    )
    chosen = None if dataset == "all datasets" else [dataset]
    in_dataset = data.filter_leaderboard(frame, datasets=chosen)
    tasks = left.multiselect("Tasks", sorted(in_dataset["task"].unique()), key="lb_tasks",
                             placeholder="all tasks")  # fmt: skip
    models = middle.multiselect("Models", sorted(frame["model"].unique()), key="lb_models",
                                placeholder="all models")  # fmt: skip
    dates = None
    known = frame["date"].dropna()
    if not known.empty:
        first, last = known.min().date(), known.max().date()
        picked = right.date_input("Run between", (first, last), min_value=first,
                                  max_value=last, key="lb_dates")  # fmt: skip
        if isinstance(picked, (tuple, list)) and len(picked) == 2:
            dates = (picked[0], picked[1])
    shown = data.filter_leaderboard(in_dataset, tasks=tasks or None, models=models or None,
                                    dates=dates)  # fmt: skip
    st.caption(
        f"{len(shown)} of {len(frame)} rows (one per run and task), one table per dataset with "
        "the metrics its tasks have. Metrics in percent with their 95% bootstrap interval; the "
        "best value of each task is highlighted and named in 'best'. Click a column header to "
        "sort. A '<metric> blind' column holds the same model's blind control (--blind: grey "
        "images) on that task, where the results have one: how much the captions alone score."
    )
    if "note" in shown.columns and shown["note"].astype(bool).any():
        st.warning(
            "Rows noted 'not reference-exact' are DCI subtests of runs not scored in fp32: "
            "half precision can flip ties and near-ties, so they need not match the reference."
        )
    groups = data.leaderboard_groups(shown)
    for name, group in groups:
        if len(groups) > 1:
            st.subheader(name)
        _leaderboard_table(group, key="lb_table" if len(groups) == 1 else f"lb_table_{name}")
    st.download_button("Download CSV", data.leaderboard_csv(shown),
                       file_name="densecap-leaderboard.csv", mime="text/csv")  # fmt: skip


def _leaderboard_table(shown: Any, *, key: str) -> None:
    """One dataset's rows: no column that is empty for all of them, best values highlighted."""
    view = data.display_leaderboard(shown)
    marks = data.best_marks(shown)

    def highlight(column: Any) -> list[str]:
        if column.name not in marks.columns:
            return [""] * len(column)
        return [BEST_STYLE if on else "" for on in marks[column.name]]

    metric_cols = [m for m in data.metric_names(shown) if m in view.columns]
    styled = view.style.apply(highlight, subset=metric_cols).format(
        "{:.1f}", subset=metric_cols + data.blind_columns(view), na_rep="–"
    )
    st.dataframe(
        styled,
        hide_index=True,
        key=key,
        height=_height(len(view)),
        column_config={"date": st.column_config.DatetimeColumn("date", format="YYYY-MM-DD HH:mm")},
    )


# --------------------------------------------------------------------------- charts


def charts_page(store: Store) -> None:
    st.header("Charts")
    frame = store.leaderboard()
    if frame.empty:
        _no_complete_runs(store)
        return
    tasks = sorted(frame["task"].unique())
    task = st.selectbox("Task", tasks, key="ch_task")
    rows = frame[frame["task"] == task]
    models = sorted(rows["model"].unique())
    picked = st.multiselect("Models", models, default=models[:12], key="ch_models")
    rows = rows[rows["model"].isin(picked)].reset_index(drop=True)
    if rows.empty:
        st.info("Pick at least one model.")
        return

    st.subheader("Metrics with 95% intervals")
    long = charts.metric_long(rows)
    if long.empty:
        st.caption("No numeric metrics stored for this task.")
    else:
        st.altair_chart(charts.metric_bars(long))

    points = charts.scm_neg_points(rows)
    if not points.empty:
        st.subheader("SCM against Neg")
        st.altair_chart(charts.scm_neg_scatter(points))

    _reading_chart(store, rows, task)
    _example_charts(store, rows, task)


def _reading_chart(store: Store, rows: Any, task: str) -> None:
    """The chart "Where does the model stop reading?": a negatives task's Neg by edit position."""
    import pandas as pd

    by_id = {run.run_id: run for run in store.complete}
    labels = charts.series_labels(rows)
    curves, totals = [], []
    for index, run_id in rows["run_id"].items():
        run = by_id.get(run_id)
        if run is None or run.card is None:
            continue
        metrics = (cache.run_metrics(str(run.path), _stamp(run)) or {}).get(task)
        policy = (metrics or {}).get("text_policy") or run.card.text_policy
        curve = charts.reading_curve(metrics, series=labels[index], policy=policy)
        if not curve.empty:
            curves.append(curve)
            totals.append(charts.reading_summary(metrics, series=labels[index], policy=policy))
    if not curves:
        return
    st.subheader("Where does the model stop reading?")
    st.caption(
        "Neg accuracy by where the edit lies, in each model's own tokens (bins of 16). The "
        "dotted rule is where the model's window ends. Under truncate an edit past it leaves the "
        "two texts identical to the model: those pairs are counted as invisible (bars below), "
        "not as the model's mistakes; under chunk-mean a later chunk sees them, so the curve "
        "past the rule shows how much comes back. Overlay a truncate and a chunk-mean run."
    )
    st.altair_chart(charts.reading_chart(pd.concat(curves, ignore_index=True)))
    st.dataframe(pd.DataFrame(totals), hide_index=True, key="ch_reading_totals")


def _example_charts(store: Store, rows: Any, task: str) -> None:
    import pandas as pd

    by_id = {run.run_id: run for run in store.complete}
    labels = charts.series_labels(rows)
    flags = sorted({f for run_id in rows["run_id"] if run_id in by_id
                    for f in explorer.correct_columns(
                        _columns(by_id[run_id]), explorer.declared_outcome_columns(by_id[run_id]))},
                   key=lambda c: (c != "neg_correct", c))  # fmt: skip
    if not flags:
        st.caption("These runs stored no per-example correct flags: no length breakdown.")
        return
    flag: str = _chosen(st.selectbox("Accuracy of", flags, key="ch_flag"))
    lines, cuts, positions, problems = [], [], [], []
    for index, run_id in rows["run_id"].items():
        run = by_id.get(run_id)
        if run is None:
            continue
        try:
            length, cut, position = cache.chart_data(
                str(run.path), _stamp(run), task, flag, labels[index]
            )
        except DensecapError as exc:
            problems.append(str(exc))
            continue
        lines.append(length)
        cuts.append(cut)
        positions.append(position)
    for problem in problems:
        st.warning(problem)
    st.subheader("Accuracy by caption length")
    st.caption("Tokens counted with the CLIP BPE for every model (older runs: the model's own).")
    length = pd.concat(lines, ignore_index=True) if lines else pd.DataFrame()
    if length.empty:
        st.caption("No token counts stored for this task.")
    else:
        st.altair_chart(charts.length_lines(length))
    st.subheader("Share of texts cut by the token limit")
    cut = pd.DataFrame(cuts)
    if cut.empty or cut["share"].isna().all():
        st.caption("No cut flags stored for this task.")
    else:
        st.altair_chart(charts.cut_bars(cut.dropna(subset=["share"])))
    by_position = pd.concat(positions, ignore_index=True) if positions else pd.DataFrame()
    if not by_position.empty:
        st.subheader("Neg accuracy by where the negative differs")
        st.caption(
            "Buckets in each model's own window of L tokens: inside (seen, with 5 or more "
            "tokens after it), edge (the last 5 visible tokens), beyond (cut off by truncation; "
            "later_chunk: in a later chunk under chunk-mean), identical (same tokens). Older "
            "runs show absolute token positions (0-19 ... 77+)."
        )
        st.altair_chart(charts.position_lines(by_position))


def _columns(run: StoredRun) -> list[str]:
    return cache.columns_of(str(run.path), _stamp(run))


# --------------------------------------------------------------------------- explorer


def _dataset_root(run: StoredRun) -> str | None:
    card = run.card
    if card is None:
        return None
    root = card.dataset.get("root") or card.config.get("data_root") or card.config.get("root")
    return str(root) if root else None


def explorer_page(store: Store) -> None:
    st.header("Example explorer")
    runs = store.complete
    if not runs:
        _no_complete_runs(store)
        return
    run = _pick_run("Run", runs, key="ex_run")
    loaded = _explorer_examples(run)
    if loaded is None:
        return
    frame, task = loaded
    flags = explorer.correct_columns(frame.columns, explorer.declared_outcome_columns(run))
    c1, c2, c3 = st.columns(3)
    outcome = c1.radio("Show", explorer.OUTCOMES, horizontal=True, key="ex_outcome",
                       format_func=lambda o: {"disagree": "disagreeing"}.get(o, o))  # fmt: skip
    flag = c2.selectbox("Correct by", flags, key="ex_flag") if flags else "neg_correct"
    if outcome == "disagree":
        others = [r for r in runs if r.path != run.path]
        if not others:
            st.warning("Only one complete run: nothing to disagree with.")
            outcome = "all"
        else:
            attached = _with_other_run(frame, others, flag, task)
            if attached is None:
                return
            frame = attached
    spec = _example_filter(frame, c3, outcome, flag)
    try:
        shown = explorer.filter_examples(frame, spec)
    except DensecapError as exc:
        st.warning(str(exc))
        shown = frame
    _example_pages(shown, len(frame), _dataset_root(run))


def _explorer_examples(run: StoredRun) -> tuple[pd.DataFrame, str | None] | None:
    """The run's examples of the task picked (None: nothing to show, said on the page)."""
    columns = _columns(run)
    try:
        frame = cache.examples(str(run.path), _stamp(run),
                               tuple(explorer.explorer_columns(
                                   columns, explorer.declared_outcome_columns(run))))  # fmt: skip
    except DensecapError as exc:
        st.error(str(exc))
        return None
    if frame.empty:
        st.info("This run stored no examples.")
        return None
    if "task" not in frame.columns:
        return frame, None
    task = st.selectbox("Task", sorted(frame["task"].unique()), key="ex_task")
    return frame[frame["task"] == task], task


def _with_other_run(
    frame: pd.DataFrame, others: list[StoredRun], flag: Any, task: str | None
) -> pd.DataFrame | None:
    """``frame`` with the picked other run's verdict on each example (None: it failed to load)."""
    other = _pick_run("Other run", others, key="ex_other")
    wanted = [c for c in (*explorer.KEY_COLUMNS, flag) if c in _columns(other)]
    try:
        theirs = cache.examples(str(other.path), _stamp(other), tuple(wanted))
    except DensecapError as exc:
        st.error(str(exc))
        return None
    if task is not None and "task" in theirs.columns:
        theirs = theirs[theirs["task"] == task]
    return explorer.attach_other(frame, theirs, flag)


def _example_filter(frame: pd.DataFrame, column: Any, outcome: Any, flag: Any) -> Any:
    """The explorer's filter from the negative-type and caption-token widgets."""
    kinds = None
    if "negative_key" in frame.columns:
        options = sorted(frame["negative_key"].map(explorer.negative_type).unique())
        picked = column.multiselect("Negative type", options, key="ex_kinds",
                                    placeholder="all types")  # fmt: skip
        kinds = tuple(picked) or None
    tokens = None
    counts = explorer.caption_tokens(frame).dropna()
    if not counts.empty and counts.min() < counts.max():
        lo, hi = int(counts.min()), int(counts.max())
        tokens = st.slider("Caption tokens (untruncated)", lo, hi, (lo, hi), key="ex_tokens")
    return explorer.ExampleFilter(outcome=outcome, flag=flag, negative_types=kinds,
                                  tokens=tokens)  # fmt: skip


def _example_pages(shown: pd.DataFrame, total: int, root: str | None) -> None:
    """One page of the matching examples, with the page and page-size pickers."""
    # Few photos per page by default: each is drawn, sent and decoded by the browser.
    p1, p2 = st.columns([3, 1])
    size = int(_chosen(p2.selectbox("Per page", explorer.PAGE_SIZES, key="ex_per_page")))
    pages = explorer.page_count(len(shown), size=size)
    if st.session_state.get("ex_page", 1) > pages:  # fewer pages after a filter or a size change
        st.session_state["ex_page"] = pages
    page = p1.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1,
                           key="ex_page")  # fmt: skip
    st.caption(f"{len(shown)} of {total} examples match; showing {size} per page.")
    for _, row in explorer.page_of(shown, int(page), size=size).iterrows():
        show_example(row, root)


def show_example(row: Any, dataset_root: str | None) -> None:
    """One example: the region on its photo, the texts with the changed words, the numbers."""
    with st.container(border=True):
        picture, texts = st.columns([2, 3])
        image = row.get("image")
        key = row.get("entry_key")
        title = f"`{image}`" + (f" · `{key}`" if isinstance(key, str) and key else "")
        picture.markdown(title)
        if dataset_root and isinstance(image, str):
            box = explorer.as_list(row.get("box"))
            try:
                png = cache.region_png(dataset_root, image, str(row.get("entry_key", "")),
                                       tuple(int(v) for v in box) if len(box) == 4 else None)  # fmt: skip
                picture.image(png)
            except DensecapError as exc:
                picture.caption(f"photo not available: {exc}")
        else:
            picture.caption("photo not available: the run card records no dataset root")
        _example_texts(texts, row)


def _mark(value: Any) -> str:
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):  # None, NaN and pandas' NA (nullable)
        return "–"
    return ":green[**correct**]" if bool(value) else ":red[**wrong**]"


def _example_texts(box: Any, row: Any) -> None:
    fields = explorer.example_fields(row)
    flags = [c for c in row.index if c.endswith(explorer.CORRECT_SUFFIX)]
    verdicts = " · ".join(f"{c.removesuffix(explorer.CORRECT_SUFFIX)} {_mark(row[c])}"
                          for c in flags)  # fmt: skip
    if "other_correct" in row.index:
        verdicts += f" · other run {_mark(row['other_correct'])}"
    if verdicts:
        box.markdown(verdicts)
    positives = [str(p) for p in explorer.as_list(row.get("positives"))]
    negative = row.get("negative")
    if positives and isinstance(negative, str):
        scores = fields.get("pos_scores", [])
        tokens = fields.get("pos_tokens", [])
        cut = fields.get("pos_cut", [])
        for i, positive in enumerate(positives):
            pos_html, _ = explorer.diff_pair_html(positive, negative)
            box.markdown(f"**positive {i + 1}** {_numbers(scores, tokens, cut, i)}<br>{pos_html}",
                         unsafe_allow_html=True)  # fmt: skip
        _, neg_html = explorer.diff_pair_html(positives[0], negative)
        numbers = _numbers([fields.get("neg_score")], [fields.get("neg_tokens")],
                           [fields.get("neg_cut")], 0)  # fmt: skip
        kind = fields.get("negative_key") or ""
        box.markdown(f"**negative** `{kind}` {numbers}<br>{neg_html}", unsafe_allow_html=True)
        if fields.get("diff_position") is not None:
            bucket = row.get("diff_bucket")  # the window bucket; absent in older runs
            where = f" ({bucket})" if isinstance(bucket, str) else ""
            box.caption(f"first differing token: {fields['diff_position']}{where}")
    elif isinstance(row.get("text"), str):  # a retrieval example: one text per photo
        parts = [f"{row[c]} tokens" if c == "tokens" else f"{c} {row[c]}"
                 for c in ("tokens", "rank_i2t", "rank_t2i") if c in row.index]  # fmt: skip
        if "cut" in row.index and bool(row["cut"]):
            parts.append("**cut**")
        box.markdown(f"**text** ({', '.join(parts)})")
        box.text(row["text"])
    else:
        shown = {k: v for k, v in row.items() if k not in ("box",)}
        box.json({k: explorer.as_list(v) if hasattr(v, "tolist") else v for k, v in shown.items()},
                 expanded=False)  # fmt: skip


def _numbers(scores: list[Any], tokens: list[Any], cut: list[Any], i: int) -> str:
    parts = []
    if i < len(scores) and scores[i] is not None:
        parts.append(f"score {float(scores[i]):.4f}")
    if i < len(tokens) and tokens[i] is not None:
        parts.append(f"{int(tokens[i])} tokens")
    if i < len(cut) and cut[i] is not None and bool(cut[i]):
        parts.append("**cut**")
    return f"({', '.join(parts)})" if parts else ""


# --------------------------------------------------------------------------- compare


def compare_page(store: Store) -> None:
    st.header("Compare two runs")
    runs = store.complete
    if len(runs) < 2:
        st.info("Comparing needs two complete runs.")
        if not runs:
            st.markdown(data.FIRST_RUN_HELP.format(results=store.results_dir))
        return
    # Default pair: the newest run and the newest other run of the same task (comparable ones).
    task_b = runs[-1].card.task if runs[-1].card else None
    same = [i for i, r in enumerate(runs[:-1]) if r.card is not None and r.card.task == task_b]
    left, right = st.columns(2)
    with left:
        run_a = _pick_run("Run A", runs, key="cmp_a", default=same[-1] if same else -2)
    with right:
        run_b = _pick_run("Run B", runs, key="cmp_b", default=-1)
    n_boot = st.number_input("Bootstrap resamples", 0, 10000, 1000, step=100, key="cmp_boot")
    try:
        result = cache.comparison(str(run_a.path), _stamp(run_a), str(run_b.path),
                                  _stamp(run_b), int(n_boot))  # fmt: skip
    except DensecapError as exc:
        st.error(str(exc))
        return
    for note in result.notes:
        st.info(note)
    table = compare_view.comparison_frame(result)
    if table.empty:
        return
    st.caption(compare_view.caption(result))
    st.dataframe(table, hide_index=True, key="cmp_table", height=_height(len(table)))
    choices = list(range(len(result.metrics)))
    pick = st.selectbox("Agreement of", choices, key="cmp_metric",
                        format_func=lambda i: f"{result.metrics[i].task} · {result.metrics[i].metric}")  # fmt: skip
    chosen = result.metrics[_chosen(pick)]
    st.subheader("Agreement")
    st.table(compare_view.agreement_table(chosen))

    cols_a, cols_b = _columns(run_a), _columns(run_b)
    flag = compare_view.flag_column(result, chosen, [c for c in cols_a if c in cols_b])
    if flag is None:
        return
    try:
        frame_a = cache.examples(str(run_a.path), _stamp(run_a),
                                 tuple(compare_view.disagreement_columns(cols_a, flag)))  # fmt: skip
        frame_b = cache.examples(str(run_b.path), _stamp(run_b),
                                 tuple(compare_view.disagreement_columns(cols_b, flag)))  # fmt: skip
    except DensecapError as exc:
        st.error(str(exc))
        return
    differ = compare_view.disagreements(frame_a, frame_b, flag=flag, task=chosen.task)
    total = differ.attrs.get("total", len(differ))
    st.subheader(f"Examples they disagree on ({total})")
    if total > len(differ):
        st.caption(f"showing the first {len(differ)}")
    st.dataframe(differ, hide_index=True, key="cmp_differ")


# --------------------------------------------------------------------------- run cards


def cards_page(store: Store) -> None:
    st.header("Run cards")
    runs = store.runs
    if not runs:
        st.markdown(data.FIRST_RUN_HELP.format(results=store.results_dir))
        return
    left, right = st.columns(2)
    with left:
        run_a = _pick_run("Run A", runs, key="card_a")
    options = [None, *runs]
    others = [i for i, run in enumerate(options) if run is not None and run.path != run_a.path]
    with right:
        picked = st.selectbox("Run B (optional)", range(len(options)), key="card_b",
                              index=others[-1] if others else 0,
                              format_func=lambda i: "—" if i == 0 else data.run_label(runs[i - 1]))  # fmt: skip
    run_b = options[_chosen(picked)]
    for run in (run_a, run_b):
        if run is not None and not run.is_complete:
            st.warning(f"{run.run_id} is {run.status}" + (f": {run.reason}" if run.reason else ""))
        note = data.reference_warning(run) if run is not None else None
        if note is not None:
            st.warning(note)
    table = data.card_table(run_a, run_b)
    if run_b is not None:
        only = st.checkbox("Only fields that differ", key="card_only")
        if only:
            table = table[table["differs"]]
        st.caption(f"{int(data.card_table(run_a, run_b)['differs'].sum())} fields differ "
                   "(highlighted).")  # fmt: skip
        styled = table.style.apply(
            lambda row: [DIFF_STYLE if row["differs"] else ""] * len(row), axis=1
        )
        st.dataframe(styled, hide_index=True, key="card_table", height=_height(len(table)))
    else:
        st.dataframe(table, hide_index=True, key="card_table", height=_height(len(table)))
    if run_a.card is not None:
        with st.expander("run.json of A"):
            st.json(run_a.card.to_dict())


# --------------------------------------------------------------------------- sweeps


SWEEP_EXAMPLE = """\
name: my-sweep
models: [builtin:tiny, open_clip:ViT-B-32/openai]
tasks: [dci, dci/retrieval]
grid:
  text_policy: [truncate, chunk-mean]
data_root: ~/data/dci
out: results
"""


def sweeps_page(store: Store) -> None:
    """Each sweep (`densecap-eval sweep`) as a grid: models x tasks, each cell's state."""
    st.header("Sweeps")
    grids = data.sweep_grid_frames(store.runs)
    if not grids:
        st.info("No sweep runs in this results directory. Run a grid of models x tasks with "
                "`densecap-eval sweep SWEEP.yaml`, for example:")  # fmt: skip
        st.code(SWEEP_EXAMPLE, language="yaml")
        return
    st.caption(
        "One grid per sweep and grid options: a complete cell shows its headline metric in "
        "percent; the others their state (running, failed, interrupted, corrupt, missing). "
        "Failed, interrupted and missing cells run when the sweep is run again."
    )
    for index, (title, summary, frame) in enumerate(grids):
        st.subheader(title)
        st.caption(summary)
        st.dataframe(frame, hide_index=True, key=f"sweep_grid_{index}",
                     height=_height(len(frame)))  # fmt: skip


# --------------------------------------------------------------------------- zero-shot


def zeroshot_page(store: Store) -> None:
    """Each model's ELEVATER mean beside its long-caption metrics, and the trade-off chart."""
    st.header("Zero-shot vs long captions")
    show_unusable(store)
    summaries = cache.zeroshot_summaries(str(store.results_dir), store.fingerprint)
    if not summaries:
        st.info("No ELEVATER zero-shot runs in this results directory. Run the 20 zero-shot "
                "classification sets beside the long-caption tasks, for example "
                "`densecap-eval run --model MODEL --task elevater --data-root ELEVATER_ROOT`.")  # fmt: skip
        return
    st.caption(
        "Per model (its report label): the mean of the ELEVATER zero-shot metric over the "
        f"datasets that were run (the latest run of each) with how many of the "
        f"{ELEVATER_TOTAL} that is, marked partial when fewer, beside DCI's SCM / "
        "Neg (dci/all_swaps) and long-caption retrieval R@1. Metrics in percent."
    )
    table = zeroshot_view.table(summaries)
    wide = st.column_config.TextColumn(width="medium")  # long specs must not push columns off
    st.dataframe(table, hide_index=True, key="zs_table", height=_height(len(table)),
                 column_config={"model": wide, zeroshot_view.BASE_COLUMN: wide})  # fmt: skip
    protocols = cache.zeroshot_protocols(str(store.results_dir), store.fingerprint)
    if len(protocols):
        st.subheader("Protocols side by side")
        st.caption(zeroshot_view.PROTOCOLS_NOTE)
        st.dataframe(protocols, hide_index=True, key="zs_protocols",
                     height=_height(len(protocols)), column_config={"model": wide})  # fmt: skip
    axes = zeroshot_view.axis_names(summaries)
    if not axes:
        st.info("No long-caption result (DCI, */retrieval) for these models: nothing to plot.")
        return
    st.subheader("Trade-off")
    axis = str(st.selectbox("Long-caption score", axes, key="zs_axis"))
    shown = zeroshot_view.points(summaries, axis)
    pairs = zeroshot_view.links(summaries, shown)
    st.altair_chart(zeroshot_view.trade_off_chart(shown, pairs, axis), key="zs_chart")
    missing = sorted({s.model for s in summaries} - set(shown["model"]))
    notes = [
        "One point per model; a hollow point's mean is over a partial set of datasets. A dashed "
        "line joins a fine-tune to its base where its spec (lora:ADAPTER@BASE) or its run card "
        "names the base."
    ]
    unknown = zeroshot_view.unknown_bases(summaries)
    if unknown:
        notes.append(f"Base not named, so not linked (no guess from a checkpoint's name): "
                     f"{', '.join(unknown)}.")  # fmt: skip
    if missing:
        notes.append(f"Not on the chart (no {axis} result): {', '.join(missing)}.")
    st.caption(" ".join(notes))


# --------------------------------------------------------------------------- routing


PAGES: dict[str, tuple[str, Callable[[Store], None]]] = {
    "leaderboard": ("Leaderboard", leaderboard_page),
    "charts": ("Charts", charts_page),
    "explorer": ("Example explorer", explorer_page),
    "compare": ("Compare two runs", compare_page),
    "cards": ("Run cards", cards_page),
    "sweeps": ("Sweeps", sweeps_page),
    "zeroshot": ("Zero-shot vs long captions", zeroshot_page),
}
