"""Paired comparison of two stored runs on the examples they share.

For each concrete task and accuracy metric with per-example correct flags in both runs, examples
are aligned on their identity (task, image, entry key, and the query text / direction where the
examples carry one), and the comparison reports both accuracies, their difference (B - A), the
exact McNemar p-value on the discordant pairs, a paired bootstrap interval of the difference
that resamples photos (all examples of one photo together), the 2x2 counts, and how many shared
examples each run decided on a tie of scores.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from densecap_eval.errors import ResultsError
from densecap_eval.results.schema import HEADLINE_METRICS, jsonable
from densecap_eval.results.store import StoredRun, load_examples

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Accuracy metrics a run may carry per-example flags for, in display order.
COMPARED_METRICS = HEADLINE_METRICS
# Columns that identify an example, used when both runs have them and they hold scalars.
KEY_COLUMNS: tuple[str, ...] = ("task", "image", "entry_key", "direction", "query", "text")
CLUSTER_COLUMN = "image"


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one concrete task, compared on the examples both runs scored."""

    task: str
    metric: str
    n: int  # shared examples
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a
    p_value: float  # exact McNemar, two-sided
    ci: tuple[float, float] | None  # paired cluster bootstrap 95% interval of diff
    both_correct: int
    both_wrong: int
    only_a: int
    only_b: int
    ties_a: int | None  # shared examples run A decided on equal scores (None: not recorded)
    ties_b: int | None


@dataclass(frozen=True)
class Comparison:
    run_a: StoredRun
    run_b: StoredRun
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def describe(run: StoredRun) -> dict[str, Any]:
            card = run.card
            return {
                "run_id": run.run_id,
                "path": str(run.path),
                "model": card.label if card else None,
                "task": card.task if card else None,
            }

        return {
            "run_a": describe(self.run_a),
            "run_b": describe(self.run_b),
            "notes": list(self.notes),
            "metrics": [jsonable(asdict(m)) for m in self.metrics],
        }


