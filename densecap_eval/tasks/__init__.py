"""Tasks: declared data saying which dataset, which examples and which metrics.

A task's ``prepare(dataset, split=..., seed=...)`` returns a `TaskInstance` that adds its
regions and texts to a shared `ScoringPlan` and turns the resulting `ScoreTable` into metrics
and a per-example table. A *suite* (such as ``dci``) names several concrete tasks.

Third-party tasks register through the ``densecap_eval.tasks`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from densecap_eval.core.registry import Registry

if TYPE_CHECKING:
    from densecap_eval.tasks.base import Task

# Each benchmark folder under densecap_eval/datasets/ registers its own tasks (discovered on
# first use); third-party tasks come through the entry-point group.
# Registry[Any], not Registry[Task]: the frozen TaskSuite fails the Task protocol (settable
# members) until tasks/base.py declares them read-only; get_task still returns a Task.
TASKS: Registry[Any] = Registry(
    "task", entry_point_group="densecap_eval.tasks", discover="densecap_eval.datasets"
)


def get_task(name: str) -> Task:
    """The task (or suite) registered under ``name``; unknown names raise with the known ones."""
    return TASKS.get(name)


def needs_gallery(name: str) -> bool:
    """Whether a task ranks a whole gallery (retrieval): a pair scorer then needs a first stage."""
    return bool(getattr(get_task(name), "needs_gallery", False))


def list_tasks() -> list[str]:
    return TASKS.names()


def concrete_tasks(names: Iterable[str]) -> list[str]:
    """Suites expanded to their members, duplicates dropped, order kept."""
    out: dict[str, None] = {}
    for name in names:
        for member in get_task(name).concrete():
            out.setdefault(member, None)
    return list(out)
