"""glibc heap settings that keep a long run's memory flat (no-ops where the C library is not glibc).

glibc serves a block from ``mmap`` only above a threshold that it raises, up to 32 MB, each time
such a block is freed. After the first freed batch of pixels or strip of scores, blocks of that
size come from the heap, and the small allocations made between them land in the freed holes,
so each new block takes fresh pages: a retrieval run's peak grew with its gallery (+208 MB from
2,000 to 8,000 pairs; +57 MB with the threshold held at 1 MiB). docs/performance.md has the
measurements.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 1 << 20


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # noqa: B018 (glibc only: musl, macOS and Windows lack it)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError, TypeError):
        return None
    return libc


@functools.cache
def hold_mmap_threshold() -> bool:
    """Serve every block of 1 MiB or more from ``mmap`` (freed at once, never a heap hole) for
    the rest of the process; once per process. Returns whether the setting took."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)


def give_back_freed() -> None:
    """Return the heap's freed pages to the system (glibc ``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
