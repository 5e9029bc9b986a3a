"""Batch sizes and out-of-memory back-off, shared by the engine and the scorers.

A neutral module so that scorers never import the engine: the engine owns batching for a run
(``--batch-size`` is the number of items, regions / texts for an embedding scorer and
(image, text) pairs for a pair scorer, that reach the model in one forward), and a pair scorer's
``score`` (the full-matrix API for direct library users) chunks with the same back-off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

from densecap_eval.core.errors import DensecapError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Items per forward. A pair scorer's item is a whole VLM forward (image tokens + prompt + text),
# far heavier than an embedding scorer's region or text.
DEFAULT_BATCH_SIZES: dict[str, dict[str, int]] = {
    "embedding": {"cpu": 32, "cuda": 256, "mps": 64},
    # Regions and texts through the towers, as "embedding"; the head's pairs are batched by
    # `densecap_eval.engine.late` from the same number.
    "late-interaction": {"cpu": 32, "cuda": 256, "mps": 64},
    "pair": {"cpu": 32, "cuda": 64, "mps": 16},
}


def default_batch_size(
    device: object, kind: Literal["embedding", "late-interaction", "pair"] = "embedding"
) -> int:
    """A sensible batch size for a device ("cuda:1" counts as cuda) and a scorer kind."""
    sizes = DEFAULT_BATCH_SIZES[kind]
    return sizes.get(str(device or "cpu").split(":")[0], sizes["cpu"])


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA out-of-memory error (typed or the older RuntimeError)."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc)


class BatchBackoff:
    """Runs work in chunks of at most ``size`` items, halving ``size`` on out-of-memory.

    The smaller size is kept for later calls to `run`, so one instance serves a whole run.
    """

    def __init__(self, size: int, *, what: str) -> None:
        if size < 1:
            raise DensecapError(f"batch size must be at least 1, got {size}")
        self.size = size
        self.what = what

    def run(self, n: int, fn: Callable[[int, int], T]) -> Iterator[tuple[int, int, T]]:
        """Yield ``(start, stop, fn(start, stop))`` covering ``range(n)`` in order."""
        start = 0
        while start < n:
            stop = min(n, start + self.size)
            try:
                out = fn(start, stop)
            except Exception as exc:
                if not is_oom(exc) or stop - start <= 1:
                    raise
            else:
                yield start, stop, out
                del out
                start = stop
                continue
            # Out of the except block, so the failed attempt's tensors (held by the traceback's
            # frames) are free before the allocator's cache is emptied.
            self.size = max(1, (stop - start) // 2)
            log.warning(
                "out of memory encoding %d %s; retrying with batches of %d",
                stop - start,
                self.what,
                self.size,
            )
            empty_cuda_cache()


def empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
