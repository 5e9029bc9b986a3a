"""Data-parallel scoring under ``torchrun``: one process per device, one plan, rank 0 records.

``torchrun --nproc-per-node N -m densecap_eval run ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` ... in their environment (several nodes: the same command with
torchrun's rendezvous flags). `init_from_env` joins them into one process group: gloo on CPU,
NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``. Every rank plans the same tasks; the engine
cuts each phase's uncached work (texts, regions, pairs) into exactly the batches one process
would run and gives batch ``i`` to rank ``i % world_size`` (strided: batches are sorted by text
length, so every rank gets short and long ones). A batch is computed as one process computes
it, so the numbers are identical to a one-process run.

**Gathering.** The rows each rank computed are exchanged with `torch.distributed`'s
``all_gather_object`` (a pickled payload per rank), not through the content-keyed cache: the
cache may be off (``--no-cache``) or node-local, and a shared file system gives no guarantee
that one node sees another's fresh files; the arrays are small (a DCI plan's embeddings are
tens of MB) and every rank needs the whole table (a re-ranking first stage plans the pair
stage from it). The cache still gets every rank's shards (atomic files with distinct names),
so a rerun after a failure resumes from them.

**Failures.** Each collective step runs through `Group.run` / `Group.run_and_gather`: a rank
whose work raises still joins the exchange, with its error instead of its rows, and then every
rank raises (`DistributedError` naming the rank, the failing rank its own exception), so rank
0 marks its runs failed and every process exits non-zero. A rank that dies outright (kill -9,
segfault) closes its connections: gloo peers fail at their next collective, and torchrun sends
the others SIGTERM, which `init_from_env` turns into `Terminated` so rank 0's run writers
record the failure before the process ends.

Progress is counted in the rendezvous store (one ``add`` per batch), so the single bar on
rank 0 shows the global count; each rank also times its own work for a throughput summary.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from densecap_eval.core.errors import DensecapError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = timedelta(minutes=30)
_POLL_S = 0.2

_group: Group | None = None


class DistributedError(DensecapError):
    """Another rank failed (its error is in the message), or the ranks disagree on the plan."""

    exit_code = 1


class Terminated(DensecapError):
    """SIGTERM: torchrun stops the surviving ranks when one dies, or the job was cancelled."""

    exit_code = 143


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def rank_device(requested: str | None, local_rank: int) -> str | None:
    """This rank's device: ``cuda:LOCAL_RANK`` for ``cuda`` (or no choice when CUDA exists).

    An explicit index (``cuda:3``) or another device (``cpu``) is kept as given.
    """
    if requested is None:
        import torch

        return f"cuda:{local_rank}" if torch.cuda.is_available() else None
    if requested == "cuda":
        return f"cuda:{local_rank}"
    return requested


@dataclass
class Counter:
    """A count every rank adds to (in the rendezvous store); rank 0 reads the global total."""

    store: Any
    key: str
    total: int
    failed_key: str

    def add(self, n: int) -> int:
        return int(self.store.add(self.key, n))

    def wait(self, on_update: Callable[[int], None], *, timeout: timedelta) -> None:
        """Poll until every rank's items are counted, a rank reports a failure, or timeout."""
        deadline = time.monotonic() + timeout.total_seconds()
        while time.monotonic() < deadline:
            done = self.add(0)
            on_update(done)
            if done >= self.total or int(self.store.add(self.failed_key, 0)) > 0:
                return
            time.sleep(_POLL_S)


