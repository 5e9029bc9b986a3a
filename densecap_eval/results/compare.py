"""Paired comparison of two stored runs on the examples they share.

For each concrete task and accuracy metric with per-example correct flags in both runs, examples
are aligned on their identity (task, image, entry key, and the query text / direction where the
examples carry one), and the comparison reports both accuracies, their difference (B - A), and
as its p-value a paired sign-flip permutation test over photos: examples of one photo are not
independent (they share the photo, and SCM outcomes of a group of 8 are coupled), so the test
flips the sign of each photo's summed difference as a whole. Beside it: a paired bootstrap
interval of the difference that resamples photos, the exact McNemar p-value (which assumes
independent examples, so it is too small here; kept as a secondary figure), the 2x2 counts, and
how many shared examples each run decided on a tie of scores.

When either run was scored in a precision other than fp32, the DCI subtests (SCM / Neg) are
marked "not reference-exact": half-precision scores can flip ties and near-ties.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any

from densecap_eval.core.errors import ResultsError
from densecap_eval.results.schema import (
    INTERRUPTED,
    NOT_REFERENCE_EXACT,
    MetricSpec,
    jsonable,
    legacy_metric_specs,
    merge_specs,
    reference_exact,
)
from densecap_eval.results.store import StoredRun, load_examples

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Columns that identify an example, used when both runs have them and they hold scalars.
KEY_COLUMNS: tuple[str, ...] = ("task", "image", "entry_key", "direction", "query", "text")
CLUSTER_COLUMN = "image"
COMPARE_FORMATS: tuple[str, ...] = ("table", "markdown", "csv", "json")
# Monte Carlo sign flips when too many photos differ to enumerate (paired.DEFAULT_N_PERM; not
# imported from there so that importing this module does not import numpy).
DEFAULT_N_PERM = 10_000
# How the outputs name the two tests.
CLUSTERED_TEST = "paired sign-flip permutation over photos"
MCNEMAR_LABEL = "McNemar (assumes independent examples)"


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one concrete task, compared on the examples both runs scored."""

    task: str
    metric: str
    n: int  # shared examples
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a
    p_value: float  # two-sided, paired sign-flip permutation over photos (see ``test``)
    ci: tuple[float, float] | None  # paired cluster bootstrap 95% interval of diff
    both_correct: int
    both_wrong: int
    only_a: int
    only_b: int
    ties_a: int | None  # shared examples run A decided on equal scores (None: not recorded)
    ties_b: int | None
    p_mcnemar_indep: float | None = None  # exact McNemar: assumes independent examples
    n_photos: int | None = None  # clusters the test and the interval are over
    test: str = CLUSTERED_TEST  # how p_value was computed, e.g. "... (4 photos, exact)"
    reference_exact: bool = True  # False: a DCI subtest with a run not scored in fp32


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
            "tests": {"p_value": CLUSTERED_TEST, "p_mcnemar_indep": MCNEMAR_LABEL},
            "notes": list(self.notes),
            "metrics": [jsonable(asdict(m)) for m in self.metrics],
        }


