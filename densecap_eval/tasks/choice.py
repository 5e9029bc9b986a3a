"""Multiple-choice tasks: an image (or a crop of it) and K captions, one of them right.

The compositional suites (ARO, SugarCrepe, VL-CheckList) are all this shape; they differ in
how the examples are built, how a choice is decided and how per-example outcomes are averaged,
so a `ChoiceTask` is declared from three parts:

- ``build(dataset, split, seed) -> (examples, skipped)``: the peer's examples, in the peer's
  option order (`ChoiceExample`);
- ``rule``: how the choice is decided, as the peer decides it:
  - ``first``: the option with the highest score, the first index among equal ones (numpy's
    ``argmax``). So a tie goes to whichever option the peer lists first: ARO's VG tasks list
    ``[false, true]`` (a tie picks the negative), its order tasks the true caption first (a
    tie counts as right);
  - ``strict``: right only when the answer scores strictly above every other option
    (SugarCrepe, VL-CheckList: ``pos > neg``);
- ``aggregate(correct, examples) -> metrics``: the peer's average (per relation, per file ...).

Every (region, option) pair is planned, so a pair scorer scores exactly those and an embedding
scorer encodes each unique crop and caption once across all tasks of a run. Each example keeps
its scores, its decision and whether a tie decided it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from densecap_eval.core.errors import DensecapError
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import outcome_metric
from densecap_eval.tasks.blocks import bootstrap_ci, planned
from densecap_eval.tasks.context import ComputeContext

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

ChoiceRule = Literal["first", "strict"]


@dataclass(frozen=True)
class ChoiceExample:
    """One test case: a region of a photo, the options in the peer's order, the right one."""

    id: str  # unique within the task (e.g. "<file>#<index>")
    image: str  # the photo's identity: the cluster of bootstrap intervals and paired tests
    region: Region
    options: tuple[str, ...]
    answer: int  # index of the right option in ``options``
    group: str = ""  # what the peer averages over (a relation, an attribute pair, a file ...)
    meta: Mapping[str, Any] = field(default_factory=dict)


def decide(
    scores: np.ndarray, answers: np.ndarray, rule: ChoiceRule
) -> tuple[np.ndarray, np.ndarray]:
    """(correct, tie) per row of ``scores`` (examples x options) under ``rule`` (module doc).

    ``tie`` marks examples where another option scored exactly the answer's score.
    """
    s = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(s))
    own = s[rows, answers]
    others = s.copy()
    others[rows, answers] = -np.inf
    best_other = others.max(axis=1) if s.shape[1] > 1 else np.full(len(s), -np.inf)
    tie = best_other == own
    if rule == "strict":
        return own > best_other, tie
    if rule == "first":
        return np.argmax(s, axis=1) == answers, tie
    raise DensecapError(f"unknown choice rule {rule!r} (known: first, strict)")


Builder = Callable[[Any, "str | None", int], "tuple[list[ChoiceExample], list[SkippedImage]]"]
Aggregate = Callable[[np.ndarray, Sequence[ChoiceExample]], dict[str, Any]]


def mean_accuracy(key: str) -> Aggregate:
    """The plain mean of the per-example outcomes, stored under ``key``."""

    def aggregate(correct: np.ndarray, examples: Sequence[ChoiceExample]) -> dict[str, Any]:
        del examples
        return {key: float(correct.mean()) if len(correct) else None}

    return aggregate


@dataclass(frozen=True)
class ChoiceTask:
    """A multiple-choice protocol on a dataset (module doc)."""

    name: str
    protocol: str
    description: str
    dataset: str
    build: Builder
    rule: ChoiceRule
    aggregate: Aggregate
    flag: str = "accuracy"  # the per-example metric name (examples' ``<flag>_correct``)
    default_split: str | None = None
    # What the task reports (`Task.metrics`); () declares ``flag`` alone, with its columns.
    metrics: tuple[MetricSpec, ...] = ()

    def __post_init__(self) -> None:
        if not self.metrics:
            object.__setattr__(self, "metrics", (outcome_metric(self.flag),))

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(self, dataset: Any, *, split: str | None = None, seed: int = 0) -> ChoiceInstance:
        examples, skipped = self.build(dataset, split or self.default_split, seed)
        ids = [ex.id for ex in examples]
        if len(set(ids)) != len(ids):
            raise DensecapError(f"{self.name}: two examples share an id")
        for ex in examples:
            if not 0 <= ex.answer < len(ex.options):
                raise DensecapError(f"{self.name}: example {ex.id} has no option {ex.answer}")
        return ChoiceInstance(self, split or self.default_split or "all", examples, skipped)


