"""The Charts page: data shaping (pandas, testable) and the Altair charts drawn from it.

Values are stored as fractions and shown in percent. Every chart is of one concrete task:
numbers of different tasks are not comparable.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .data import is_ranked, metric_names
from .explorer import as_list, caption_tokens

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd

# Token-length buckets: fine below CLIP's 77, then the 78-154, 155-248, > 248.
LENGTH_EDGES: tuple[int, ...] = (16, 32, 48, 64, 77, 154, 248)
CUT_COLUMNS: tuple[str, ...] = ("pos_cut", "neg_cut", "cut")
POSITION_COLUMN = "diff_position"  # first token at which a negative differs from its positive
# That position's bucket in the model's own window (inside / edge / beyond ...); runs written
# before it have only the raw position, bucketed here with the old absolute buckets.
DIFF_BUCKET_COLUMN = "diff_bucket"
# The same-for-every-model length: CLIP BPE count of the (first) positive or retrieval text.
# Runs written before it have only the model's own counts (TOKEN_COLUMNS), used instead.
REF_TOKEN_COLUMN = "ref_tokens"
TOKEN_COLUMNS: tuple[str, ...] = ("pos_tokens", "tokens", "text_tokens", "query_tokens")


def bucket_labels(edges: Sequence[int] = LENGTH_EDGES) -> list[str]:
    """``["≤16", "17–32", ..., "155–248", ">248"]`` in order."""
    labels = [f"≤{edges[0]}"]
    labels += [f"{lo + 1}–{hi}" for lo, hi in itertools.pairwise(edges)]
    labels.append(f">{edges[-1]}")
    return labels


def length_bucket(count: float | None, edges: Sequence[int] = LENGTH_EDGES) -> str | None:
    """The bucket label of a token count (None for a missing count)."""
    if count is None or count != count:  # NaN
        return None
    labels = bucket_labels(edges)
    for edge, label in zip(edges, labels, strict=False):
        if count <= edge:
            return label
    return labels[-1]


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """A legend name per leaderboard row: the model, plus the run id when a model ran twice."""
    repeated = frame["model"].duplicated(keep=False)
    return frame["model"].where(~repeated, frame["model"] + " · " + frame["run_id"])


# --------------------------------------------------------------------------- from metrics.json


def metric_long(frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Leaderboard rows of one task as long data: series, metric, value, lo, hi (percent)."""
    import pandas as pd

    # Shares of cut texts have their own chart; here only what scores a model.
    names = list(metrics) if metrics is not None else list(filter(is_ranked, metric_names(frame)))
    labels = series_labels(frame)
    rows = []
    for index, row in frame.iterrows():
        for metric in names:
            value = row.get(metric)
            if value is None or pd.isna(value):
                continue
            lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
            rows.append(
                {
                    "series": labels[index],
                    "metric": metric,
                    "value": 100 * float(value),
                    "lo": 100 * float(lo) if lo is not None and pd.notna(lo) else None,
                    "hi": 100 * float(hi) if hi is not None and pd.notna(hi) else None,
                }
            )
    return pd.DataFrame(rows, columns=["series", "metric", "value", "lo", "hi"])


