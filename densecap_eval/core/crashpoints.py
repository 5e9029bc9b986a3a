"""A test hook: make this process die by SIGKILL at a named point, to prove crash safety.

``DENSECAP_EVAL_CRASH_AT=NAME:K`` kills the process (``kill -9`` on itself: no cleanup, no
``finally``, no atexit) the K-th time it passes `crash_point` ``NAME`` (K counts from 1);
``NAME:K:R`` only on torchrun rank R (the ``RANK`` variable).
Unset, `crash_point` costs one dictionary lookup. The points are:

- ``encoded``: an encoded batch was written to the cache (the kill lands between batches);
- ``stored``: inside a results file's atomic write, after the temporary file is written and
  before it is renamed (the kill lands in the middle of storing a run);
- ``run-stored``: a run directory is complete, the next run of the command has not started.

Only the tests set it (tests/test_crash_safety.py); it is not a user option.
"""

from __future__ import annotations

import os
import signal

ENV = "DENSECAP_EVAL_CRASH_AT"
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here by SIGKILL when ``DENSECAP_EVAL_CRASH_AT`` asks for this pass of ``name``."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, rest = wanted.partition(":")
    count, _, rank = rest.partition(":")
    if point != name or (rank and os.environ.get("RANK", "0") != rank):
        return
    _passes[name] = _passes.get(name, 0) + 1
    if str(_passes[name]) == count:
        os.kill(os.getpid(), signal.SIGKILL)
