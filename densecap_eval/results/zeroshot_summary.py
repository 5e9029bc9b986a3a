"""Each model's ELEVATER zero-shot mean beside its long-caption metrics (report section).

What a long-caption fine-tune cost on ordinary short-prompt classification, one line per model
(its report label, so protocols and precisions read apart): the mean of the ``zeroshot`` metric
over the ELEVATER datasets that were run (the latest run of each), how many of the 20 that is
(``partial`` when fewer: a plain mean over 19 datasets must not pass for the suite's number),
and, when the same results hold them, DCI's SCM / Neg (``dci/all_swaps``) and long-caption
retrieval R@1 (the first ``*/retrieval*`` task found, named).

Where one model ran a dataset under two protocols or more (``elevater/<key>`` under
``--protocol default`` and ``elevater-dci``, ``clip_benchmark/<key>``), `compare_protocols` puts
the numbers side by side, each labelled with its protocol, metric and image count: they are
never averaged into one (docs/protocols/elevater.md says why they differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from densecap_eval.results.report import ReportRow

ELEVATER_PREFIX = "elevater/"
ELEVATER_TOTAL = 20


@dataclass
class ZeroShotSummary:
    model: str
    scores: dict[str, float] = field(default_factory=dict)  # elevater task -> zeroshot
    scm: float | None = None
    neg: float | None = None
    retrieval_task: str | None = None
    t2i_r1: float | None = None
    i2t_r1: float | None = None
    spec: str | None = None  # the run's model spec (a lora:ADAPTER@BASE names its base)
    base: str | None = None  # the base model's spec where the run card names one (model.base)
    # every long-caption retrieval task: task -> (T2I R@1, I2T R@1), for the dashboard's axis
    retrieval: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float | None:
        return sum(self.scores.values()) / len(self.scores) if self.scores else None

    @property
    def partial(self) -> bool:
        return self.count < ELEVATER_TOTAL


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def summarise(rows: Sequence[ReportRow]) -> list[ZeroShotSummary]:
    """One summary per model that has an ELEVATER result, in order of first appearance."""
    by_model: dict[str, ZeroShotSummary] = {}
    for row in rows:  # oldest first: a later run of a task replaces the earlier one
        if row.task.startswith(ELEVATER_PREFIX):
            value = _number(row.metrics.get("zeroshot"))
            if value is not None:
                summary = by_model.setdefault(row.model, ZeroShotSummary(row.model))
                summary.scores[row.task] = value
                card = row.run.card if row.run is not None else None
                if card is not None:
                    named = card.model.get("base")
                    summary.spec = card.model_spec
                    summary.base = named if isinstance(named, str) else summary.base
    for row in rows:
        found = by_model.get(row.model)
        if found is None:
            continue
        summary = found
        if row.task == "dci/all_swaps":
            summary.scm = _number(row.metrics.get("scm"))
            summary.neg = _number(row.metrics.get("neg"))
        elif "/retrieval" in row.task:
            t2i, i2t = _number(row.metrics.get("t2i_r1")), _number(row.metrics.get("i2t_r1"))
            summary.retrieval[row.task] = (t2i, i2t)
            if summary.retrieval_task not in (None, row.task):
                continue
            summary.retrieval_task, summary.t2i_r1, summary.i2t_r1 = row.task, t2i, i2t
    return list(by_model.values())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


HEADER: tuple[str, ...] = (
    "model", "ELEVATER mean", "datasets", "DCI SCM", "DCI Neg", "retrieval", "T2I R@1", "I2T R@1",
)  # fmt: skip


def table_cells(summaries: Sequence[ZeroShotSummary]) -> list[list[str]]:
    """Rows of `HEADER`, metrics in percent; ``datasets`` is ``n/20`` plus ``partial``."""
    out = []
    for s in summaries:
        count = f"{s.count}/{ELEVATER_TOTAL}" + (" partial" if s.partial else "")
        out.append([s.model, _pct(s.mean), count, _pct(s.scm), _pct(s.neg),
                    s.retrieval_task or "-", _pct(s.t2i_r1), _pct(s.i2t_r1)])  # fmt: skip
    return out


# --------------------------------------------------------------------------- protocols side by side

CLIP_BENCHMARK_PREFIX = "clip_benchmark/"
PROTOCOLS: tuple[str, ...] = ("elevater", "elevater-dci", "clip_benchmark")
# CLIP_benchmark's metric that asks what ELEVATER's metric of the same dataset asks.
CLIP_BENCHMARK_METRIC: dict[str, str] = {
    "accuracy": "acc1",
    "mean-per-class": "mean_per_class_recall",
    "11point_mAP": "mean_average_precision",
}


@dataclass(frozen=True)
class ProtocolScore:
    """One dataset's number under one protocol: the metric's name, its value, the image count."""

    metric: str
    value: float
    n: int | None


@dataclass
class ProtocolComparison:
    """One model's numbers on one dataset (DCI's key) under each protocol that was run."""

    model: str  # the report label without its protocol mark
    dataset: str
    scores: dict[str, ProtocolScore] = field(default_factory=dict)  # protocol -> score


def without_protocol(label: str) -> str:
    """A report label with its ``protocol ...`` mark dropped (the other marks kept), so runs of
    one model under two protocols share a line."""
    head, sep, marks = label.rpartition(" (")
    if not sep or not marks.endswith(")"):
        return label
    kept = [m for m in marks[:-1].split(", ") if not m.startswith("protocol ")]
    return f"{head} ({', '.join(kept)})" if kept else head


def _protocol_of(row: ReportRow) -> tuple[str, str] | None:
    """(protocol, DCI's dataset key) of an ``elevater/`` or ``clip_benchmark/`` row, else None."""
    if row.task.startswith(ELEVATER_PREFIX):
        dci = row.metrics.get("protocol") == "elevater-dci"
        return ("elevater-dci" if dci else "elevater"), row.task[len(ELEVATER_PREFIX) :]
    if row.task.startswith(CLIP_BENCHMARK_PREFIX):
        return "clip_benchmark", row.task[len(CLIP_BENCHMARK_PREFIX) :]
    return None


def _score(protocol: str, metrics: dict[str, Any], asked: str | None) -> ProtocolScore | None:
    """A protocol's number: ELEVATER's ``zeroshot``; for CLIP_benchmark the metric of its dict
    that asks what ELEVATER's ``asked`` metric asks (mean-per-class: mean_per_class_recall),
    else mAP on a multilabel set, else acc1."""
    if protocol == "clip_benchmark":
        name = CLIP_BENCHMARK_METRIC.get(asked or "", "")
        if name not in metrics:
            name = "mean_average_precision" if "mean_average_precision" in metrics else "acc1"
        label = name
    else:
        name, label = "zeroshot", str(metrics.get("metric", "zeroshot"))
    value = _number(metrics.get(name))
    n = metrics.get("n")
    return None if value is None else ProtocolScore(label, value, n if isinstance(n, int) else None)


def compare_protocols(rows: Sequence[ReportRow]) -> list[ProtocolComparison]:
    """Per model and dataset run under two protocols or more, each protocol's number (the latest
    run of each), in order of first appearance. Each protocol reads its own copy of the data:
    ``n`` says how many images each number is over."""
    latest: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:  # oldest first: a later run replaces the earlier one
        tagged = _protocol_of(row)
        if tagged is not None:
            key = (without_protocol(row.model), tagged[1])
            latest.setdefault(key, {})[tagged[0]] = row.metrics
    out = []
    for (model, dataset), by_protocol in latest.items():
        asked = next(
            (str(m.get("metric")) for p, m in by_protocol.items() if p != "clip_benchmark"), None
        )
        kept: dict[str, ProtocolScore] = {}
        for protocol in PROTOCOLS:
            score = (
                _score(protocol, by_protocol[protocol], asked) if protocol in by_protocol else None
            )
            if score is not None:
                kept[protocol] = score
        if len(kept) > 1:
            out.append(ProtocolComparison(model, dataset, kept))
    return out


def protocol_table(
    comparisons: Sequence[ProtocolComparison],
) -> tuple[list[str], list[list[str]]]:
    """(header, rows): model, dataset, then one column per protocol present, each cell
    ``value% (metric, n=N)``, ``-`` where that protocol was not run."""
    shown = [p for p in PROTOCOLS if any(p in c.scores for c in comparisons)]
    body = []
    for c in comparisons:
        cells = [c.model, c.dataset]
        for protocol in shown:
            s = c.scores.get(protocol)
            n = "" if s is None or s.n is None else f", n={s.n}"
            cells.append("-" if s is None else f"{_pct(s.value)} ({s.metric}{n})")
        body.append(cells)
    return ["model", "dataset", *shown], body


def sections(rows: Sequence[ReportRow]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's zero-shot tables as (title, header, rows): the per-model summary, then the
    protocols side by side where a model ran a dataset under two or more."""
    out = []
    summaries = summarise(rows)
    if summaries:
        out.append(("zero-shot classification vs long captions", list(HEADER),
                    table_cells(summaries)))  # fmt: skip
    comparisons = compare_protocols(rows)
    if comparisons:
        header, body = protocol_table(comparisons)
        out.append(("zero-shot protocols side by side", header, body))
    return out