# --------------------------------------------------------------------------- statistics


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against 1/2.

    It assumes independent examples; on clustered examples it is too small (see module doc).
    """
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


def clustered_test(
    correct_a: np.ndarray, correct_b: np.ndarray, clusters: np.ndarray, *, n_perm: int, seed: int
) -> tuple[float, int, str]:
    """(p, photos, description) of the paired sign-flip permutation test over photos."""
    from densecap_eval.metrics import paired

    result = paired.paired_sign_flip_test(correct_a, correct_b, clusters, n_perm=n_perm, seed=seed)
    how = "exact" if result.exact else f"{result.n_perm} random sign flips"
    photos = "photo" if result.n_clusters == 1 else "photos"
    description = f"{CLUSTERED_TEST} ({result.n_clusters} {photos}, {how})"
    return result.p_value, result.n_clusters, description


def is_dci_subtest(task: str) -> bool:
    """A DCI SCM / Neg subtest with reference numbers (``dci/all_swaps`` ...), as the report
    marks them; retrieval tasks are not among them."""
    from densecap_eval.results.report import DCI_REFERENCE_SUBTESTS

    return task in DCI_REFERENCE_SUBTESTS


# --------------------------------------------------------------------------- alignment


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


def _precision_note(a: StoredRun, b: StoredRun) -> str | None:
    """Why DCI subtests are not reference-exact (a run not scored in fp32), or None."""
    off = [
        f"{name} ran in {run.card.precision}"
        for name, run in (("A", a), ("B", b))
        if run.card is not None and not reference_exact(run.card)
    ]
    if not off:
        return None
    return f"{' and '.join(off)}, not fp32: DCI subtest results are {NOT_REFERENCE_EXACT}"


def compare_runs(
    run_a: StoredRun,
    run_b: StoredRun,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    n_perm: int = DEFAULT_N_PERM,
) -> Comparison:
    """Compare two complete runs metric by metric on the examples both scored (see module doc).

    The metrics are those the tasks declared with a per-example column (`MetricSpec.column`)
    both runs hold, in declaration order. ``n_perm`` random sign flips are drawn (seeded by
    ``seed``) for a metric on which more than 20 photos differ; below that all flips are
    enumerated.
    """
    cols_a, cols_b = _schema_columns_checked(run_a), _schema_columns_checked(run_b)
    shared_cols = [c for c in cols_a if c in cols_b]
    candidates = _all_specs(run_a, run_b, shared_cols)
    notes = _config_notes(run_a, run_b)
    if not candidates:
        notes.append("no per-example correct flags in common; nothing to compare")
        return Comparison(run_a, run_b, [], notes)
    if "task" not in shared_cols or CLUSTER_COLUMN not in shared_cols:
        raise ResultsError(f"{run_a.path} / {run_b.path}: examples lack the task or image column")
    merged = _merged_examples(run_a, run_b, shared_cols, candidates, notes)

    precision_note = _precision_note(run_a, run_b)
    tasks = sorted(merged["task"].unique())
    if precision_note is not None and any(is_dci_subtest(str(t)) for t in tasks):
        notes.append(precision_note)
    results = []
    for task in tasks:
        part = merged[merged["task"] == task]
        for spec in _task_specs(run_a, run_b, str(task), shared_cols):
            found = _compare_metric(part, str(task), spec, shared_cols, n_boot=n_boot, seed=seed,
                                    n_perm=n_perm)  # fmt: skip
            if found is not None:
                exact = precision_note is None or not is_dci_subtest(str(task))
                results.append(found if exact else replace(found, reference_exact=False))
    return Comparison(run_a, run_b, results, notes)


def _task_specs(
    run_a: StoredRun, run_b: StoredRun, task: str, shared_cols: Sequence[str]
) -> tuple[MetricSpec, ...]:
    """The metrics of ``task`` to compare: as declared in run A's card, else run B's, else (runs
    stored before declarations) the legacy list; those with a column both runs hold."""
    specs = next(
        (
            run.card.specs_for(task)
            for run in (run_a, run_b)
            if run.card is not None and task in run.card.metric_specs
        ),
        legacy_metric_specs(shared_cols),
    )
    return tuple(s for s in specs if s.column is not None and s.column in shared_cols)


def outcome_column(
    run_a: StoredRun, run_b: StoredRun, task: str, metric: str, shared_cols: Sequence[str]
) -> str | None:
    """The per-example column `compare_runs` read ``metric`` of ``task`` from (None: none)."""
    specs = _task_specs(run_a, run_b, task, shared_cols)
    return next((s.column for s in specs if s.name == metric), None)


def _all_specs(
    run_a: StoredRun, run_b: StoredRun, shared_cols: Sequence[str]
) -> tuple[MetricSpec, ...]:
    """Every metric some task of either run may compare (what examples.parquet columns to load)."""
    tasks = {t for run in (run_a, run_b) if run.card is not None for t in run.card.tasks}
    groups = [_task_specs(run_a, run_b, t, shared_cols) for t in sorted(tasks)]
    groups.append(_task_specs(run_a, run_b, "", shared_cols))  # tasks neither card lists
    return merge_specs(groups)


def _merged_examples(
    run_a: StoredRun,
    run_b: StoredRun,
    shared_cols: Sequence[str],
    specs: Sequence[MetricSpec],
    notes: list[str],
) -> pd.DataFrame:
    """The examples both runs scored, aligned on their identity (``<column>_a`` / ``_b``);
    what was left out or doubled is said in ``notes``."""
    ties = [s.tie_column for s in specs if s.tie_column is not None and s.tie_column in shared_cols]
    keyed = [c for c in KEY_COLUMNS if c in shared_cols]
    wanted = list(dict.fromkeys([*keyed, *(str(s.column) for s in specs), *ties]))
    frame_a = load_examples(run_a, columns=wanted)
    frame_b = load_examples(run_b, columns=wanted)
    keys = [c for c in _scalar_columns(frame_a, keyed) if c in _scalar_columns(frame_b, keyed)]
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
    return merged


def _compare_metric(
    part: pd.DataFrame,
    task: str,
    spec: MetricSpec,
    shared_cols: Sequence[str],
    *,
    n_boot: int,
    seed: int,
    n_perm: int,
) -> MetricComparison | None:
    """One metric of one task on the examples both runs decided (None: no such example)."""
    from densecap_eval.metrics import paired

    fa, fb = part[f"{spec.column}_a"], part[f"{spec.column}_b"]
    usable = fa.notna() & fb.notna()
    if not usable.any():
        return None
    a = fa[usable].astype(bool).to_numpy()
    b = fb[usable].astype(bool).to_numpy()
    clusters = part.loc[usable, CLUSTER_COLUMN].astype(str).to_numpy()
    counts = paired.paired_counts(a, b)
    tie = spec.tie_column if spec.tie_column in shared_cols else None
    ties = (
        (int(part.loc[usable, f"{tie}_a"].fillna(False).astype(bool).sum()),
         int(part.loc[usable, f"{tie}_b"].fillna(False).astype(bool).sum()))
        if tie else (None, None)
    )  # fmt: skip
    p_value, n_photos, test = clustered_test(a, b, clusters, n_perm=n_perm, seed=seed)
    return MetricComparison(
        task=task,
        metric=spec.name,
        n=len(a),
        acc_a=float(a.mean()),
        acc_b=float(b.mean()),
        diff=float(b.mean() - a.mean()),
        p_value=p_value,
        ci=paired_cluster_bootstrap(a, b, clusters, n_boot=n_boot, seed=seed),
        both_correct=counts.both_correct,
        both_wrong=counts.both_wrong,
        only_a=counts.only_a,
        only_b=counts.only_b,
        ties_a=ties[0],
        ties_b=ties[1],
        p_mcnemar_indep=mcnemar_exact(counts.only_a, counts.only_b),
        n_photos=n_photos,
        test=test,
    )


def _schema_columns_checked(run: StoredRun) -> list[str]:
    reason = next(iter((run.reason or "").strip().splitlines()), "")  # one line of it
    if run.status == INTERRUPTED:
        why = f" ({reason})" if reason else ""
        raise ResultsError(
            f"run {run.path} was interrupted before it finished{why}; "
            "it has no results to compare: run it again"
        )
    if not run.is_complete:
        why = f": {reason}" if reason else ""
        raise ResultsError(f"run {run.path} is {run.status}{why}")
    return _schema_columns(run)


# --------------------------------------------------------------------------- output

TABLE_COLUMNS: tuple[str, ...] = (
    "task", "metric", "n", "photos", "A", "B", "B-A [95% CI]", "p (photos)", "p McNemar (indep.)",
    "both ok", "both wrong", "only A", "only B", "ties A/B",
)  # fmt: skip
CSV_COLUMNS: tuple[str, ...] = (
    "task", "metric", "n", "n_photos", "acc_a", "acc_b", "diff", "ci_lo", "ci_hi", "p_value",
    "test", "p_mcnemar_indep", "both_correct", "both_wrong", "only_a", "only_b", "ties_a",
    "ties_b", "reference_exact",
)  # fmt: skip


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _flagged(comparison: Comparison) -> bool:
    return any(not m.reference_exact for m in comparison.metrics)


def table_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison (percent), the clustered p before McNemar's.

    A ``note`` column is added when some rows are not reference-exact.
    """
    header = list(TABLE_COLUMNS)
    flagged = _flagged(comparison)
    if flagged:
        header.append("note")
    rows = []
    for m in comparison.metrics:
        diff = f"{100 * m.diff:+.1f}"
        if m.ci is not None:
            diff += f" [{100 * m.ci[0]:+.1f}, {100 * m.ci[1]:+.1f}]"
        ties = "-" if m.ties_a is None else f"{m.ties_a}/{m.ties_b}"
        photos = "-" if m.n_photos is None else str(m.n_photos)
        cells = [m.task, m.metric, str(m.n), photos, _pct(m.acc_a), _pct(m.acc_b), diff,
                 _p(m.p_value), _p(m.p_mcnemar_indep), str(m.both_correct), str(m.both_wrong),
                 str(m.only_a), str(m.only_b), ties]  # fmt: skip
        if flagged:
            cells.append("" if m.reference_exact else NOT_REFERENCE_EXACT)
        rows.append(cells)
    return header, rows


