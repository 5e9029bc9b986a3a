"""Encode each unique region and text of a plan once, in batches, and serve a `ScoreTable`.

Embedding scorers: texts are encoded sorted by token count (so a scorer that pads to the longest
text in a batch pads little); regions are ordered by photo and each batch decodes each of its
photos once, in DataLoader worker processes, which also crop and preprocess. Nothing is decoded
up front: at most ``batch_size x (prefetch + workers)`` crops are in memory.

Pair scorers: exactly the planned pairs are scored, batched by text length, each photo decoded
once per batch; the scorer runs each batch it is given as one forward.

``batch_size`` means the same for every scorer kind: the items (regions, texts or pairs) that
reach the model in one forward. The engine alone batches and backs off: a CUDA out-of-memory
error halves the batch and retries the same items (`densecap_eval.core.batching.BatchBackoff`); the
smaller size is kept for the rest of the run. For a CUDA model, region batches come in pinned
host memory so the copy to the device can overlap decoding. With a cache, every encoded batch is
written as it completes, so an interrupted run resumes where it stopped.

Under torchrun (``group``, `densecap_eval.engine.distributed`): every rank looks its inputs up in its
cache, the ranks agree on what no rank holds, and cut that into the batches one process would
run; rank r computes batches r, r + world_size, ... and the rows are exchanged, so every rank
ends with the whole table, equal to one process's. Rank 0 alone rewrites the cache's index.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.core.batching import BatchBackoff, default_batch_size, is_oom
from densecap_eval.core.config import DEFAULT_WORKER_TIMEOUT
from densecap_eval.core.crashpoints import crash_point
from densecap_eval.core.errors import DensecapError
from densecap_eval.core.heap import hold_mmap_threshold
from densecap_eval.datasets import regions as regions_mod
from densecap_eval.datasets.regions import Region
from densecap_eval.engine.cache import EmbeddingCache, ModelKey, region_key, text_key
from densecap_eval.engine.late import TokenView, late_table
from densecap_eval.engine.plan import ScoreTable, ScoringPlan

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.engine.distributed import Counter, Group
    from densecap_eval.scorers.base import (
        EmbeddingScorer,
        LateInteractionScorer,
        PairScorer,
        TextPolicy,
    )

__all__ = [
    "BatchBackoff",
    "WorkerError",
    "default_batch_size",
    "default_num_workers",
    "is_oom",
    "score_plan",
]

log = logging.getLogger(__name__)

# Below this many images to decode, worker processes cost more than they save.
_MIN_ITEMS_FOR_WORKERS = 64


def default_num_workers(n_items: int) -> int:
    """Decoding processes for ``n_items``: none for few, else up to 4 of this rank's CPUs.

    Under torchrun the node's CPUs are shared by its ``LOCAL_WORLD_SIZE`` ranks.
    """
    if n_items < _MIN_ITEMS_FOR_WORKERS:
        return 0
    try:
        ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks_here = 1
    return max(0, min(4, (os.cpu_count() or 1) // ranks_here - 1))


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

    def task(self, description: str, total: int, *, group: Group | None = None) -> _Task:
        """A bar of ``total`` items; with ``group``, every rank's items count (store counter)."""
        counter = group.counter(description, total) if group is not None else None
        if self._bar is None or total == 0:
            return _Task(None, None, counter, group)
        return _Task(self._bar, self._bar.add_task(description, total=total), counter, group)


class _Task:
    """Advances one bar: by this process's items, or by the global count of a distributed job."""

    def __init__(self, bar: Any, task_id: Any, counter: Counter | None, group: Group | None):
        self._bar, self._id, self._counter, self._group = bar, task_id, counter, group

    def __call__(self, n: int) -> None:
        if self._counter is not None:
            done = self._counter.add(n)
            if self._bar is not None:
                self._bar.update(self._id, completed=done)
        elif self._bar is not None:
            self._bar.advance(self._id, n)

    def settle(self) -> None:
        """Rank 0's bar: keep counting the other ranks' items until they are all done."""
        if self._bar is not None and self._counter is not None and self._group is not None:
            bar, task_id = self._bar, self._id
            self._counter.wait(
                lambda done: bar.update(task_id, completed=done), timeout=self._group.timeout
            )


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

        batch = torch.stack([self.preprocess(im) for im in images])
        if torch.utils.data.get_worker_info() is not None:
            # Move the batch to shared memory here, where a failure (a small /dev/shm, a full
            # disk, a file-size limit) is an exception the loader hands to the main process.
            # Left to the queue's feeder thread, it is only printed, and the batch never comes.
            batch.share_memory_()
        return batch


