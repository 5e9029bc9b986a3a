"""densecap-eval: evaluate CLIP-style and vision-language models on densely captioned images.

The public API is the names in ``__all__``; everything else is internal. Names are resolved
lazily so that ``import densecap_eval`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# What type checkers see: the real names (at run time `__getattr__` below imports them lazily).
if TYPE_CHECKING:
    from densecap_eval.core.config import RunConfig
    from densecap_eval.core.errors import DensecapError
    from densecap_eval.datasets import list_datasets, load_dataset
    from densecap_eval.datasets.base import DatasetBase
    from densecap_eval.run.evaluate import RunResult, evaluate, evaluate_tasks
    from densecap_eval.scorers import list_models, load_scorer
    from densecap_eval.scorers.base import EmbeddingScorer, PairScorer, Scorer
    from densecap_eval.tasks import get_task, list_tasks
    from densecap_eval.tasks.base import Task

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "DatasetBase": "densecap_eval.datasets.base",
    "DensecapError": "densecap_eval.core.errors",
    "EmbeddingScorer": "densecap_eval.scorers.base",
    "PairScorer": "densecap_eval.scorers.base",
    "RunConfig": "densecap_eval.core.config",
    "RunResult": "densecap_eval.run.evaluate",
    "Scorer": "densecap_eval.scorers.base",
    "Task": "densecap_eval.tasks.base",
    "evaluate": "densecap_eval.run.evaluate",
    "evaluate_tasks": "densecap_eval.run.evaluate",
    "get_task": "densecap_eval.tasks",
    "list_datasets": "densecap_eval.datasets",
    "list_models": "densecap_eval.scorers",
    "list_tasks": "densecap_eval.tasks",
    "load_dataset": "densecap_eval.datasets",
    "load_scorer": "densecap_eval.scorers",
}

# Spelled out (not derived from _EXPORTS) so that linters and type checkers read it statically;
# tests/test_packaging.py checks that it is _EXPORTS' keys, sorted.
__all__ = [
    "DatasetBase",
    "DensecapError",
    "EmbeddingScorer",
    "PairScorer",
    "RunConfig",
    "RunResult",
    "Scorer",
    "Task",
    "evaluate",
    "evaluate_tasks",
    "get_task",
    "list_datasets",
    "list_models",
    "list_tasks",
    "load_dataset",
    "load_scorer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'densecap_eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
