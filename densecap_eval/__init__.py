"""densecap-eval: evaluate CLIP-style and vision-language models on densely captioned images.

The public API is the names in ``__all__``; everything else is internal. Names are resolved
lazily so that ``import densecap_eval`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "DensecapError": "densecap_eval.core.errors",
    "EmbeddingScorer": "densecap_eval.scorers.base",
    "PairScorer": "densecap_eval.scorers.base",
    "RunConfig": "densecap_eval.core.config",
    "RunResult": "densecap_eval.run.evaluate",
    "Scorer": "densecap_eval.scorers.base",
    "evaluate": "densecap_eval.run.evaluate",
    "get_task": "densecap_eval.tasks",
    "list_datasets": "densecap_eval.datasets",
    "list_models": "densecap_eval.scorers",
    "list_tasks": "densecap_eval.tasks",
    "load_dataset": "densecap_eval.datasets",
    "load_scorer": "densecap_eval.scorers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'densecap_eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