def _keep(batch: Any) -> Any:
    return batch


def _on_cuda(device: object) -> bool:
    return str(device or "cpu").split(":")[0] == "cuda"


class WorkerError(DensecapError):
    """A decoding worker process died or could not deliver its batch: the run stops (exit 1)."""

    exit_code = 1


_WORKER_FIX = (
    "run with fewer workers (--workers 1) or none (--workers 0), or give /dev/shm more room "
    "(docker run --shm-size=2g ...)"
)


def _worker_error(exc: BaseException, timeout: float) -> WorkerError | None:
    """What a DataLoader failure means for the user, with the fix; None if not the loader's."""
    text = str(exc)
    if "timed out after" in text:
        return WorkerError(
            f"a decoding worker delivered no batch for {timeout:g} s (a worker that cannot hand "
            f"its batch over, e.g. /dev/shm full, or a very slow photo); {_WORKER_FIX}, or "
            "allow more time (--worker-timeout SECONDS)"
        )
    if "DataLoader worker" not in text:
        return None
    # "Caught X in DataLoader worker process N. Original Traceback ...": the cause is the
    # traceback's last line; "DataLoader worker (pid N) is killed by signal ...": that line.
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cause = lines[-1] if lines else type(exc).__name__
    if "shared memory" in text or "/torch_" in cause:
        return WorkerError(
            f"a decoding worker could not put its batch into shared memory ({cause}); {_WORKER_FIX}"
        )
    return WorkerError(f"a decoding worker process failed ({cause}); {_WORKER_FIX}")


