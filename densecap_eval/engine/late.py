"""Late-interaction scorers in the engine: encode like an embedding scorer, score through a head.

A late-interaction scorer (FLAIR) encodes each region into a (tokens x dim) matrix and each text
into one vector, and only a small head (FLAIR's text-queried attention pooling) runs per
(region, text) pair. The engine encodes regions and texts exactly as for an embedding scorer,
through `TokenView`, which presents a region's token matrix flattened to one row: so the
on-disk cache, the torchrun sharding and the batching are the embedding path's, unchanged (one
cache entry per region, under the scorer's fingerprint and a ``|tokens`` preprocessing id).

`late_table` then returns an ordinary embedding `ScoreTable` whose score functions run the
head: ``matrix`` blocks (retrieval galleries, DCI's groups) score every region of a block with
every text of it; element-wise ``scores`` (negatives, choices) score exactly the pairs asked
for. Tasks need no change. Both run in batches with the engine's out-of-memory back-off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.core.batching import BatchBackoff
from densecap_eval.engine.plan import ScoreTable

if TYPE_CHECKING:
    import torch

    from densecap_eval.scorers.base import LateInteractionScorer

# (region, text) pairs per head forward, per item of --batch-size, for a block of one region's
# tokens against many texts: the head's work for one pair (one query's attention over one
# region's tokens) is a small fraction of a region's pass through the image tower.
HEAD_PAIRS_PER_ITEM = 64


class TokenView:
    """A late-interaction scorer as the engine's encoders see an embedding scorer.

    ``encode_pixels`` returns each region's token matrix flattened to one row; everything else
    (texts, fingerprint, device, precision, ...) is the scorer's own.
    """

    def __init__(self, scorer: LateInteractionScorer) -> None:
        self.scorer = scorer
        # An attribute, not a method: DataLoader workers pickle the transform, not the model.
        self.preprocess = scorer.preprocess

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)

    @property
    def kind(self) -> str:
        return "embedding"

    @property
    def preprocess_id(self) -> str:
        # Token rows never share a cache store with pooled embeddings of the same transform.
        return f"{self.scorer.preprocess_id}|tokens"

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.scorer.encode_pixel_tokens(pixels)
        return tokens.reshape(tokens.shape[0], -1)


def late_table(
    scorer: LateInteractionScorer, *, texts: Any, regions: Any, batch_size: int
) -> ScoreTable:
    """A `ScoreTable` over the engine's encoded rows, scored by ``scorer``'s head.

    ``texts`` and ``regions`` are the engine's encoded rows (``embeddings()``, the texts'
    ``n_tokens`` and ``cut``, and each row's ``slot`` where the engine keys identical inputs).
    ``batch_size`` is the engine's items per forward: an element-wise batch holds that many
    pairs (each carries a region's whole token matrix), a block batch ``HEAD_PAIRS_PER_ITEM``
    times as many (a block shares each region's tokens among its texts).
    """
    image_rows, text_rows = regions.embeddings(), texts.embeddings()
    head = _Head(scorer, image_rows, text_rows, batch_size)
    slots = {
        name: getattr(rows, "slot", None)
        for name, rows in (("image_slot", regions), ("text_slot", texts))
    }
    return ScoreTable(
        text_tokens=texts.n_tokens,
        text_cut=texts.cut,
        image_embeddings=image_rows,
        text_embeddings=text_rows,
        logit_fn=head.block,
        pair_fn=head.elementwise,
        **{name: slot for name, slot in slots.items() if slot is not None},
    )


class _Head:
    """The scorer's head over the encoded rows: by blocks (every region with every text of a
    block) or element-wise (listed pairs), each with its own OOM back-off."""

    def __init__(
        self,
        scorer: LateInteractionScorer,
        image_rows: np.ndarray,
        text_rows: np.ndarray,
        batch_size: int,
    ) -> None:
        self.scorer = scorer
        self.image_rows = image_rows
        self.text_rows = text_rows
        self.dim = int(text_rows.shape[1]) if text_rows.ndim == 2 and text_rows.shape[1] else 1
        self.blocks = BatchBackoff(batch_size * HEAD_PAIRS_PER_ITEM, what="(region, text) pairs")
        self.pairs = BatchBackoff(batch_size, what="(region, text) pairs")

    def tokens_of(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        import torch

        flat = torch.as_tensor(rows)
        return flat.reshape(flat.shape[0], -1, self.dim)

    def block(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """(R, tokens*dim) x (C, dim) -> (R, C): every region of the block with every text."""
        import torch

        r, c = img.shape[0], txt.shape[0]
        out = torch.empty((r, c), dtype=torch.float32)
        if not r or not c:
            return out
        tokens = self.tokens_of(img)
        # Whole rows per forward; the back-off's size counts pairs, a row is c of them.
        rows = BatchBackoff(max(1, self.blocks.size // c), what="regions x texts")
        for a, b, part in rows.run(r, lambda a, b: self.scorer.score_tokens(tokens[a:b], txt)):
            out[a:b] = part
        self.blocks.size = max(1, min(self.blocks.size, rows.size * c))
        return out

    def elementwise(self, r_idx: np.ndarray, t_idx: np.ndarray) -> np.ndarray:
        """Scores of pairs (image row r_idx[i], text row t_idx[i]), region by region."""
        import torch

        out = np.empty(len(r_idx), dtype=np.float32)
        order = np.argsort(r_idx, kind="stable")

        def run(a: int, b: int) -> torch.Tensor:
            sel = order[a:b]
            tokens = self.tokens_of(np.ascontiguousarray(self.image_rows[r_idx[sel]]))
            txt = torch.from_numpy(np.ascontiguousarray(self.text_rows[t_idx[sel]]))
            return self.scorer.score_token_pairs(tokens, txt)

        for a, b, vals in self.pairs.run(len(order), run):
            out[order[a:b]] = vals.detach().to("cpu", torch.float32).numpy().reshape(-1)
        return out