def legend(comparison: Comparison) -> list[str]:
    """Lines saying which test produced each p-value (the clustered one first)."""
    from densecap_eval.metrics.paired import SIGN_FLIP_EXACT_LIMIT

    if not comparison.metrics:
        return []
    tests = sorted({m.test for m in comparison.metrics})
    if len(tests) == 1:
        first = f"test: {tests[0]}"
    else:
        first = (
            f"test: {CLUSTERED_TEST} (photos per row in column 'photos'; exact where at most "
            f"{SIGN_FLIP_EXACT_LIMIT} photos differ, else random sign flips)"
        )
    return [
        first,
        "p (photos): two-sided p-value of that test; B-A [95% CI]: paired bootstrap over photos",
        f"p McNemar (indep.): {MCNEMAR_LABEL}; too small when a photo's examples are correlated",
    ]


def render_markdown(comparison: Comparison) -> str:
    """A pipe table (percent), then the legend and the notes as a list."""
    a, b = comparison.run_a, comparison.run_b
    lines = [
        f"A: `{a.card.label if a.card else '?'}` ({a.run_id})  ",
        f"B: `{b.card.label if b.card else '?'}` ({b.run_id})",
        "",
    ]
    header, rows = table_cells(comparison)
    if rows:
        aligns = ["---" if name in ("task", "metric", "note") else "---:" for name in header]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(aligns) + "|")
        lines.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
        lines.append("")
    lines.extend(f"- {line}" for line in legend(comparison))
    lines.extend(f"- note: {note}" for note in comparison.notes)
    return "\n".join(lines).rstrip() + "\n"


