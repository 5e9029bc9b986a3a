"""Encode each unique region and text of a plan once, in batches, and serve a `ScoreTable`.

Embedding scorers: texts are encoded sorted by token count (so a scorer that pads to the longest
text in a batch pads little); regions are ordered by photo and each batch decodes each of its
photos once, in DataLoader worker processes, which also crop and preprocess. Nothing is decoded
up front: at most ``batch_size x (prefetch + workers)`` crops are in memory.

Pair scorers: exactly the planned pairs are scored, batched by text length, each photo decoded
once per batch; the scorer runs each batch it is given as one forward.

``batch_size`` means the same for every scorer kind: the items (regions, texts or pairs) that
reach the model in one forward. The engine alone batches and backs off: a CUDA out-of-memory
error halves the batch and retries the same items (`densecap_eval.batching.BatchBackoff`); the
smaller size is kept for the rest of the run. For a CUDA model, region batches come in pinned
host memory so the copy to the device can overlap decoding. With a cache, every encoded batch is
written as it completes, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from densecap_eval import regions as regions_mod
from densecap_eval.batching import BatchBackoff, default_batch_size, is_oom
from densecap_eval.engine.cache import EmbeddingCache, ModelKey, region_key, text_key
from densecap_eval.engine.plan import ScoreTable, ScoringPlan
from densecap_eval.errors import DensecapError
from densecap_eval.regions import Region

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.scorers.base import EmbeddingScorer, PairScorer, TextPolicy

__all__ = ["BatchBackoff", "default_batch_size", "default_num_workers", "is_oom", "score_plan"]

log = logging.getLogger(__name__)

# Below this many images to decode, worker processes cost more than they save.
_MIN_ITEMS_FOR_WORKERS = 64


def default_num_workers(n_items: int) -> int:
    if n_items < _MIN_ITEMS_FOR_WORKERS:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# -- progress -------------------------------------------------------------------------------


class _Progress:
    """rich progress bars on stderr; silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, description: str, total: int) -> Callable[[int], None]:
        if self._bar is None or total == 0:
            return lambda n: None
        task_id = self._bar.add_task(description, total=total)
        return lambda n: self._bar.advance(task_id, n)


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


# -- decoding in workers --------------------------------------------------------------------


def _decode_batch(regions: Sequence[Region], *, blind: bool) -> list[Image.Image]:
    """Crops of ``regions`` in order, decoding each photo once for this batch."""
    photos: dict[str, Image.Image] = {}
    out = []
    for region in regions:
        photo = photos.get(region.photo)
        if photo is None:
            try:
                photo = photos[region.photo] = regions_mod.open_photo(region.photo)
            except (OSError, ValueError) as exc:
                raise DensecapError(f"{region.photo}: cannot decode photo: {exc}") from exc
        image = regions_mod.crop(photo, region.box)
        out.append(regions_mod.grey_like(image) if blind else image)
    return out


class _RegionBatches:
    """Map-style dataset: item i is batch i of regions, decoded (and preprocessed) together."""

    def __init__(
        self,
        batches: list[list[Region]],
        *,
        blind: bool,
        preprocess: Callable[[Image.Image], torch.Tensor] | None,
    ) -> None:
        self.batches = batches
        self.blind = blind
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        images = _decode_batch(self.batches[i], blind=self.blind)
        if self.preprocess is None:
            return images
        import torch

        return torch.stack([self.preprocess(im) for im in images])


def _keep(batch: Any) -> Any:
    return batch


def _on_cuda(device: object) -> bool:
    return str(device or "cpu").split(":")[0] == "cuda"


def _iter_batches(
    dataset: _RegionBatches, num_workers: int, *, pin_memory: bool = False
) -> Iterator[Any]:
    """The dataset's batches in order, decoded in ``num_workers`` processes (0: inline).

    ``pin_memory=True`` (for a CUDA model) returns pixel tensors in page-locked memory, so the
    scorer's ``.to(device, non_blocking=True)`` overlaps the copy with decoding the next batch.
    Lists of images (pair scorers) pass through unchanged.
    """
    if num_workers == 0 or len(dataset) <= 1:
        for i in range(len(dataset)):
            batch = dataset[i]
            yield _pin(batch) if pin_memory else batch
        return
    from torch.utils.data import DataLoader

    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=None,  # each item is already a batch
        shuffle=False,
        num_workers=min(num_workers, len(dataset)),
        collate_fn=_keep,
        prefetch_factor=2,
        pin_memory=pin_memory,
    )
    yield from loader


def _pin(batch: Any) -> Any:
    """``batch`` in pinned memory when it is a tensor (what DataLoader's pin_memory does)."""
    import torch

    return batch.pin_memory() if isinstance(batch, torch.Tensor) else batch


def _order_by_photo(regions: Sequence[Region]) -> list[int]:
    """Indices of ``regions`` with each photo's regions together (photos in first-seen order)."""
    first: dict[str, int] = {}
    for r in regions:
        first.setdefault(r.photo, len(first))
    return sorted(range(len(regions)), key=lambda i: (first[regions[i].photo], i))