@dataclass
class ChoiceInstance:
    spec: ChoiceTask
    split: str
    examples: list[ChoiceExample]
    skipped: list[SkippedImage] = field(default_factory=list)
    needs_embedding: bool = False
    _r: np.ndarray | None = field(default=None, repr=False)
    _t: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.spec.name

    def add_to_plan(self, plan: ScoringPlan) -> None:
        self._r = np.array([plan.add_region(ex.region) for ex in self.examples], dtype=np.int64)
        self._t = []
        for r, ex in zip(self._r.tolist(), self.examples, strict=True):
            texts = np.array([plan.add_text(o) for o in ex.options], dtype=np.int64)
            self._t.append(texts)
            for t in texts.tolist():
                plan.need(r, t)

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """The peer's metric (``aggregate``), ``n``, ties, the share of options the policy cut
        and a bootstrap interval over photos (`TaskInstance.compute`). The retrieval tie rule,
        positions and the text policy do not apply: the peer's own ``rule`` decides."""
        region_pos, option_pos = planned(self.task, self._r, self._t)
        correct, tie, scores = self._decide(table, region_pos, option_pos)
        n = len(self.examples)
        flags = {self.spec.flag: correct.astype(np.float64)}
        cut = [bool(table.text_cut[t].any()) for t in option_pos]
        metrics: dict[str, Any] = {
            **self.spec.aggregate(correct, self.examples),
            "n": n,
            "ties": int(tie.sum()),
            "rule": self.spec.rule,
            "ci": bootstrap_ci(flags, [ex.image for ex in self.examples], ctx),
            "cut_share": float(np.mean(cut)) if n else None,
            "model_max_text_tokens": ctx.max_text_tokens,
        }
        return metrics, self._frame(correct, tie, scores, cut)

    def _decide(
        self, table: ScoreTable, region_pos: np.ndarray, option_pos: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Each example's outcome, tie and option scores under the peer's ``rule``."""
        n = len(self.examples)
        correct = np.zeros(n, dtype=bool)
        tie = np.zeros(n, dtype=bool)
        scores: list[np.ndarray] = [np.zeros(0)] * n
        # Examples with the same number of options are decided together.
        by_k: dict[int, list[int]] = {}
        for i, texts in enumerate(option_pos):
            by_k.setdefault(len(texts), []).append(i)
        for idx in by_k.values():
            rows = np.asarray(idx)
            t = np.stack([option_pos[i] for i in idx])
            s = table.scores(region_pos[rows][:, None], t)
            answers = np.array([self.examples[i].answer for i in idx], dtype=np.int64)
            correct[rows], tie[rows] = decide(s, answers, self.spec.rule)
            for j, i in enumerate(idx):
                scores[i] = s[j]
        return correct, tie, scores

    def _frame(
        self, correct: np.ndarray, tie: np.ndarray, scores: list[np.ndarray], cut: list[bool]
    ) -> pd.DataFrame:
        import pandas as pd

        flag = self.spec.flag
        return pd.DataFrame(
            {
                "task": [self.task] * len(self.examples),
                "split": [self.split] * len(self.examples),
                "image": [ex.image for ex in self.examples],
                "entry_key": [ex.id for ex in self.examples],
                "group": [ex.group for ex in self.examples],
                "options": [list(ex.options) for ex in self.examples],
                "answer": np.array([ex.answer for ex in self.examples], dtype=np.int64),
                "scores": [s.astype(np.float64).tolist() for s in scores],
                f"{flag}_correct": correct.astype(bool),
                f"{flag}_tie": tie.astype(bool),
                "cut": np.asarray(cut, dtype=bool),
            }
        )
