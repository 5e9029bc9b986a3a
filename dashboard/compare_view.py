"""The Compare page's tables: the paired tests from `densecap_eval.results.compare` (the
sign-flip test over photos first, McNemar after it), a 2x2 agreement table, and the examples two
runs disagree on. No Streamlit here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .explorer import as_list, join_keys

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.results.compare import Comparison, MetricComparison

# Example columns shown beside the two flags in the disagreement list.
SHOWN_COLUMNS: tuple[str, ...] = ("positives", "negative", "negative_key", "text", "query")
SCORE_COLUMNS: tuple[str, ...] = ("pos_scores", "neg_score")
MAX_ROWS = 500


def flag_column(
    comparison: Comparison, metric: MetricComparison, columns: Sequence[str]
) -> str | None:
    """The per-example column ``metric`` was compared on (``neg`` -> ``neg_correct``), as the
    run cards declare it (`densecap_eval.results.compare.outcome_column`)."""
    from densecap_eval.results.compare import outcome_column

    return outcome_column(comparison.run_a, comparison.run_b, metric.task, metric.metric, columns)


P_CLUSTERED = "p (photos)"
P_MCNEMAR = "p McNemar (indep.)"


def caption(comparison: Comparison) -> str:
    """What the table's tests are, for the caption above it: which test gave the p shown first."""
    from densecap_eval.results.compare import CLUSTERED_TEST, MCNEMAR_LABEL

    tests = sorted({m.test for m in comparison.metrics})
    test = tests[0] if len(tests) == 1 else f"{CLUSTERED_TEST} (photos per row: column photos)"
    return (
        f"Paired test on the examples both runs scored. {P_CLUSTERED}: {test}; "
        "95% interval of B−A by a bootstrap that resamples photos. "
        f"{P_MCNEMAR}: {MCNEMAR_LABEL}, too small when a photo's examples are correlated."
    )


def comparison_frame(comparison: Comparison) -> pd.DataFrame:
    """One row per (task, metric): accuracies, B - A with its interval, the clustered p, then
    McNemar's p, counts; a ``note`` column marks results that are not reference-exact."""
    import pandas as pd

    from densecap_eval.results.schema import NOT_REFERENCE_EXACT

    rows = []
    for m in comparison.metrics:
        rows.append(
            {
                "task": m.task,
                "metric": m.metric,
                "n": m.n,
                "photos": m.n_photos,
                "A %": round(100 * m.acc_a, 1),
                "B %": round(100 * m.acc_b, 1),
                "B−A": round(100 * m.diff, 1),
                "95% CI of B−A": (
                    f"[{100 * m.ci[0]:+.1f}, {100 * m.ci[1]:+.1f}]" if m.ci is not None else ""
                ),
                P_CLUSTERED: float(f"{m.p_value:.3g}"),
                P_MCNEMAR: (
                    None if m.p_mcnemar_indep is None else float(f"{m.p_mcnemar_indep:.3g}")
                ),
                "both ok": m.both_correct,
                "both wrong": m.both_wrong,
                "only A": m.only_a,
                "only B": m.only_b,
                "ties A/B": "-" if m.ties_a is None else f"{m.ties_a}/{m.ties_b}",
                "note": "" if m.reference_exact else NOT_REFERENCE_EXACT,
            }
        )
    columns = ["task", "metric", "n", "photos", "A %", "B %", "B−A", "95% CI of B−A", P_CLUSTERED,
               P_MCNEMAR, "both ok", "both wrong", "only A", "only B", "ties A/B", "note"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    if all(m.reference_exact for m in comparison.metrics):
        frame = frame.drop(columns="note")
    return frame


def agreement_table(metric: MetricComparison) -> pd.DataFrame:
    """The 2x2 table of one metric: rows A correct / wrong, columns B correct / wrong."""
    import pandas as pd

    return pd.DataFrame(
        [[metric.both_correct, metric.only_a], [metric.only_b, metric.both_wrong]],
        index=["A correct", "A wrong"],
        columns=["B correct", "B wrong"],
    )


def disagreement_columns(available: Sequence[str], flag: str) -> list[str]:
    """What to read from each run to list the disagreements on ``flag``."""
    keys = ("task", "image", "entry_key", "direction", "query", "text")
    wanted = [*keys, *SHOWN_COLUMNS, *SCORE_COLUMNS, flag]
    return [c for c in dict.fromkeys(wanted) if c in available]


def disagreements(
    frame_a: pd.DataFrame, frame_b: pd.DataFrame, *, flag: str, task: str | None = None
) -> pd.DataFrame:
    """Examples both runs scored on which exactly one of them has ``flag`` set, A's texts first.

    Returns at most `MAX_ROWS` rows (the count of all of them is ``attrs["total"]``).
    """
    import pandas as pd

    if task is not None:
        frame_a = frame_a[frame_a["task"] == task]
        frame_b = frame_b[frame_b["task"] == task]
    keys = join_keys(frame_a, frame_b)
    if not keys or flag not in frame_a.columns or flag not in frame_b.columns:
        empty = pd.DataFrame(columns=["A correct", "B correct"])
        empty.attrs["total"] = 0
        return empty
    right_cols = [*keys, flag, *(c for c in SCORE_COLUMNS if c in frame_b.columns)]
    merged = frame_a.drop_duplicates(subset=keys).merge(
        frame_b[right_cols].drop_duplicates(subset=keys), on=keys, suffixes=(" A", " B")
    )
    a = merged[f"{flag} A"].astype("boolean")
    b = merged[f"{flag} B"].astype("boolean")
    differ = (a != b).fillna(False).to_numpy(dtype=bool)
    out = merged[differ].rename(columns={f"{flag} A": "A correct", f"{flag} B": "B correct"})
    if "positives" in out.columns:
        out["positives"] = out["positives"].map(lambda v: " | ".join(map(str, as_list(v))))
    for column in out.columns:
        if column.startswith("pos_scores"):
            out[column] = out[column].map(lambda v: ", ".join(f"{x:.3f}" for x in as_list(v)))
    first = [c for c in ("image", "entry_key", "direction", "query", "A correct", "B correct")
             if c in out.columns]  # fmt: skip
    out = out[first + [c for c in out.columns if c not in first and c != "task"]]
    out = out.reset_index(drop=True)
    total = len(out)
    out = out.head(MAX_ROWS)
    out.attrs["total"] = total
    return out
