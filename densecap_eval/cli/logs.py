"""Where the CLI's log records go: one ``warning: ...`` line each on stderr, and under
torchrun one log file per rank."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any


class _StderrLines(logging.StreamHandler):  # type: ignore[type-arg]
    """One ``warning: ...`` line per record, always on the *current* sys.stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    @property
    def stream(self) -> Any:  # follows sys.stderr when tests or callers swap it
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def setup_logging() -> None:
    """Library warnings (skipped records, damaged cache shards) go to stderr as one line each.

    The root logger gets a NullHandler when it has none, so that a library calling the module
    level ``logging.info`` (open_clip does) does not trigger ``basicConfig`` and print every
    warning a second time.
    """
    logger = logging.getLogger("densecap_eval")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
    logger.setLevel(logging.WARNING)
    if not logging.root.handlers:
        logging.root.addHandler(logging.NullHandler())


def setup_rank_logging(results_dir: Path, group: Any) -> Path:
    """Under torchrun: each rank logs (info and up) to ``<results>/.logs/<job>/rank<N>.log``.

    ``<job>`` is rank 0's start time, shared with the others; the folder is hidden, so the
    results store ignores it. Only rank 0 keeps printing warnings on stderr (the others'
    are in their files), so a job prints each warning once.
    """
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    job = group.all_gather(f"{stamp}-{os.getpid()}")[0]  # rank 0's name, on every rank
    log_dir = Path(results_dir) / ".logs" / job
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"rank{group.rank}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s rank{group.rank} %(levelname)s %(name)s: %(message)s")
    )
    logger = logging.getLogger("densecap_eval")
    for h in logger.handlers:
        if isinstance(h, _StderrLines):
            h.setLevel(logging.WARNING if group.is_main else logging.CRITICAL + 1)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return path
