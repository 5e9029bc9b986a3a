"""Tasks declare their metrics (`MetricSpec`); results read them from the run card, and runs
stored before the declarations read with the legacy list."""

from __future__ import annotations

import pytest

from densecap_eval.results.schema import (
    LEGACY_HEADLINE_METRICS,
    MetricSpec,
    RunCard,
    headline_names,
    legacy_metric_specs,
    merge_specs,
)
from densecap_eval.tasks import TASKS, get_task


def _concrete_tasks() -> list[str]:
    return [name for name in TASKS.names() if get_task(name).concrete() == (name,)]


@pytest.mark.parametrize("name", _concrete_tasks())
def test_every_task_declares_its_metrics_in_the_legacy_display_order(name: str) -> None:
    """So `densecap-eval report` and compare show a new run exactly as they showed one stored
    before the declarations."""
    specs = get_task(name).metrics
    names = [spec.name for spec in specs]
    assert specs and len(set(names)) == len(names)
    headline = headline_names(specs)
    assert all(m in LEGACY_HEADLINE_METRICS for m in headline)
    positions = [LEGACY_HEADLINE_METRICS.index(m) for m in headline]
    assert positions == sorted(positions)


def test_a_spec_survives_the_run_card() -> None:
    spec = MetricSpec("toy", higher_is_better=False, column="hit", headline=False, label="t")
    assert MetricSpec.from_dict({**spec.to_dict(), "added_later": 1}) == spec
    card = RunCard("r", {"spec": "m"}, "toy", metric_specs={"toy": [spec.to_dict()]})
    again = RunCard.from_dict(card.to_dict())
    assert again.specs_for("toy") == (spec,)
    assert again.specs_for("other") == legacy_metric_specs()  # undeclared: the legacy list


def test_the_legacy_list_finds_either_column_naming() -> None:
    specs = {s.name: s for s in legacy_metric_specs(["correct_neg", "neg_tie", "scm_correct"])}
    assert (specs["neg"].column, specs["neg"].tie_column) == ("correct_neg", "neg_tie")
    assert (specs["scm"].column, specs["scm"].tie_column) == ("scm_correct", None)
    assert specs["i2t_r1"].column is None


def test_merging_keeps_the_first_declaration_of_a_name() -> None:
    a, b = MetricSpec("x", column="a"), MetricSpec("x", column="b")
    assert merge_specs([(a,), (b, MetricSpec("y"))]) == (a, MetricSpec("y"))
