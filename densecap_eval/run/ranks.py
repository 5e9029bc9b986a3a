"""One helper the orchestration shares under torchrun: run a step on every rank together."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from densecap_eval.engine.distributed import Group

T = TypeVar("T")


def everywhere(group: Group | None, fn: Callable[[], T]) -> T:
    """``fn()``; in a distributed run, every rank fails when one does (none waits forever)."""
    return fn() if group is None else group.run(fn)
