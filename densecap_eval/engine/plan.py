"""What a task asks the engine for, and what the engine gives back.

A task adds regions and texts to a `ScoringPlan` (duplicates collapse to one index) and names
the (region, text) pairs whose scores it needs. Embedding scorers encode every unique region
and text once and can then score any pair; pair scorers score exactly the named pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from densecap_eval.regions import Region

if TYPE_CHECKING:
    import torch

LogitFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]

# Largest block (rows x columns) of logits computed at once when serving element-wise scores.
_MAX_BLOCK = 1 << 22


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

    Built by the engine. For embedding scorers it holds float32 L2-normalised embeddings
    (``image_embeddings[r]``, ``text_embeddings[t]`` in plan order) and computes scores on demand
    with the scorer's own ``logits`` in float32. For pair scorers it holds the scores of the
    planned pairs only; asking for any other pair raises ``KeyError``.

    How float32 values are computed (this decides argmax ties and close calls): ``matrix(rs, ts)``
    is exactly ``logits(img[rs], txt[ts])``, the same block computation a reference that scores
    a group of images against a group of texts performs. ``scores(r, t)`` computes the block
    ``logits(img[unique r], txt[unique t])`` (split into row chunks when large) and gathers the
    requested cells, so a pair's value equals the matching cell of a block product, never a
    separately rounded dot product.
    """

    def __init__(
        self,
        *,
        text_tokens: np.ndarray,
        text_cut: np.ndarray,
        image_embeddings: np.ndarray | None = None,
        text_embeddings: np.ndarray | None = None,
        logit_fn: LogitFn | None = None,
        pair_scores: Mapping[tuple[int, int], float] | None = None,
        pairs: np.ndarray | None = None,
        pair_values: np.ndarray | None = None,
    ) -> None:
        self.text_tokens = np.asarray(text_tokens, dtype=np.int64)
        self.text_cut = np.asarray(text_cut, dtype=bool)
        self.image_embeddings = image_embeddings
        self.text_embeddings = text_embeddings
        self._logit_fn = logit_fn
        if pair_scores is not None:
            items = sorted(pair_scores.items())
            pairs = np.array([k for k, _ in items], dtype=np.int64).reshape(-1, 2)
            pair_values = np.array([v for _, v in items], dtype=np.float32)
        self._pair_codes: np.ndarray | None = None
        self._pair_values: np.ndarray | None = None
        if pairs is not None:
            if pair_values is None or len(pair_values) != len(pairs):
                raise ValueError("pairs and pair_values must have the same length")
            codes = self._encode(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
            order = np.argsort(codes, kind="stable")
            self._pair_codes = codes[order]
            self._pair_values = np.asarray(pair_values, dtype=np.float32)[order]
        elif image_embeddings is None or text_embeddings is None or logit_fn is None:
            raise ValueError("a ScoreTable needs embeddings and a logit_fn, or pair scores")

    @property
    def kind(self) -> str:
        return "pair" if self._pair_codes is not None else "embedding"

    @property
    def pairs(self) -> np.ndarray:
        """(P, 2) int64 array of the pairs a pair-scorer table holds (sorted)."""
        if self._pair_codes is None:
            raise TypeError("an embedding ScoreTable can score any pair; it lists none")
        n = np.int64(len(self.text_tokens) or 1)
        return np.stack([self._pair_codes // n, self._pair_codes % n], axis=1)

    def _encode(self, pairs: np.ndarray) -> np.ndarray:
        return pairs[:, 0] * np.int64(len(self.text_tokens) or 1) + pairs[:, 1]

    def scores(self, region_idx: np.ndarray, text_idx: np.ndarray) -> np.ndarray:
        """Element-wise scores of pairs (region_idx[i], text_idx[i]) as float64 (any shape)."""
        r = np.asarray(region_idx, dtype=np.int64)
        t = np.asarray(text_idx, dtype=np.int64)
        r, t = np.broadcast_arrays(r, t)
        if r.size == 0:
            return np.zeros(r.shape, dtype=np.float64)
        if self._pair_codes is not None:
            return self._lookup_pairs(r, t)
        return self._block_gather(r.ravel(), t.ravel()).reshape(r.shape)

    def matrix(self, region_idxs: list[int], text_idxs: list[int]) -> np.ndarray:
        """(len(region_idxs), len(text_idxs)) block of scores."""
        rs = np.asarray(region_idxs, dtype=np.int64).ravel()
        ts = np.asarray(text_idxs, dtype=np.int64).ravel()
        if self._pair_codes is not None:
            return self.scores(rs[:, None], ts[None, :])
        if rs.size == 0 or ts.size == 0:
            return np.zeros((rs.size, ts.size), dtype=np.float64)
        return self._logits(rs, ts).astype(np.float64)

    def _logits(self, rs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        import torch

        assert self.image_embeddings is not None and self.text_embeddings is not None
        assert self._logit_fn is not None
        img = torch.from_numpy(np.ascontiguousarray(self.image_embeddings[rs]))
        txt = torch.from_numpy(np.ascontiguousarray(self.text_embeddings[ts]))
        out = self._logit_fn(img, txt)
        return out.detach().to("cpu", torch.float32).numpy()

    def _block_gather(self, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = np.empty(r.shape, dtype=np.float64)
        order = np.argsort(r, kind="stable")
        start = 0
        while start < len(order):
            # Grow the row chunk while its block (unique rows x unique texts) stays bounded.
            stop = start + 1
            while stop < len(order):
                nxt = min(len(order), start + 2 * (stop - start))
                sel = order[start:nxt]
                if len(np.unique(r[sel])) * len(np.unique(t[sel])) > _MAX_BLOCK:
                    break
                stop = nxt
            sel = order[start:stop]
            ur, r_inv = np.unique(r[sel], return_inverse=True)
            ut, t_inv = np.unique(t[sel], return_inverse=True)
            block = self._logits(ur, ut)
            out[sel] = block[r_inv, t_inv]
            start = stop
        return out

    def _lookup_pairs(self, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        assert self._pair_codes is not None and self._pair_values is not None
        n_texts = len(self.text_tokens)
        flat_r, flat_t = r.ravel(), t.ravel()
        bad = (flat_t < 0) | (flat_t >= max(n_texts, 1)) | (flat_r < 0)
        codes = flat_r * np.int64(n_texts or 1) + flat_t
        pos = np.searchsorted(self._pair_codes, codes)
        pos_c = np.minimum(pos, len(self._pair_codes) - 1)
        found = ~bad & (len(self._pair_codes) > 0)
        if len(self._pair_codes):
            found &= self._pair_codes[pos_c] == codes
        if not found.all():
            i = int(np.argmin(found))
            raise KeyError(
                f"pair (region {int(flat_r[i])}, text {int(flat_t[i])}) was not in the scoring plan"
            )
        return self._pair_values[pos_c].astype(np.float64).reshape(r.shape)