def metric_bars(long: pd.DataFrame) -> alt.FacetChart:
    """One panel per metric, a bar per model, its 95% interval as a whisker."""
    import altair as alt

    base = alt.Chart().encode(y=alt.Y("series:N", title=None, axis=alt.Axis(labelLimit=260)))
    bars = base.mark_bar().encode(
        x=alt.X("value:Q", title="%", scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("series:N", legend=None),
        tooltip=[
            "series:N",
            "metric:N",
            alt.Tooltip("value:Q", format=".1f"),
            alt.Tooltip("lo:Q", format=".1f"),
            alt.Tooltip("hi:Q", format=".1f"),
        ],
    )
    whiskers = base.mark_errorbar(ticks=True, color="black").encode(
        x=alt.X("lo:Q", title="%"), x2="hi:Q"
    )
    return (
        alt.layer(bars, whiskers, data=long)
        .properties(width=260)
        .facet(
            facet=alt.Facet("metric:N", title=None, sort=list(dict.fromkeys(long["metric"]))),
            columns=3,
        )
    )


def scm_neg_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One point per run of the task that has both SCM and Neg: series, scm, neg (percent)."""
    import pandas as pd

    if "scm" not in frame.columns or "neg" not in frame.columns:
        return pd.DataFrame(columns=["series", "scm", "neg"])
    both = frame[frame["scm"].notna() & frame["neg"].notna()]
    return pd.DataFrame(
        {
            "series": series_labels(frame)[both.index],
            "scm": 100 * both["scm"].astype(float),
            "neg": 100 * both["neg"].astype(float),
        }
    ).reset_index(drop=True)


def scm_neg_scatter(points: pd.DataFrame) -> alt.Chart:
    import altair as alt

    return (
        alt.Chart(points)
        .mark_circle(size=120)
        .encode(
            x=alt.X("scm:Q", title="SCM (%)", scale=alt.Scale(domain=[0, 100])),
            y=alt.Y("neg:Q", title="Neg (%)", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("series:N", title="model"),
            tooltip=[
                "series:N",
                alt.Tooltip("scm:Q", format=".1f"),
                alt.Tooltip("neg:Q", format=".1f"),
            ],
        )
        .properties(height=360)
    )


# --------------------------------------------------------------------------- from the examples


def chart_columns(available: Sequence[str], flag: str) -> list[str]:
    """The example columns the length and cut charts read from one run."""
    wanted = [
        "task",
        flag,
        "neg_correct",
        POSITION_COLUMN,
        DIFF_BUCKET_COLUMN,
        REF_TOKEN_COLUMN,
        *TOKEN_COLUMNS,
        *CUT_COLUMNS,
    ]
    return [c for c in dict.fromkeys(wanted) if c in available]


def length_accuracy(examples: pd.DataFrame, *, flag: str, series: str) -> pd.DataFrame:
    """Accuracy (percent) and count per token-length bucket of one run's examples of one task."""
    import pandas as pd

    columns = ["series", "bucket", "order", "accuracy", "n"]
    if flag not in examples.columns or examples.empty:
        return pd.DataFrame(columns=columns)
    labels = bucket_labels()
    buckets = length_counts(examples).map(lambda c: length_bucket(None if pd.isna(c) else c))
    flags = examples[flag].astype("boolean")
    usable = buckets.notna() & flags.notna()
    grouped = flags[usable].astype(float).groupby(buckets[usable])
    out = pd.DataFrame({"accuracy": 100 * grouped.mean(), "n": grouped.size()}).reset_index(
        names="bucket"
    )
    out["order"] = out["bucket"].map(labels.index)
    out["series"] = series
    return out.sort_values("order")[columns].reset_index(drop=True)


def length_counts(examples: pd.DataFrame) -> pd.Series:
    """The count the length chart buckets: the CLIP BPE reference count when the run stored it
    (``ref_tokens``), else (older runs) the model's own count of the positive."""
    import pandas as pd

    if REF_TOKEN_COLUMN in examples.columns:
        return pd.Series(examples[REF_TOKEN_COLUMN], index=examples.index, dtype="Float64")
    return caption_tokens(examples)


def position_order() -> list[str]:
    """x-axis order of the position chart: window buckets, then the old absolute ones."""
    from densecap_eval.metrics.length import IDENTICAL, POSITION_BUCKETS, UNKNOWN, WINDOW_BUCKETS

    return [*WINDOW_BUCKETS, UNKNOWN, IDENTICAL, *POSITION_BUCKETS]


def _bucket_lines(
    data: pd.DataFrame, *, x_title: str, y_title: str, order: list[str], height: int
) -> alt.Chart:
    """Accuracy (percent) per ordered bucket, one line per model."""
    import altair as alt

    return (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("bucket:N", title=x_title, sort=order, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("accuracy:Q", title=y_title, scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("series:N", title="model"),
            tooltip=["series:N", "bucket:N", alt.Tooltip("accuracy:Q", format=".1f"), "n:Q"],
        )
        .properties(height=height)
    )


def length_lines(data: pd.DataFrame) -> alt.Chart:
    return _bucket_lines(
        data,
        x_title="caption tokens (CLIP BPE, untruncated; older runs: the model's count)",
        y_title="accuracy (%)",
        order=bucket_labels(),
        height=360,
    )


def position_accuracy(examples: pd.DataFrame, *, series: str) -> pd.DataFrame:
    """Neg accuracy (percent) by where the negative first differs.

    Runs that stored ``diff_bucket`` are shown in their window buckets (``inside``, ``edge``,
    ``beyond`` or ``later_chunk``, ``identical``); older runs in the old absolute buckets of
    their raw ``diff_position`` (``0-19`` ... ``77+``, texts that tokenise alike left out).
    """
    import pandas as pd

    from densecap_eval.metrics.length import position_bucket

    columns = ["series", "bucket", "accuracy", "n"]
    if "neg_correct" not in examples.columns:
        return pd.DataFrame(columns=columns)
    if DIFF_BUCKET_COLUMN in examples.columns:
        positions = examples[DIFF_BUCKET_COLUMN].map(
            lambda b: None if b is None or pd.isna(b) else str(b)
        )
    elif POSITION_COLUMN in examples.columns:
        positions = examples[POSITION_COLUMN].map(
            lambda p: None if p is None or pd.isna(p) else position_bucket(int(p))
        )
    else:
        return pd.DataFrame(columns=columns)
    flags = examples["neg_correct"].astype("boolean")
    usable = positions.notna() & flags.notna()
    grouped = flags[usable].astype(float).groupby(positions[usable])
    out = pd.DataFrame({"accuracy": 100 * grouped.mean(), "n": grouped.size()}).reset_index(
        names="bucket"
    )
    out["series"] = series
    order = position_order()
    out["order"] = out["bucket"].map(lambda b: order.index(b) if b in order else len(order))
    return out.sort_values(["order", "bucket"])[columns].reset_index(drop=True)


def position_lines(data: pd.DataFrame) -> alt.Chart:
    return _bucket_lines(
        data,
        x_title="where the negative first differs (in the model's own window)",
        y_title="Neg accuracy (%)",
        order=position_order(),
        height=320,
    )


# --------------------------------------------------------------------------- where reading stops

EDIT_POSITION_KEY = "by_edit_position"  # metrics.json of a negatives task (tasks/negatives.py)
READING_COLUMNS: tuple[str, ...] = (
    "series", "policy", "bin", "start", "accuracy", "visible_accuracy", "n", "invisible",
    "window_end",
)  # fmt: skip


def reading_curve(
    metrics: Mapping[str, Any] | None, *, series: str, policy: str | None = None
) -> pd.DataFrame:
    """One run's Neg accuracy (percent) by edit position in the model's tokens, from its task
    entry in metrics.json (``by_edit_position``): one row per non-empty bin, with its first
    token (``start``), the pairs the model could not see (``invisible``) and where the window
    ends (``window_end``: the first hidden position under truncate, else the first position
    past the window). Empty when the run stored no such breakdown."""
    import pandas as pd

    m = metrics or {}
    bins = m.get(EDIT_POSITION_KEY)
    if not isinstance(bins, Mapping):
        return pd.DataFrame(columns=list(READING_COLUMNS))
    info = m.get("edit_position_bins") or {}
    last = info.get("last_visible") if isinstance(info, Mapping) else None
    policy = policy or str(m.get("text_policy") or "?")
    rows = []
    for label, row in bins.items():
        if not isinstance(row, Mapping) or not row.get("n"):
            continue
        start = _bin_start(str(label))
        if start is None:  # ``identical``: no position; counted in the run's invisible total
            continue
        rows.append(
            {
                "series": series,
                "policy": policy,
                "bin": str(label),
                "start": start,
                "accuracy": _percent_or_none(row.get("neg")),
                "visible_accuracy": _percent_or_none(row.get("neg_visible")),
                "n": int(row["n"]),
                "invisible": int(row.get("invisible") or 0),
                "window_end": int(last) + 1 if isinstance(last, int) else None,
            }
        )
    return pd.DataFrame(rows, columns=list(READING_COLUMNS))


def reading_summary(
    metrics: Mapping[str, Any] | None, *, series: str, policy: str | None = None
) -> dict[str, object]:
    """One run's totals beside the curve: Neg, Neg over what it could see, invisible pairs."""
    m = metrics or {}
    return {
        "model": series,
        "text policy": policy or m.get("text_policy"),
        "window (tokens)": m.get("model_max_text_tokens"),
        "Neg (%)": _percent_or_none(m.get("neg")),
        "Neg, visible pairs (%)": _percent_or_none(m.get("neg_visible")),
        "invisible pairs": m.get("invisible"),
        "pairs": m.get("n"),
    }


def _bin_start(label: str) -> int | None:
    head = label.split("-")[0].rstrip("+")
    return int(head) if head.isdigit() else None


def _percent_or_none(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return 100 * float(value)
    return None


def reading_chart(curve: pd.DataFrame) -> alt.VConcatChart:
    """The chart "Where does the model stop reading?": Neg accuracy by edit position (solid: truncate,
    dashed: chunk-mean ...), a rule where each model's window ends, and below it the count of
    pairs each run could not see, per bin."""
    import altair as alt

    x = alt.X("start:Q", title="position of the edit (model tokens, bin start)")
    color = alt.Color("series:N", title="model")
    dash = alt.StrokeDash("policy:N", title="text policy")
    tooltip = [
        "series:N",
        "policy:N",
        "bin:N",
        alt.Tooltip("accuracy:Q", format=".1f", title="Neg (%)"),
        alt.Tooltip("visible_accuracy:Q", format=".1f", title="Neg, visible (%)"),
        "n:Q",
        "invisible:Q",
    ]
    scored = curve[curve["accuracy"].notna()]
    lines = (
        alt.Chart(scored)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("accuracy:Q", title="Neg accuracy (%)", scale=alt.Scale(domain=[0, 100])),
            color=color,
            strokeDash=dash,
            tooltip=tooltip,
        )
    )
    ends = curve.dropna(subset=["window_end"]).drop_duplicates(["series", "window_end"])
    rule = (
        alt.Chart(ends)
        .mark_rule(color="gray", strokeDash=[2, 2])
        .encode(
            x="window_end:Q", tooltip=["series:N", alt.Tooltip("window_end:Q", title="window ends")]
        )
    )
    hidden = (
        alt.Chart(curve[curve["invisible"] > 0])
        .mark_bar(opacity=0.7)
        .encode(
            x=x,
            xOffset="series:N",
            y=alt.Y("invisible:Q", title="invisible pairs"),
            color=color,
            tooltip=tooltip,
        )
        .properties(height=140)
    )
    return alt.vconcat(alt.layer(lines, rule).properties(height=340), hidden)


def cut_share(examples: pd.DataFrame, *, series: str) -> dict[str, object]:
    """How many of a run's texts (positives and negatives) the token limit cut."""
    cut = total = 0
    for column in CUT_COLUMNS:
        if column not in examples.columns:
            continue
        for value in examples[column]:
            flags = [bool(v) for v in as_list(value) if v is not None]
            cut += sum(flags)
            total += len(flags)
    share = 100 * cut / total if total else None
    return {"series": series, "share": share, "cut": cut, "texts": total}


def cut_bars(data: pd.DataFrame) -> alt.Chart:
    import altair as alt

    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "share:Q",
                title="texts cut by the token limit (%)",
                scale=alt.Scale(domain=[0, 100]),
            ),
            y=alt.Y("series:N", title=None, axis=alt.Axis(labelLimit=260)),
            color=alt.Color("series:N", legend=None),
            tooltip=["series:N", alt.Tooltip("share:Q", format=".1f"), "cut:Q", "texts:Q"],
        )
    )


__all__ = [
    "bucket_labels",
    "chart_columns",
    "cut_bars",
    "cut_share",
    "length_accuracy",
    "length_bucket",
    "length_counts",
    "length_lines",
    "metric_bars",
    "metric_long",
    "position_accuracy",
    "position_lines",
    "position_order",
    "reading_chart",
    "reading_curve",
    "reading_summary",
    "scm_neg_points",
    "scm_neg_scatter",
    "series_labels",
]
