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

from densecap_eval.datasets.regions import Region

if TYPE_CHECKING:
    import torch

LogitFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
# Element-wise scores of (image row r[i], text row t[i]): a late-interaction head
# (`densecap_eval.engine.late`), which scores only the pairs asked for.
PairFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

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

    Exact ties: ``image_slot[r]`` / ``text_slot[t]`` name the first region / text with the same
    embedding, bit for bit (by default from the embeddings themselves; the engine encodes
    identical pixels and identical token ids once, so those share a slot). Every
    block is computed over distinct slots and gathered, and ``scores`` never splits one
    region's cells across two blocks, so within one call two inputs the model cannot tell
    apart read the very same float: an exact tie, whatever the BLAS kernel does with the block
    shape. Comparisons that decide ties belong in one call (`scores` with both columns).
    """

    def __init__(
        self,
        *,
        text_tokens: np.ndarray,
        text_cut: np.ndarray,
        image_embeddings: np.ndarray | None = None,
        text_embeddings: np.ndarray | None = None,
        logit_fn: LogitFn | None = None,
        pair_fn: PairFn | None = None,
        pair_scores: Mapping[tuple[int, int], float] | None = None,
        pairs: np.ndarray | None = None,
        pair_values: np.ndarray | None = None,
        image_slot: np.ndarray | None = None,
        text_slot: np.ndarray | None = None,
    ) -> None:
        self.text_tokens = np.asarray(text_tokens, dtype=np.int64)
        self.text_cut = np.asarray(text_cut, dtype=bool)
        self.image_embeddings = image_embeddings
        self.text_embeddings = text_embeddings
        self.image_slot = _slots(image_slot, image_embeddings)
        self.text_slot = _slots(text_slot, text_embeddings)
        self._logit_fn = logit_fn
        self._pair_fn = pair_fn
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
        if self._pair_fn is not None:  # a late-interaction head: only the pairs asked for
            return self._pairwise(r.ravel(), t.ravel()).reshape(r.shape)
        return self._block_gather(r.ravel(), t.ravel()).reshape(r.shape)

    def _pairwise(self, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``pair_fn`` on each distinct (region, text) once; inputs the model cannot tell
        apart (one slot) read the same value, an exact tie."""
        assert self._pair_fn is not None
        slot_r = getattr(self, "image_slot", None)
        slot_t = getattr(self, "text_slot", None)
        r = r if slot_r is None else slot_r[r]
        t = t if slot_t is None else slot_t[t]
        n_texts = np.int64(max(len(self.text_tokens), 1))
        codes, inverse = np.unique(r * n_texts + t, return_inverse=True)
        values = np.asarray(self._pair_fn(codes // n_texts, codes % n_texts), dtype=np.float64)
        return values[inverse.reshape(-1)]

    def matrix(self, region_idxs: list[int], text_idxs: list[int]) -> np.ndarray:
        """(len(region_idxs), len(text_idxs)) block of scores."""
        rs = np.asarray(region_idxs, dtype=np.int64).ravel()
        ts = np.asarray(text_idxs, dtype=np.int64).ravel()
        if self._pair_codes is not None:
            return self.scores(rs[:, None], ts[None, :])
        if rs.size == 0 or ts.size == 0:
            return np.zeros((rs.size, ts.size), dtype=np.float64)
        return self._logits(rs, ts).astype(np.float64)

    def block(self, region_idxs: np.ndarray, text_idxs: np.ndarray) -> np.ndarray:
        """float32 ``matrix``: (regions, texts) logits as computed (no float64 copy)."""
        rs = np.asarray(region_idxs, dtype=np.int64).ravel()
        ts = np.asarray(text_idxs, dtype=np.int64).ravel()
        if self._pair_codes is not None:
            return self.matrix(rs.tolist(), ts.tolist()).astype(np.float32)
        if rs.size == 0 or ts.size == 0:
            return np.zeros((rs.size, ts.size), dtype=np.float32)
        return self._logits(rs, ts)

    def strips(
        self, region_idxs: np.ndarray, text_idxs: np.ndarray
    ) -> Callable[[int, int], np.ndarray]:
        """``strip(a, b)`` = ``block(region_idxs[a:b], text_idxs)`` bit for bit, the text side
        gathered once (a 100k-text gallery is not copied for every strip)."""
        import torch

        rs = np.asarray(region_idxs, dtype=np.int64).ravel()
        ts = np.asarray(text_idxs, dtype=np.int64).ravel()
        if self._pair_codes is not None or ts.size == 0:
            return lambda a, b: self.block(rs[a:b], ts)
        assert self.image_embeddings is not None and self.text_embeddings is not None
        assert self._logit_fn is not None
        logit_fn = self._logit_fn
        ut, t_inv = _distinct(self.text_slot[ts])
        txt = torch.from_numpy(np.ascontiguousarray(self.text_embeddings[ut]))
        image_embeddings, image_slot = self.image_embeddings, self.image_slot

        def strip(a: int, b: int) -> np.ndarray:
            if b <= a:
                return np.zeros((0, ts.size), dtype=np.float32)
            ur, r_inv = _distinct(image_slot[rs[a:b]])
            img = torch.from_numpy(np.ascontiguousarray(image_embeddings[ur]))
            out = logit_fn(img, txt).detach().to("cpu", torch.float32).numpy()
            if r_inv is not None:
                out = out[r_inv]
            if t_inv is not None:
                out = out[:, t_inv]
            return out

        return strip

    def _logits(self, rs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``logits(img[rs], txt[ts])``; rows / columns of one slot are computed once."""
        ur, r_inv = _distinct(self.image_slot[rs])
        ut, t_inv = _distinct(self.text_slot[ts])
        out = self._slot_logits(ur, ut)
        if r_inv is not None:
            out = out[r_inv]
        if t_inv is not None:
            out = out[:, t_inv]
        return out

    def _slot_logits(self, rs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        import torch

        assert self.image_embeddings is not None and self.text_embeddings is not None
        assert self._logit_fn is not None
        img = torch.from_numpy(np.ascontiguousarray(self.image_embeddings[rs]))
        txt = torch.from_numpy(np.ascontiguousarray(self.text_embeddings[ts]))
        out = self._logit_fn(img, txt)
        return out.detach().to("cpu", torch.float32).numpy()

    def _block_gather(self, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = np.empty(r.shape, dtype=np.float64)
        r = self.image_slot[r]
        t = self.text_slot[t]
        order = np.argsort(r, kind="stable")
        # Runs of one row slot: a chunk takes whole runs, so a row's cells share one block.
        r_sorted = r[order]
        starts = np.flatnonzero(np.r_[True, r_sorted[1:] != r_sorted[:-1]])
        ends = np.r_[starts[1:], len(order)]
        first = 0
        while first < len(starts):
            # Grow the chunk (in runs) while its block (rows x unique texts) stays bounded.
            last = first + 1
            while last < len(starts):
                nxt = min(len(starts), first + 2 * (last - first))
                sel = order[starts[first] : ends[nxt - 1]]
                if (nxt - first) * len(np.unique(t[sel])) > _MAX_BLOCK:
                    break
                last = nxt
            sel = order[starts[first] : ends[last - 1]]
            ur, r_inv = np.unique(r[sel], return_inverse=True)
            ut, t_inv = np.unique(t[sel], return_inverse=True)
            block = self._slot_logits(ur, ut)
            out[sel] = block[r_inv, t_inv]
            first = last
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


def _slots(slot: np.ndarray | None, embeddings: np.ndarray | None) -> np.ndarray:
    """Each row's slot: the given ones, else the first row with bit-identical content."""
    if slot is not None:
        return np.asarray(slot, dtype=np.int64).reshape(-1)
    if embeddings is None or embeddings.ndim != 2 or not len(embeddings):
        return np.arange(0 if embeddings is None else len(embeddings), dtype=np.int64)
    rows = np.ascontiguousarray(embeddings)
    as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(as_bytes, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64)


def _distinct(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``idx`` without repeats, in first-seen order, and how to expand it back (None: no
    repeats, so a block without duplicate inputs is computed exactly as requested)."""
    uniq, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
    if len(uniq) == len(idx):
        return idx, None
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inverse.reshape(-1)]
