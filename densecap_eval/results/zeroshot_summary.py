"""Each model's ELEVATER zero-shot mean beside its long-caption metrics (report section).

What a long-caption fine-tune cost on ordinary short-prompt classification, one line per model
(its report label, so protocols and precisions read apart): the mean of the ``zeroshot`` metric
over the ELEVATER datasets that were run (the latest run of each), how many of the 20 that is
(``partial`` when fewer: a plain mean over 19 datasets must not pass for the suite's number),
and, when the same results hold them, DCI's SCM / Neg (``dci/all_swaps``) and long-caption
retrieval R@1 (the first ``*/retrieval*`` task found, named).
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
                summary.spec = card.model_spec if card is not None else summary.spec
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