# -- the engine -----------------------------------------------------------------------------


def score_plan(
    scorer: EmbeddingScorer | PairScorer,
    plan: ScoringPlan,
    *,
    text_policy: TextPolicy = "truncate",
    batch_size: int | None = None,
    cache: EmbeddingCache | None = None,
    blind: bool = False,
    num_workers: int | None = None,
    progress: bool | None = None,
) -> ScoreTable:
    """Score a plan with a scorer: each unique region and text encoded once (or read from cache).

    ``batch_size`` is the number of items that reach the model in one forward: regions or texts
    for an embedding scorer, (region, text) pairs for a pair scorer (default: by device and scorer
    kind, `densecap_eval.batching.default_batch_size`). ``blind=True`` replaces every region by
    a uniform grey image of the same size (the blind control). ``cache=None`` disables the
    cache. ``num_workers=None`` picks ``min(4, cpus - 1)`` decoding processes, none for small
    plans. ``progress=None`` shows
    progress bars only when stderr is a terminal. Pair scorers' scores are not cached (the
    cache holds embeddings).
    """
    kind: Literal["embedding", "pair"] = getattr(scorer, "kind", "embedding")
    if batch_size is None:
        batch_size = default_batch_size(getattr(scorer, "device", "cpu"), kind)
    if batch_size < 1:
        raise DensecapError(f"batch size must be at least 1, got {batch_size}")
    with _Progress(_progress_enabled(progress)) as bars:
        if kind == "pair":
            return _score_pairs(
                scorer,  # type: ignore[arg-type]
                plan,
                text_policy=text_policy,
                batch_size=batch_size,
                blind=blind,
                num_workers=num_workers,
                bars=bars,
            )
        txt_emb, n_tokens, cut = _encode_texts(
            scorer,  # type: ignore[arg-type]
            plan.texts,
            policy=text_policy,
            batch_size=batch_size,
            cache=cache,
            bars=bars,
        )
        img_emb = _encode_regions(
            scorer,  # type: ignore[arg-type]
            plan.regions,
            batch_size=batch_size,
            cache=cache,
            blind=blind,
            num_workers=num_workers,
            bars=bars,
        )
    return ScoreTable(
        text_tokens=n_tokens,
        text_cut=cut,
        image_embeddings=img_emb,
        text_embeddings=txt_emb,
        logit_fn=scorer.logits,  # type: ignore[union-attr]
    )


def _fill(out: np.ndarray | None, rows: np.ndarray, idx: Sequence[int], n: int) -> np.ndarray:
    if out is None:
        out = np.zeros((n, rows.shape[1]), dtype=np.float32)
    elif rows.shape[1] != out.shape[1]:
        raise DensecapError(
            f"embedding size changed from {out.shape[1]} to {rows.shape[1]} within one model "
            "(a stale cache? run `densecap-eval cache clear`)"
        )
    out[np.asarray(idx, dtype=np.int64)] = rows
    return out


