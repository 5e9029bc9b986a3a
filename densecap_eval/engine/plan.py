"""What a task asks the engine for, and what the engine gives back.

A task adds regions and texts to a `ScoringPlan` (duplicates collapse to one index) and names
the (region, text) pairs whose scores it needs. Embedding scorers encode every unique region
and text once and can then score any pair; pair scorers score exactly the named pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from densecap_eval.regions import Region


@dataclass
class ScoringPlan:
    """Unique regions, unique texts and the needed (region, text) pairs of one or more tasks."""

    regions: list[Region] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    _region_index: dict[Region, int] = field(default_factory=dict, repr=False)
    _text_index: dict[str, int] = field(default_factory=dict, repr=False)
    _pairs: set[tuple[int, int]] = field(default_factory=set, repr=False)

    def add_region(self, region: Region) -> int:
        idx = self._region_index.get(region)
        if idx is None:
            idx = self._region_index[region] = len(self.regions)
            self.regions.append(region)
        return idx

    def add_text(self, text: str) -> int:
        idx = self._text_index.get(text)
        if idx is None:
            idx = self._text_index[text] = len(self.texts)
            self.texts.append(text)
        return idx

    def need(self, region_idx: int, text_idx: int) -> None:
        """Declare that the score of (region, text) will be asked for."""
        self._pairs.add((region_idx, text_idx))

    def need_all(self, region_idxs: list[int], text_idxs: list[int]) -> None:
        """Declare every (region, text) combination of the two lists."""
        self._pairs.update((r, t) for r in region_idxs for t in text_idxs)

    @property
    def pairs(self) -> np.ndarray:
        """(P, 2) int64 array of needed pairs, sorted."""
        if not self._pairs:
            return np.zeros((0, 2), dtype=np.int64)
        return np.array(sorted(self._pairs), dtype=np.int64)


class ScoreTable:
    """Scores of (region, text) pairs, plus per-text token counts and cut flags.

    Built by the engine. For embedding scorers it holds normalised embeddings and computes
    logits on demand; for pair scorers it holds the scores of the planned pairs only.
    """

    def __init__(
        self,
        *,
        text_tokens: np.ndarray,
        text_cut: np.ndarray,
        image_embeddings: np.ndarray | None = None,
        text_embeddings: np.ndarray | None = None,
        logit_fn: object | None = None,
        pair_scores: dict[tuple[int, int], float] | None = None,
    ) -> None:
        self.text_tokens = text_tokens
        self.text_cut = text_cut
        self.image_embeddings = image_embeddings
        self.text_embeddings = text_embeddings
        self._logit_fn = logit_fn
        self._pair_scores = pair_scores

    def scores(self, region_idx: np.ndarray, text_idx: np.ndarray) -> np.ndarray:
        """Element-wise scores of pairs (region_idx[i], text_idx[i]) as float64 (any shape)."""
        r = np.asarray(region_idx, dtype=np.int64)
        t = np.asarray(text_idx, dtype=np.int64)
        r, t = np.broadcast_arrays(r, t)
        if self._pair_scores is not None:
            flat = [self._pair_scores[(int(a), int(b))] for a, b in zip(r.ravel(), t.ravel())]
            return np.asarray(flat, dtype=np.float64).reshape(r.shape)
        assert self.image_embeddings is not None and self.text_embeddings is not None
        assert self._logit_fn is not None
        return np.asarray(self._logit_fn(r, t), dtype=np.float64)

    def matrix(self, region_idxs: list[int], text_idxs: list[int]) -> np.ndarray:
        """(len(region_idxs), len(text_idxs)) block of scores."""
        r = np.asarray(region_idxs, dtype=np.int64)[:, None]
        t = np.asarray(text_idxs, dtype=np.int64)[None, :]
        return self.scores(r, t)