def render_csv(comparison: Comparison) -> str:
    """One line per (task, metric), values as fractions; empty cells for missing values."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for m in comparison.metrics:
        lo, hi = m.ci if m.ci is not None else (None, None)
        values = {**asdict(m), "ci_lo": lo, "ci_hi": hi}
        writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
    return out.getvalue()


def print_comparison(
    comparison: Comparison, fmt: str = "table", *, file: IO[str] | None = None
) -> None:
    """Write the comparison as a table or markdown (percent), csv or JSON (fractions)."""
    import sys

    stream = file if file is not None else sys.stdout
    if fmt == "json":
        stream.write(json.dumps(comparison.to_json(), indent=2, allow_nan=False) + "\n")
        return
    if fmt == "markdown":
        stream.write(render_markdown(comparison))
        return
    if fmt == "csv":
        stream.write(render_csv(comparison))
        return
    if fmt != "table":
        raise ValueError(f"unknown compare format {fmt!r} (known: {', '.join(COMPARE_FORMATS)})")
    from rich import box
    from rich.console import Console
    from rich.table import Table

    a, b = comparison.run_a, comparison.run_b
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    target = stream if is_tty else io.StringIO()
    console = Console(file=target, width=None if is_tty else 250, highlight=False)
    console.print(f"A: {a.card.label if a.card else '?'}  ({a.run_id})")
    console.print(f"B: {b.card.label if b.card else '?'}  ({b.run_id})")
    header, rows = table_cells(comparison)
    table = Table(box=box.SIMPLE_HEAD)
    for name in header:
        left = name in ("task", "metric", "note")
        table.add_column(name, justify="left" if left else "right", no_wrap=True)
    for cells in rows:
        table.add_row(*cells)
    console.print(table)
    for line in legend(comparison):
        console.print(line)
    for note in comparison.notes:
        console.print(f"note: {note}")
    if not is_tty:  # drop rich's padding blanks from piped output
        text = target.getvalue()  # type: ignore[union-attr]
        stream.write("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