# --------------------------------------------------------------------------- statistics


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against 1/2."""
    from densecap_eval.metrics import paired

    return float(paired.mcnemar_exact(only_a, only_b))


def paired_cluster_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, clusters: np.ndarray, *, n_boot: int, seed: int
) -> tuple[float, float] | None:
    """95% interval of mean(b) - mean(a), resampling whole clusters (photos) with replacement."""
    from densecap_eval.metrics import paired

    if n_boot <= 0 or len(correct_a) == 0:
        return None
    interval = paired.paired_cluster_bootstrap(
        correct_a, correct_b, clusters, n_boot=n_boot, seed=seed
    )
    return None if interval is None else (float(interval[0]), float(interval[1]))


# --------------------------------------------------------------------------- alignment


def _flag_column(metric: str, columns: Sequence[str], kind: str = "correct") -> str | None:
    for name in (f"{metric}_{kind}", f"{kind}_{metric}"):
        if name in columns:
            return name
    return None


def _scalar_columns(frame: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """Those of ``names`` holding scalars (a column of lists cannot be a join key)."""
    import numpy as np

    keep = []
    for name in names:
        sample = frame[name].dropna()
        if sample.empty or isinstance(sample.iloc[0], (str, int, float, bool, np.generic)):
            keep.append(name)
    return keep


def _schema_columns(run: StoredRun) -> list[str]:
    import pyarrow.parquet as pq

    from densecap_eval.results.schema import EXAMPLES_FILE

    return list(pq.read_schema(run.path / EXAMPLES_FILE).names)


def _config_notes(a: StoredRun, b: StoredRun) -> list[str]:
    notes: list[str] = []
    if a.card is None or b.card is None:
        return notes
    fields = [
        ("dataset", lambda c: c.dataset.get("name")),
        ("dataset fingerprint", lambda c: c.dataset.get("fingerprint")),
        ("split", lambda c: c.split),
        ("text policy", lambda c: c.text_policy),
        ("blind", lambda c: c.blind),
    ]
    for name, get in fields:
        va, vb = get(a.card), get(b.card)
        if va != vb:
            notes.append(f"the runs differ in {name}: A {va!r}, B {vb!r}")
    return notes


def compare_runs(
    run_a: StoredRun, run_b: StoredRun, *, n_boot: int = 1000, seed: int = 0
) -> Comparison:
    """Compare two complete runs metric by metric on the examples both scored (see module doc)."""
    import numpy as np

    cols_a, cols_b = _schema_columns_checked(run_a), _schema_columns_checked(run_b)
    shared_cols = [c for c in cols_a if c in cols_b]
    metrics = [
        (m, flag) for m in COMPARED_METRICS if (flag := _flag_column(m, shared_cols)) is not None
    ]
    notes = _config_notes(run_a, run_b)
    if not metrics:
        notes.append("no per-example correct flags in common; nothing to compare")
        return Comparison(run_a, run_b, [], notes)
    if "task" not in shared_cols or CLUSTER_COLUMN not in shared_cols:
        raise ResultsError(f"{run_a.path} / {run_b.path}: examples lack the task or image column")

    tie_cols = [c for m, _ in metrics if (c := _flag_column(m, shared_cols, "tie")) is not None]
    wanted = [c for c in KEY_COLUMNS if c in shared_cols] + [f for _, f in metrics] + tie_cols
    frame_a = load_examples(run_a, columns=wanted)
    frame_b = load_examples(run_b, columns=wanted)
    candidates = [c for c in KEY_COLUMNS if c in shared_cols]
    keys = [
        c for c in _scalar_columns(frame_a, candidates) if c in _scalar_columns(frame_b, candidates)
    ]

    for name, frame in (("A", frame_a), ("B", frame_b)):
        dupes = int(frame.duplicated(subset=keys).sum())
        if dupes:
            notes.append(
                f"run {name}: {dupes} examples share an identity ({', '.join(keys)}); first kept"
            )
    merged = frame_a.drop_duplicates(subset=keys).merge(
        frame_b.drop_duplicates(subset=keys), on=keys, how="inner", suffixes=("_a", "_b")
    )
    only_in = (len(frame_a) - len(merged), len(frame_b) - len(merged))
    if only_in[0] or only_in[1]:
        notes.append(
            f"{len(merged)} examples shared; {only_in[0]} only in A and {only_in[1]} only in B are left out"
        )

    results = []
    for task in sorted(merged["task"].unique()):
        part = merged[merged["task"] == task]
        for metric, flag in metrics:
            fa, fb = part[f"{flag}_a"], part[f"{flag}_b"]
            usable = fa.notna() & fb.notna()
            if not usable.any():
                continue
            a = fa[usable].astype(bool).to_numpy()
            b = fb[usable].astype(bool).to_numpy()
            clusters = part.loc[usable, CLUSTER_COLUMN].astype(str).to_numpy()
            only_a = int(np.sum(a & ~b))
            only_b = int(np.sum(~a & b))
            tie = _flag_column(metric, shared_cols, "tie")
            ties = (
                (int(part.loc[usable, f"{tie}_a"].fillna(False).astype(bool).sum()),
                 int(part.loc[usable, f"{tie}_b"].fillna(False).astype(bool).sum()))
                if tie else (None, None)
            )  # fmt: skip
            results.append(
                MetricComparison(
                    task=str(task),
                    metric=metric,
                    n=len(a),
                    acc_a=float(a.mean()),
                    acc_b=float(b.mean()),
                    diff=float(b.mean() - a.mean()),
                    p_value=mcnemar_exact(only_a, only_b),
                    ci=paired_cluster_bootstrap(a, b, clusters, n_boot=n_boot, seed=seed),
                    both_correct=int(np.sum(a & b)),
                    both_wrong=int(np.sum(~a & ~b)),
                    only_a=only_a,
                    only_b=only_b,
                    ties_a=ties[0],
                    ties_b=ties[1],
                )
            )
    return Comparison(run_a, run_b, results, notes)


def _schema_columns_checked(run: StoredRun) -> list[str]:
    if not run.is_complete:
        why = f": {run.reason}" if run.reason else ""
        raise ResultsError(f"run {run.path} is {run.status}{why}")
    return _schema_columns(run)


# --------------------------------------------------------------------------- output


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def print_comparison(
    comparison: Comparison, fmt: str = "table", *, file: IO[str] | None = None
) -> None:
    """Write the comparison as a table (accuracies in percent) or as JSON (fractions)."""
    import sys

    stream = file if file is not None else sys.stdout
    if fmt == "json":
        stream.write(json.dumps(comparison.to_json(), indent=2, allow_nan=False) + "\n")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    a, b = comparison.run_a, comparison.run_b
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    target = stream if is_tty else io.StringIO()
    console = Console(file=target, width=None if is_tty else 250, highlight=False)
    console.print(f"A: {a.card.label if a.card else '?'}  ({a.run_id})")
    console.print(f"B: {b.card.label if b.card else '?'}  ({b.run_id})")
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("task", "metric", "n", "A", "B", "B-A [95% CI]", "p (McNemar)",
                 "both ok", "both wrong", "only A", "only B", "ties A/B"):  # fmt: skip
        table.add_column(
            name, justify="left" if name in ("task", "metric") else "right", no_wrap=True
        )
    for m in comparison.metrics:
        diff = f"{100 * m.diff:+.1f}"
        if m.ci is not None:
            diff += f" [{100 * m.ci[0]:+.1f}, {100 * m.ci[1]:+.1f}]"
        ties = "-" if m.ties_a is None else f"{m.ties_a}/{m.ties_b}"
        table.add_row(m.task, m.metric, str(m.n), _pct(m.acc_a), _pct(m.acc_b), diff,
                      f"{m.p_value:.3g}", str(m.both_correct), str(m.both_wrong),
                      str(m.only_a), str(m.only_b), ties)  # fmt: skip
    console.print(table)
    for note in comparison.notes:
        console.print(f"note: {note}")
    if not is_tty:  # drop rich's padding blanks from piped output
        text = target.getvalue()  # type: ignore[union-attr]
        stream.write("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
