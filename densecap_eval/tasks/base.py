"""The task contract shared by all tasks, and a suite of tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from densecap_eval.core.errors import DensecapError
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.context import ComputeContext, DiffPositionFn

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.datasets.records import SkippedImage
    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

__all__ = ["ComputeContext", "DiffPositionFn", "MetricSpec", "Task", "TaskInstance", "TaskSuite"]


class TaskInstance(Protocol):
    """A task prepared on a dataset split: its examples, ready to plan and to score."""

    task: str
    split: str | None
    skipped: list[SkippedImage]
    needs_embedding: bool  # True when any pair may be asked for (e.g. a retrieval gallery)

    def add_to_plan(self, plan: ScoringPlan) -> None: ...

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """Metrics (metrics.json's entry for this task) and one examples row per example."""
        ...


def outcome_metric(name: str, *, tie: bool = True, label: str = "") -> MetricSpec:
    """A headline accuracy whose examples hold ``<name>_correct`` (and ``<name>_tie``)."""
    return MetricSpec(
        name, column=f"{name}_correct", tie_column=f"{name}_tie" if tie else None, label=label
    )


class Task(Protocol):
    name: str
    dataset: str
    description: str

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        """The metrics this task reports, in display order (a suite: none of its own)."""
        ...

    def concrete(self) -> tuple[str, ...]: ...

    def prepare(self, dataset: Any, *, split: str | None = None, seed: int = 0) -> TaskInstance: ...


@dataclass(frozen=True)
class TaskSuite:
    """Several concrete tasks under one name (``dci`` = the four reference subtests)."""

    name: str
    members: tuple[str, ...]
    dataset: str
    description: str
    metrics: tuple[MetricSpec, ...] = ()  # each member declares its own

    def concrete(self) -> tuple[str, ...]:
        return self.members

    def prepare(self, dataset: Any, *, split: str | None = None, seed: int = 0) -> TaskInstance:
        raise DensecapError(f"{self.name!r} is a suite of tasks; prepare its members instead")


def as_list(values: Any) -> list[Any]:
    """numpy row -> plain Python list (parquet-friendly)."""
    return [v.item() if hasattr(v, "item") else v for v in values]


def accuracy(values: Any) -> float | None:
    """Mean of the non-NaN values (bools count 0/1); None when there is none."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None


def breakdown(
    flags: dict[str, Any], labels: Sequence[str | None], buckets: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``{bucket: {metric: accuracy, "n": examples}}`` for every bucket (empty ones too).

    ``flags`` hold one float per example (1.0 / 0.0, NaN where undefined); ``labels`` give
    each example's bucket (None: in no bucket).
    """
    import numpy as np

    label_arr = np.array([lab if lab is not None else "" for lab in labels], dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for bucket in buckets:
        mask = label_arr == bucket
        row: dict[str, Any] = {
            m: accuracy(np.asarray(v, dtype=np.float64)[mask]) for m, v in flags.items()
        }
        row["n"] = int(mask.sum())
        out[bucket] = row
    return out


def ci_lists(cis: dict[str, tuple[float, float] | None]) -> dict[str, list[float] | None]:
    return {name: (list(ci) if ci is not None else None) for name, ci in cis.items()}