@dataclass
class Group:
    """This process's place in the job, and the few collective steps the engine needs."""

    rank: int
    world_size: int
    local_rank: int
    device: str | None
    backend: str
    store: Any = field(repr=False, default=None)
    timeout: timedelta = DEFAULT_TIMEOUT
    # phase -> [items, seconds] this rank computed itself (for the throughput summary)
    stats: dict[str, list[float]] = field(default_factory=dict)
    _steps: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (batches): item ``i`` goes to rank ``i % world_size``."""
        return list(items[self.rank :: self.world_size])

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order (pickled: ``all_gather_object``)."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def run_and_gather(self, fn: Callable[[], T]) -> list[T]:
        """``fn()`` on this rank, then every rank's result in rank order.

        If ``fn`` raised on any rank, every rank raises: the failing rank its own exception,
        the others a `DistributedError` that names it.
        """
        try:
            payload: Any = fn()
            error: BaseException | None = None
            message = None
        except Exception as exc:
            payload, error, message = None, exc, f"{type(exc).__name__}: {exc}"
            self._mark_failed()
        try:
            gathered = self.all_gather((message, payload))
        except RuntimeError as exc:  # gloo: a peer closed its connection (killed, crashed)
            if error is not None:
                raise error from None
            raise DistributedError(f"lost contact with another rank (did it die?): {exc}") from exc
        if error is not None:
            raise error
        failed = [(r, m) for r, (m, _) in enumerate(gathered) if m is not None]
        if failed:
            rank, message = failed[0]
            raise DistributedError(f"rank {rank} of {self.world_size} failed: {message}")
        return [p for _, p in gathered]

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on this rank; if it raised on any rank, every rank raises (no data moves)."""
        box: list[T] = []

        def step() -> None:
            box.append(fn())

        self.run_and_gather(step)
        return box[0]

    def check_same(self, what: str, value: Any) -> None:
        """Raise on every rank unless every rank has the same ``value`` (e.g. a plan digest)."""
        values = self.all_gather(value)
        if any(v != values[0] for v in values):
            differ = [r for r, v in enumerate(values) if v != values[0]]
            raise DistributedError(
                f"ranks disagree on the {what} (rank 0 and rank {differ[0]}): every rank must "
                "see the same data root, tasks and options"
            )

    def counter(self, name: str, total: int) -> Counter | None:
        """A new global counter (None without a store); every rank creates them in one order."""
        self._steps += 1
        if self.store is None:
            return None
        return Counter(self.store, f"progress/{self._steps}/{name}", total, "failed")

    def record(self, phase: str, items: int, seconds: float) -> None:
        slot = self.stats.setdefault(phase, [0, 0.0])
        slot[0] += items
        slot[1] += seconds

    def throughput(self) -> list[dict[str, Any]]:
        """Every rank's items and seconds per phase (a collective: call it on every rank)."""
        mine = {
            "rank": self.rank,
            "device": self.device or "cpu",
            "phases": {k: {"items": int(v[0]), "seconds": round(v[1], 3)}
                       for k, v in self.stats.items()},
        }  # fmt: skip
        return self.all_gather(mine)

    def _mark_failed(self) -> None:
        if self.store is not None:
            try:
                self.store.add("failed", 1)
            except Exception:  # the store may be gone with the failure; the gather says it
                log.debug("could not flag the failure in the store", exc_info=True)


def current() -> Group | None:
    """The group `init_from_env` joined, or None (one process)."""
    return _group


def _die_with_launcher() -> None:
    """Under torchrun on Linux: this rank dies (SIGKILL) when its launcher dies.

    torchrun starts each rank in a session of its own, so a ``kill -9`` of torchrun alone
    (or of its process group) would leave the ranks waiting on the launcher's store for the
    whole timeout (30 minutes), holding their devices. ``PR_SET_PDEATHSIG`` ties them to it.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl here: the ranks time out instead
        return
    if os.getppid() == 1:  # the launcher died before the call
        os.kill(os.getpid(), signal.SIGKILL)


def init_from_env(
    device: str | None = None,
    *,
    timeout: timedelta = DEFAULT_TIMEOUT,
    handle_sigterm: bool = True,
) -> Group | None:
    """Join the torchrun job this process belongs to; None outside torchrun or for 1 process.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``, set
    by torchrun). The backend is NCCL when this rank's device is CUDA, else gloo. With
    ``handle_sigterm`` (the CLI), SIGTERM raises `Terminated` in the main thread so the run
    writers record the failure.
    """
    global _group
    if _group is not None:
        return _group
    world = env_world_size()
    if world <= 1 and "torch" not in sys.modules:  # not torchrun, and no group can exist yet
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # a script that set up its own group
        if dist.get_world_size() <= 1:
            return None
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        _group = Group(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=local_rank, device=rank_device(device, local_rank),
                       backend=str(dist.get_backend()), timeout=timeout)  # fmt: skip
        return _group
    if world <= 1:
        return None
    missing = [
        k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: start the processes with "
            "torchrun (torchrun --nproc-per-node N -m densecap_eval run ...)"
        )
    _group = group = _join_torchrun(world, device, timeout)
    if handle_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)
    log.info("rank %d of %d (local %d) on %s, backend %s", group.rank, group.world_size,
             group.local_rank, group.device or "the default device", group.backend)  # fmt: skip
    return group


def _join_torchrun(world: int, device: str | None, timeout: timedelta) -> Group:
    """Set up the process group of a torchrun job (its env checked) and this rank's `Group`."""
    import torch
    import torch.distributed as dist

    _die_with_launcher()
    rank = env_rank()
    local_rank = int(os.environ["LOCAL_RANK"])
    dev = rank_device(device, local_rank)
    on_cuda = dev is not None and dev.split(":")[0] == "cuda"
    backend = "nccl" if on_cuda else "gloo"
    if on_cuda:
        torch.cuda.set_device(torch.device(str(dev)))
    # The rendezvous store is created here (not inside init_process_group) so the progress
    # counters can use it; this is what init_process_group(init_method="env://") does.
    store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=timeout))
    store.set_timeout(timeout)
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("default_pg", store),
        rank=rank,
        world_size=world,
        timeout=timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # counters restart with a retry
    return Group(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        device=dev,
        backend=backend,
        store=dist.PrefixStore(f"densecap_eval/{attempt}", store),
        timeout=timeout,
    )


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(
        "terminated (SIGTERM): another rank died or the job was stopped; rerun to resume from "
        "the cache"
    )


def shutdown() -> None:
    """Leave the process group (after a successful run; a failed one just exits)."""
    global _group
    if _group is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _group = None
