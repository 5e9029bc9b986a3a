"""What every task's ``compute`` needs from the run, built once per run (`ComputeContext`)."""

from __future__ import annotations

from dataclasses import dataclass

from densecap_eval.core.config import TextPolicy, TieRule
from densecap_eval.metrics.length import DEFAULT_END_TOKENS, DiffPositionFn, PositionWindow


@dataclass(frozen=True)
class ComputeContext:
    """The run's settings a task's metrics depend on; tasks use what applies to them.

    ``bootstrap_seed`` / ``n_boot`` set the intervals (``n_boot`` 0 skips them);
    ``diff_positions`` computes first-difference positions with the model's tokenizer
    (metrics/length.py; None: positions unknown); ``ties`` is the retrieval tie rule
    (metrics/retrieval.py); ``max_text_tokens`` (the model's own limit) and ``text_policy``
    place those positions in the model's window. Length breakdowns always count with the CLIP
    BPE reference.
    """

    bootstrap_seed: int
    n_boot: int
    diff_positions: DiffPositionFn | None = None
    ties: TieRule | str = "pessimistic"
    max_text_tokens: int | None = None
    text_policy: TextPolicy | str = "truncate"

    def position_window(self) -> PositionWindow | None:
        """The model's first-difference window (None without a known token limit)."""
        if self.max_text_tokens is None:
            return None
        # A position function may say how many end tokens its tokenizer writes.
        end_tokens = getattr(self.diff_positions, "end_tokens", DEFAULT_END_TOKENS)
        return PositionWindow(self.max_text_tokens, end_tokens, self.text_policy)
