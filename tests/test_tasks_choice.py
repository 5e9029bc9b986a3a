"""The multiple-choice task family: planned pairs, the two decision rules, the peer's average."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, FakePairScorer, load_region
from PIL import Image

from densecap_eval.datasets.regions import Region
from densecap_eval.engine.engine import score_plan
from densecap_eval.engine.plan import ScoringPlan
from densecap_eval.tasks.choice import ChoiceExample, ChoiceTask, decide, mean_accuracy
from densecap_eval.tasks.context import ComputeContext


@pytest.mark.parametrize(
    ("scores", "answer", "rule", "correct", "tie"),
    [
        ([0.2, 0.9], 1, "first", True, False),
        ([0.9, 0.2], 1, "first", False, False),
        ([0.5, 0.5], 1, "first", False, True),  # ARO VG: [false, true], a tie picks the negative
        ([0.5, 0.5, 0.1], 0, "first", True, True),  # ARO order: true first, a tie counts right
        ([0.5, 0.5], 0, "strict", False, True),  # SugarCrepe / VL-CheckList: pos > neg
        ([0.6, 0.5, 0.59], 0, "strict", True, False),
        ([0.1, 0.7, 0.7], 2, "first", False, True),
    ],
)
def test_decide_by_hand(
    scores: list[float], answer: int, rule: Any, correct: bool, tie: bool
) -> None:
    got_correct, got_tie = decide(np.array([scores]), np.array([answer]), rule)
    assert (bool(got_correct[0]), bool(got_tie[0])) == (correct, tie)


def _examples(tmp_path: Path) -> list[ChoiceExample]:
    out = []
    for i, colour in enumerate(("red", "green", "blue")):
        photo = tmp_path / f"{i}.png"
        Image.new("RGB", (16, 16), colour).save(photo)
        options = (f"a {colour} square", "a yellow square", f"a {colour} circle")
        out.append(ChoiceExample(f"ex{i}", photo.name, Region(str(photo)), options, i % 3, "g"))
    return out


@pytest.mark.parametrize("scorer_cls", [FakeEmbeddingScorer, FakePairScorer])
def test_choice_task_equals_a_direct_computation(tmp_path: Path, scorer_cls: Any) -> None:
    examples = _examples(tmp_path)
    task = ChoiceTask("t/x", "p", "d", "ds", lambda ds, split, seed: (examples, []), "strict",
                      mean_accuracy("accuracy"))  # fmt: skip
    inst = task.prepare(None)
    plan = ScoringPlan()
    inst.add_to_plan(plan)
    scorer = scorer_cls()
    table = score_plan(scorer, plan, num_workers=0)
    metrics, frame = inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=0))
    if scorer_cls is FakePairScorer:  # only the planned (crop, option) pairs were scored
        assert len(plan.pairs) == sum(len(ex.options) for ex in examples)
    reference = FakeEmbeddingScorer()
    want = []
    for ex in examples:
        s = reference.score([load_region(ex.region)], list(ex.options)).numpy()[0]
        want.append(bool(s[ex.answer] > np.delete(s, ex.answer).max()))
    assert frame["accuracy_correct"].tolist() == want
    assert metrics["accuracy"] == pytest.approx(np.mean(want)) and metrics["n"] == 3
    assert metrics["rule"] == "strict"