def _iter_batches(
    dataset: _RegionBatches,
    num_workers: int,
    *,
    pin_memory: bool = False,
    timeout: float = DEFAULT_WORKER_TIMEOUT,
) -> Iterator[Any]:
    """The dataset's batches in order, decoded in ``num_workers`` processes (0: inline).

    ``pin_memory=True`` (for a CUDA model) returns pixel tensors in page-locked memory, so the
    scorer's ``.to(device, non_blocking=True)`` overlaps the copy with decoding the next batch.
    Lists of images (pair scorers) pass through unchanged. A worker that dies, fails or
    delivers nothing for ``timeout`` seconds ends the iteration with a `WorkerError` that
    says what to do; never a wait without end.
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
        timeout=timeout,
    )
    try:
        yield from loader
    except (RuntimeError, OSError) as exc:
        error = _worker_error(exc, timeout)
        if error is None:
            raise
        raise error from exc


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
    scorer: EmbeddingScorer | PairScorer | LateInteractionScorer,
    plan: ScoringPlan,
    *,
    text_policy: TextPolicy = "truncate",
    batch_size: int | None = None,
    cache: EmbeddingCache | None = None,
    blind: bool = False,
    num_workers: int | None = None,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
    progress: bool | None = None,
    group: Group | None = None,
) -> ScoreTable:
    """Score a plan with a scorer: each unique region and text encoded once (or read from cache).

    ``batch_size`` is the number of items that reach the model in one forward: regions or texts
    for an embedding scorer, (region, text) pairs for a pair scorer (default: by device and scorer
    kind, `densecap_eval.core.batching.default_batch_size`). ``blind=True`` replaces every region by
    a uniform grey image of the same size (the blind control). ``cache=None`` disables the
    cache. ``num_workers=None`` picks ``min(4, cpus - 1)`` decoding processes, none for small
    plans; ``worker_timeout`` is how long one may take to deliver a batch before the run
    stops with a `WorkerError`. ``progress=None`` shows
    progress bars only when stderr is a terminal. Pair scorers' scores are not cached (the
    cache holds embeddings).

    ``group`` (a `densecap_eval.engine.distributed.Group`; call on every rank): each rank computes
    every ``world_size``-th batch of the uncached work, the same batches one process runs, and
    every rank returns the whole table (identical to one process's); only rank 0 shows bars.
    """
    kind = scorer.kind
    if batch_size is None:
        batch_size = default_batch_size(scorer.device, kind)
    if batch_size < 1:
        raise DensecapError(f"batch size must be at least 1, got {batch_size}")
    hold_mmap_threshold()  # batches and strips never leave heap holes (densecap_eval/core/heap.py)
    show = _progress_enabled(progress) and (group is None or group.is_main)
    with _Progress(show) as bars:
        run = _Pass(text_policy, batch_size, cache, blind, num_workers, worker_timeout, bars, group)
        if kind == "pair":
            return _score_pairs(scorer, plan, run)  # type: ignore[arg-type]
        late = scorer if kind == "late-interaction" else None
        # a late-interaction scorer is encoded as an embedding scorer whose region rows are tokens
        tower = scorer if late is None else TokenView(late)  # type: ignore[arg-type]
        texts = _encode_texts(tower, plan.texts, run)  # type: ignore[arg-type]
        img_emb = _encode_regions(tower, plan.regions, run)  # type: ignore[arg-type]
    if late is not None:  # scored by its head, pair by pair, when the tasks ask
        return late_table(late, texts=texts, regions=img_emb, batch_size=batch_size)  # type: ignore[arg-type]
    assert texts.n_tokens is not None and texts.cut is not None
    return ScoreTable(
        text_tokens=texts.n_tokens,
        text_cut=texts.cut,
        image_embeddings=img_emb.embeddings(),
        text_embeddings=texts.embeddings(),
        logit_fn=scorer.logits,  # type: ignore[union-attr]
    )


@dataclass(frozen=True)
class _Pass:
    """What every phase of one `score_plan` call shares (its settings, bars and group)."""

    text_policy: TextPolicy
    batch_size: int
    cache: EmbeddingCache | None
    blind: bool
    num_workers: int | None
    worker_timeout: float
    bars: _Progress
    group: Group | None


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


class _Rows:
    """The embeddings of n items (texts: with token counts and cut flags), filled as they come."""

    def __init__(self, n: int, *, texts: bool) -> None:
        self.n = n
        self.emb: np.ndarray | None = None
        self.held = np.zeros(n, dtype=bool)
        self.n_tokens = np.zeros(n, dtype=np.int64) if texts else None
        self.cut = np.zeros(n, dtype=bool) if texts else None

    def fill(
        self,
        idx: Sequence[int] | np.ndarray,
        rows: np.ndarray,
        n_tokens: Any = None,
        cut: Any = None,
    ) -> None:
        if not len(idx):
            return
        self.emb = _fill(self.emb, rows, idx, self.n)  # type: ignore[arg-type]
        self.held[np.asarray(idx, dtype=np.int64)] = True
        if self.n_tokens is not None and self.cut is not None:
            self.n_tokens[idx] = n_tokens
            self.cut[idx] = cut

    def payload(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        """Rows ``idx`` as (idx, embeddings, n_tokens, cut), to send to the other ranks."""
        if not len(idx) or self.emb is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), None, None
        return (
            idx,
            self.emb[idx],
            None if self.n_tokens is None else self.n_tokens[idx],
            None if self.cut is None else self.cut[idx],
        )

    def embeddings(self) -> np.ndarray:
        return self.emb if self.emb is not None else np.zeros((0, 0), dtype=np.float32)


def _cache_holders(group: Group | None, rows: _Rows, lookup: Callable[[], None]) -> np.ndarray:
    """(ranks, n) bool: which rank found which item in its cache (``lookup`` fills ``rows``).

    Every rank decides what to encode from all ranks' hits, so they agree on the batches even
    when their caches differ (node-local caches, files another node has not seen yet).
    """
    if group is None:
        lookup()
        return rows.held[None, :].copy()

    def local() -> np.ndarray:
        lookup()
        return np.packbits(rows.held)

    packed = group.run_and_gather(local)
    return np.stack([np.unpackbits(p, count=rows.n).astype(bool) for p in packed])


def _batches_of(order: list[int], batch_size: int, group: Group | None) -> list[list[int]]:
    """This rank's batches of ``order``: the batches one process runs, every world_size-th."""
    batches = [order[a : a + batch_size] for a in range(0, len(order), batch_size)]
    return batches if group is None else group.mine(batches)


def _share(
    group: Group | None, rows: _Rows, holders: np.ndarray, work: Callable[[], int], phase: str
) -> None:
    """Run this rank's ``work`` (it fills ``rows``), then give every rank every row.

    A rank sends what it encoded, plus the cached rows it is the first holder of that some
    rank lacks (none when the caches agree, e.g. one shared cache).
    """
    if group is None:
        work()
        return
    n_holders = holders.sum(axis=0)
    first = holders.argmax(axis=0)

    def local() -> tuple[np.ndarray, np.ndarray, Any, Any]:
        before = rows.held.copy()
        start = time.perf_counter()
        count = work()
        seconds = time.perf_counter() - start
        group.record(phase, count, seconds)
        log.info("%s: computed %d of %d here in %.2f s", phase, count, rows.n, seconds)
        others_lack = (n_holders > 0) & (n_holders < group.world_size) & (first == group.rank)
        return rows.payload(np.flatnonzero((rows.held & ~before) | others_lack))

    for rank, (idx, emb, n_tokens, cut) in enumerate(group.run_and_gather(local)):
        if rank == group.rank or not len(idx):
            continue
        need = ~rows.held[idx]
        rows.fill(
            idx[need],
            emb[need],
            None if n_tokens is None else n_tokens[need],
            None if cut is None else cut[need],
        )
    if not rows.held.all():  # cannot happen unless a rank skipped its batches
        raise DensecapError(f"{int((~rows.held).sum())} {phase} were scored by no rank")


def _reindex(group: Group | None, open_store: Callable[[], Any] | None) -> None:
    """Rank 0 rewrites a cache index once every rank's shards are written (one index writer)."""
    if group is None or not group.is_main or open_store is None:
        return
    fresh = open_store()
    len(fresh)  # reads the index and scans the shards it does not list
    fresh.flush()


def _encode_texts(scorer: EmbeddingScorer, texts: Sequence[str], run: _Pass) -> _Rows:
    """Every text's embedding, each model input encoded once (one text, one encoding).

    Texts that reach the model identically (equal `TwoTowerScorer.text_inputs` keys: the same
    token ids after the text policy) share one encoding, looked up and cached under that key,
    so they tie exactly wherever they would have been batched. A scorer without ``text_inputs``
    (a plugin) is keyed by the text itself. The score table then computes each distinct
    embedding's scores once (`densecap_eval.engine.plan.ScoreTable`).
    """
    n = len(texts)
    policy = run.text_policy
    inputs = scorer.text_inputs(texts, policy=policy) if hasattr(scorer, "text_inputs") else None
    if inputs is not None and len(inputs.keys) != n:
        raise DensecapError(f"{scorer.spec}: text_inputs gave {len(inputs.keys)} keys for {n}")
    first: dict[str, int] = {}
    slot = np.array(
        [first.setdefault(k, i) for i, k in enumerate(texts if inputs is None else inputs.keys)],
        dtype=np.int64,
    ).reshape(-1)
    reps = list(first.values())
    cache_keys = [
        text_key(texts[i] if inputs is None else _INPUT_KEY_PREFIX + inputs.keys[i]) for i in reps
    ]
    unique = _encode_unique_texts(scorer, [texts[i] for i in reps], cache_keys, run)
    rows = _Rows(n, texts=True)
    if n:
        assert unique.n_tokens is not None and unique.cut is not None
        where = np.empty(n, dtype=np.int64)
        where[reps] = np.arange(len(reps))
        pos = where[slot]
        if inputs is None:  # the same text: the same count and cut
            n_tokens, cut = unique.n_tokens[pos], unique.cut[pos]
        else:  # the same input, not the same text: each text's own count
            n_tokens, cut = np.asarray(inputs.n_tokens), np.asarray(inputs.cut, dtype=bool)
        rows.fill(np.arange(n), unique.embeddings()[pos], n_tokens, cut)
    return rows


# Cache keys of model inputs are hashed with this prefix, so they never meet a text's own key.
_INPUT_KEY_PREFIX = "model-input\x00"


def _encode_unique_texts(
    scorer: EmbeddingScorer, texts: Sequence[str], cache_keys: Sequence[str], run: _Pass
) -> _Rows:
    n = len(texts)
    rows = _Rows(n, texts=True)
    cache = run.cache

    def open_store() -> Any:
        assert cache is not None
        return cache.text_store(
            ModelKey.of(scorer), run.text_policy, max_tokens=scorer.max_text_tokens
        )

    store = open_store() if cache is not None else None
    keys: list[str] = []

    def lookup() -> None:
        if store is None or not n:
            return
        keys.extend(cache_keys)
        hit = store.lookup(keys)
        if hit.keys:
            pos = {k: i for i, k in enumerate(hit.keys)}
            idx = [i for i in range(n) if keys[i] in pos]
            found = [pos[keys[i]] for i in idx]
            assert hit.n_tokens is not None and hit.cut is not None
            rows.fill(idx, hit.embeddings[found], hit.n_tokens[found], hit.cut[found])

    holders = _cache_holders(run.group, rows, lookup)
    todo = [i for i in range(n) if not holders[:, i].any()]

    def work() -> int:
        return _encode_text_work(scorer, texts, todo, rows=rows, store=store, keys=keys, run=run)

    _share(run.group, rows, holders, work, "texts")
    if todo:
        _reindex(run.group, open_store if store is not None else None)
    return rows


def _encode_text_work(
    scorer: EmbeddingScorer,
    texts: Sequence[str],
    todo: list[int],
    *,
    rows: _Rows,
    store: Any,
    keys: list[str],
    run: _Pass,
) -> int:
    """Encode the texts ``todo`` (this rank's batches of them) into ``rows`` and the cache."""
    if not todo:
        if store is not None:
            store.flush()  # an index rebuilt from unlisted shards is worth keeping
        return 0
    counts = scorer.count_tokens([texts[i] for i in todo])
    # Shortest first, stable: similar lengths share a batch.
    order = [todo[j] for j in sorted(range(len(todo)), key=lambda j: counts[j])]
    # One process: one run the backoff cuts into batches; a rank: its fixed batches.
    group = run.group
    chunks = [order] if group is None else _batches_of(order, run.batch_size, group)
    advance = run.bars.task("encoding texts", len(order), group=group)
    backoff = BatchBackoff(run.batch_size, what="texts")
    done = 0
    try:
        for chunk in chunks:

            def encode(a: int, b: int, c: list[int] = chunk) -> Any:
                return scorer.encode_texts([texts[i] for i in c[a:b]], policy=run.text_policy)

            for a, b, enc in backoff.run(len(chunk), encode):
                idx = chunk[a:b]
                emb = enc.embeddings.detach().to("cpu").float().numpy()
                rows.fill(idx, emb, enc.n_tokens, enc.cut)
                if store is not None:
                    store.put([keys[i] for i in idx], emb, n_tokens=enc.n_tokens, cut=enc.cut)
                    crash_point("encoded")
                done += b - a
                advance(b - a)
    finally:
        if store is not None:
            store.flush()
    advance.settle()
    return done


def _encode_regions(scorer: EmbeddingScorer, regions: Sequence[Region], run: _Pass) -> _Rows:
    n = len(regions)
    rows = _Rows(n, texts=False)
    cache = run.cache

    def open_store() -> Any:
        assert cache is not None
        return cache.image_store(ModelKey.of(scorer), scorer.preprocess_id, blind=run.blind)

    store = open_store() if cache is not None else None
    keys: list[str] = []

    def lookup() -> None:
        if store is None or not n:
            return
        keys.extend(region_key(r) for r in regions)
        hit = store.lookup(keys)
        if hit.keys:
            pos = {k: i for i, k in enumerate(hit.keys)}
            idx = [i for i in range(n) if keys[i] in pos]
            rows.fill(idx, hit.embeddings[[pos[keys[i]] for i in idx]])

    holders = _cache_holders(run.group, rows, lookup)
    todo = [i for i in range(n) if not holders[:, i].any()]

    def work() -> int:
        return _encode_region_work(
            scorer, regions, todo, rows=rows, store=store, keys=keys, run=run
        )

    _share(run.group, rows, holders, work, "regions")
    if todo:
        _reindex(run.group, open_store if store is not None else None)
    return rows


def _encode_region_work(
    scorer: EmbeddingScorer,
    regions: Sequence[Region],
    todo: list[int],
    *,
    rows: _Rows,
    store: Any,
    keys: list[str],
    run: _Pass,
) -> int:
    """Encode the regions ``todo`` (this rank's batches of them) into ``rows`` and the cache."""
    if not todo:
        if store is not None:
            store.flush()
        return 0
    order = [todo[j] for j in _order_by_photo([regions[i] for i in todo])]
    chunks = _batches_of(order, run.batch_size, run.group)
    dataset = _RegionBatches(
        [[regions[i] for i in c] for c in chunks], blind=run.blind, preprocess=scorer.preprocess
    )
    mine = sum(len(c) for c in chunks)
    workers = default_num_workers(mine) if run.num_workers is None else run.num_workers
    pin = _on_cuda(scorer.device)
    advance = run.bars.task("encoding regions", len(order), group=run.group)
    backoff = BatchBackoff(run.batch_size, what="regions")
    seen: dict[bytes, int] = {}  # pixel digest -> the item encoded for it
    try:
        batches = _iter_batches(dataset, workers, pin_memory=pin, timeout=run.worker_timeout)
        for chunk, pixels in zip(chunks, batches, strict=True):
            fresh, copies = _split_repeats(chunk, _pixel_digests(pixels, len(chunk)), seen)
            sub = [chunk[j] for j in fresh]
            px = pixels if len(fresh) == len(chunk) else pixels[fresh]

            # The loader's batch stays fixed; an OOM only shrinks what reaches the model.
            def encode(a: int, b: int, px: torch.Tensor = px) -> torch.Tensor:
                return scorer.encode_pixels(px[a:b])

            for a, b, out in backoff.run(len(sub), encode):
                idx = sub[a:b]
                emb = out.detach().to("cpu").float().numpy()
                rows.fill(idx, emb)
                if store is not None:
                    store.put([keys[i] for i in idx], emb)
                    crash_point("encoded")
                advance(b - a)
            if copies:
                idx = [i for i, _ in copies]
                assert rows.emb is not None
                emb = rows.emb[[f for _, f in copies]]
                rows.fill(idx, emb)
                if store is not None:
                    store.put([keys[i] for i in idx], emb)
            advance(len(chunk) - len(sub))
    finally:
        if store is not None:
            store.flush()
    advance.settle()
    return mine


def _split_repeats(
    chunk: list[int], digests: list[bytes | None], seen: dict[bytes, int]
) -> tuple[list[int], list[tuple[int, int]]]:
    """(positions of ``chunk`` to encode, (item, the earlier item whose encoding it shares)).

    Identical pixels are one input, encoded once in this run, so regions the model cannot tell
    apart tie exactly. (The cache keys regions by photo and box: a region cached by an earlier
    run and a new one with its pixels are two rows.) ``seen`` maps digests across batches.
    """
    fresh: list[int] = []
    copies: list[tuple[int, int]] = []
    for j, (i, digest) in enumerate(zip(chunk, digests, strict=True)):
        first = i if digest is None else seen.setdefault(digest, i)
        if first == i:
            fresh.append(j)
        else:
            copies.append((i, first))
    return fresh, copies


def _pixel_digests(pixels: Any, n: int) -> list[bytes | None]:
    """A digest of each item's preprocessed pixels (None for a batch that is not a tensor)."""
    import hashlib

    import torch

    if not isinstance(pixels, torch.Tensor) or len(pixels) != n:
        return [None] * n
    flat = pixels.detach().to("cpu").contiguous().numpy()
    return [hashlib.blake2b(flat[j].tobytes(), digest_size=20).digest() for j in range(n)]


def _score_pairs(scorer: PairScorer, plan: ScoringPlan, run: _Pass) -> ScoreTable:
    texts = plan.texts
    n_tokens = np.asarray(scorer.count_tokens(texts), dtype=np.int64).reshape(-1)
    cut = np.asarray(scorer.text_cut(texts, policy=run.text_policy), dtype=bool).reshape(-1)
    pairs = plan.pairs
    values = np.zeros(len(pairs), dtype=np.float32)

    def work() -> tuple[np.ndarray, np.ndarray]:
        if not len(pairs):
            return np.zeros(0, dtype=np.int64), values[:0]
        return _score_pair_work(scorer, plan, _pair_order(plan, n_tokens), values, run)

    if run.group is None:
        work()
    else:
        for rank, (pos, vals) in enumerate(run.group.run_and_gather(work)):
            if rank != run.group.rank:
                values[pos] = vals
    return ScoreTable(text_tokens=n_tokens, text_cut=cut, pairs=pairs, pair_values=values)


def _pair_order(plan: ScoringPlan, n_tokens: np.ndarray) -> list[int]:
    """The plan's pairs by photo and region first, then text length.

    A VLM's image (hundreds of tokens, its vision tower) then runs once for all of a region's
    captions in a batch (prefix sharing), which outweighs the padding a length-first order
    would save on captions.
    """
    pairs = plan.pairs
    photo_rank: dict[str, int] = {}
    for r in plan.regions:
        photo_rank.setdefault(r.photo, len(photo_rank))
    return sorted(
        range(len(pairs)),
        key=lambda p: (
            photo_rank[plan.regions[pairs[p, 0]].photo],
            int(pairs[p, 0]),
            int(n_tokens[pairs[p, 1]]),
            int(pairs[p, 1]),
        ),
    )


def _score_pair_work(
    scorer: PairScorer, plan: ScoringPlan, order: list[int], values: np.ndarray, run: _Pass
) -> tuple[np.ndarray, np.ndarray]:
    """Score this rank's batches of ``order`` into ``values``; (their positions, their values)."""
    texts, pairs, group = plan.texts, plan.pairs, run.group
    chunks = _batches_of(order, run.batch_size, group)
    dataset = _RegionBatches(
        [[plan.regions[pairs[p, 0]] for p in c] for c in chunks], blind=run.blind, preprocess=None
    )
    mine = np.asarray([p for c in chunks for p in c], dtype=np.int64)
    workers = default_num_workers(len(mine)) if run.num_workers is None else run.num_workers
    advance = run.bars.task("scoring pairs", len(order), group=group)
    backoff = BatchBackoff(run.batch_size, what="pairs")
    start = time.perf_counter()
    images_in = _iter_batches(dataset, workers, timeout=run.worker_timeout)
    for chunk, images in zip(chunks, images_in, strict=True):
        chunk_texts = [texts[pairs[p, 1]] for p in chunk]

        def score(a: int, b: int, imgs: list[Any] = images, tx: list[str] = chunk_texts) -> Any:
            return scorer.score_pairs(imgs[a:b], tx[a:b], policy=run.text_policy)

        for a, b, out in backoff.run(len(chunk), score):
            values[chunk[a:b]] = out.detach().to("cpu").float().numpy().reshape(-1)
            advance(b - a)
    advance.settle()
    if group is not None:
        seconds = time.perf_counter() - start
        group.record("pairs", len(mine), seconds)
        log.info("pairs: scored %d of %d here in %.2f s", len(mine), len(pairs), seconds)
    return mine, values[mine]