def _encode_texts(
    scorer: EmbeddingScorer,
    texts: Sequence[str],
    *,
    policy: TextPolicy,
    batch_size: int,
    cache: EmbeddingCache | None,
    bars: _Progress,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(texts)
    emb: np.ndarray | None = None
    n_tokens = np.zeros(n, dtype=np.int64)
    cut = np.zeros(n, dtype=bool)
    todo = list(range(n))
    store = (
        cache.text_store(ModelKey.of(scorer), policy, max_tokens=scorer.max_text_tokens)
        if cache is not None
        else None
    )
    keys: list[str] = []
    if store is not None and n:
        keys = [text_key(t) for t in texts]
        hit = store.lookup(keys)
        if hit.keys:
            pos = {k: i for i, k in enumerate(hit.keys)}
            idx = [i for i in range(n) if keys[i] in pos]
            rows = [pos[keys[i]] for i in idx]
            emb = _fill(emb, hit.embeddings[rows], idx, n)
            assert hit.n_tokens is not None and hit.cut is not None
            n_tokens[idx] = hit.n_tokens[rows]
            cut[idx] = hit.cut[rows]
            done = set(idx)
            todo = [i for i in todo if i not in done]
    if todo:
        counts = scorer.count_tokens([texts[i] for i in todo])
        # Shortest first, stable: similar lengths share a batch.
        todo = [todo[j] for j in sorted(range(len(todo)), key=lambda j: counts[j])]
        advance = bars.task("encoding texts", len(todo))
        backoff = BatchBackoff(batch_size, what="texts")

        def encode(a: int, b: int) -> Any:
            return scorer.encode_texts([texts[i] for i in todo[a:b]], policy=policy)

        try:
            for a, b, enc in backoff.run(len(todo), encode):
                idx = todo[a:b]
                rows = enc.embeddings.detach().to("cpu").float().numpy()
                emb = _fill(emb, rows, idx, n)
                n_tokens[idx] = enc.n_tokens
                cut[idx] = enc.cut
                if store is not None:
                    store.put([keys[i] for i in idx], rows, n_tokens=enc.n_tokens, cut=enc.cut)
                advance(b - a)
        finally:
            if store is not None:
                store.flush()
    elif store is not None:
        store.flush()  # an index rebuilt from unlisted shards is worth keeping
    if emb is None:
        emb = np.zeros((0, 0), dtype=np.float32)
    return emb, n_tokens, cut


def _encode_regions(
    scorer: EmbeddingScorer,
    regions: Sequence[Region],
    *,
    batch_size: int,
    cache: EmbeddingCache | None,
    blind: bool,
    num_workers: int | None,
    bars: _Progress,
) -> np.ndarray:
    n = len(regions)
    emb: np.ndarray | None = None
    todo = list(range(n))
    store = (
        cache.image_store(ModelKey.of(scorer), scorer.preprocess_id, blind=blind)
        if cache is not None
        else None
    )
    keys: list[str] = []
    if store is not None and n:
        keys = [region_key(r) for r in regions]
        hit = store.lookup(keys)
        if hit.keys:
            pos = {k: i for i, k in enumerate(hit.keys)}
            idx = [i for i in range(n) if keys[i] in pos]
            emb = _fill(emb, hit.embeddings[[pos[keys[i]] for i in idx]], idx, n)
            done = set(idx)
            todo = [i for i in todo if i not in done]
    if todo:
        todo = [todo[j] for j in _order_by_photo([regions[i] for i in todo])]
        chunks = [todo[a : a + batch_size] for a in range(0, len(todo), batch_size)]
        dataset = _RegionBatches(
            [[regions[i] for i in c] for c in chunks], blind=blind, preprocess=scorer.preprocess
        )
        workers = default_num_workers(len(todo)) if num_workers is None else num_workers
        pin = _on_cuda(getattr(scorer, "device", "cpu"))
        advance = bars.task("encoding regions", len(todo))
        backoff = BatchBackoff(batch_size, what="regions")
        try:
            batches = _iter_batches(dataset, workers, pin_memory=pin)
            for chunk, pixels in zip(chunks, batches, strict=True):
                # The loader's batch stays fixed; an OOM only shrinks what reaches the model.
                def encode(a: int, b: int, px: torch.Tensor = pixels) -> torch.Tensor:
                    return scorer.encode_pixels(px[a:b])

                for a, b, out in backoff.run(len(chunk), encode):
                    idx = chunk[a:b]
                    rows = out.detach().to("cpu").float().numpy()
                    emb = _fill(emb, rows, idx, n)
                    if store is not None:
                        store.put([keys[i] for i in idx], rows)
                    advance(b - a)
        finally:
            if store is not None:
                store.flush()
    elif store is not None:
        store.flush()
    if emb is None:
        emb = np.zeros((0, 0), dtype=np.float32)
    return emb


def _score_pairs(
    scorer: PairScorer,
    plan: ScoringPlan,
    *,
    text_policy: TextPolicy,
    batch_size: int,
    blind: bool,
    num_workers: int | None,
    bars: _Progress,
) -> ScoreTable:
    texts = plan.texts
    n_tokens = np.asarray(scorer.count_tokens(texts), dtype=np.int64).reshape(-1)
    cut = np.asarray(scorer.text_cut(texts, policy=text_policy), dtype=bool).reshape(-1)
    pairs = plan.pairs
    values = np.zeros(len(pairs), dtype=np.float32)
    if len(pairs):
        photo_rank: dict[str, int] = {}
        for r in plan.regions:
            photo_rank.setdefault(r.photo, len(photo_rank))
        # By text length first (padding), then by photo so a batch shares decodes.
        order = sorted(
            range(len(pairs)),
            key=lambda p: (
                int(n_tokens[pairs[p, 1]]),
                photo_rank[plan.regions[pairs[p, 0]].photo],
                int(pairs[p, 0]),
                int(pairs[p, 1]),
            ),
        )
        chunks = [order[a : a + batch_size] for a in range(0, len(order), batch_size)]
        dataset = _RegionBatches(
            [[plan.regions[pairs[p, 0]] for p in c] for c in chunks], blind=blind, preprocess=None
        )
        workers = default_num_workers(len(order)) if num_workers is None else num_workers
        advance = bars.task("scoring pairs", len(order))
        backoff = BatchBackoff(batch_size, what="pairs")
        for chunk, images in zip(chunks, _iter_batches(dataset, workers), strict=True):
            chunk_texts = [texts[pairs[p, 1]] for p in chunk]

            def run(a: int, b: int, imgs: list[Any] = images, tx: list[str] = chunk_texts) -> Any:
                return scorer.score_pairs(imgs[a:b], tx[a:b], policy=text_policy)

            for a, b, out in backoff.run(len(chunk), run):
                values[chunk[a:b]] = out.detach().to("cpu").float().numpy().reshape(-1)
                advance(b - a)
    return ScoreTable(text_tokens=n_tokens, text_cut=cut, pairs=pairs, pair_values=values)
