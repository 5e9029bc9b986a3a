"""One run's options: a frozen, typed `RunConfig` built once and passed through unchanged.

The CLI, a script or `evaluate(**options)` builds it; the runner, `evaluate_tasks`, the engine
and the results store read it; the run card records it (`RunConfig.to_dict`). Every option that
can change a number is here (precision, device, text policy, tie rule, seed, blind, world
size ...), so there is one place that says what a run computed.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from densecap_eval.core.errors import DensecapError

# The numeric options every layer shares (scorers, engine, tasks, CLI) live here, at the bottom.
TextPolicy = Literal["truncate", "chunk-mean", "error"]
TEXT_POLICIES: tuple[str, ...] = ("truncate", "chunk-mean", "error")
Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
TieRule = Literal["pessimistic", "first"]
TIE_RULES: tuple[str, ...] = ("pessimistic", "first")
PROTOCOLS: tuple[str, ...] = ("default", "elevater-dci")  # see datasets/elevater/protocol.py
REFERENCE_PRECISION = "fp32"  # what the reference DCI implementation computes
# Seconds a photo-decoding worker may take to deliver one batch before the run stops: generous,
# as a batch of large photos on a loaded, shared CPU can take a while (--worker-timeout).
DEFAULT_WORKER_TIMEOUT = 300.0


class ConfigError(DensecapError):
    """An option has a value no run can use (the CLI reports it before loading anything)."""


@dataclass(frozen=True)
class RunConfig:
    """How to score and evaluate: everything a run's numbers depend on besides model and task.

    ``precision`` is fp32 unless asked (the reference parity was established in fp32); ``ties``
    is the retrieval tie rule (``pessimistic``: a tie counts against the model; ``first``: the
    first index of the maximum, as the published peers compute it). ``world_size`` is the
    number of processes that scored the plan (recorded; 1 outside torchrun).
    """

    data_root: Path | None = None
    # Per-dataset roots, as ((dataset, root), ...): one command can run several datasets.
    data_roots: tuple[tuple[str, Path], ...] = ()
    # Loader options, as ((key, value), ...): e.g. the files dataset's column names.
    dataset_options: tuple[tuple[str, str | None], ...] = ()
    split: str | None = None
    seed: int = 0
    batch_size: int | None = None
    device: str | None = None
    precision: Precision = "fp32"
    text_policy: TextPolicy = "truncate"
    ties: TieRule = "pessimistic"
    # Zero-shot classification protocol: "default" (the model's own preprocessing) or
    # "elevater-dci" (DCI's ELEVATER run: ImageNet statistics, ELEVATER's prompt cleaning).
    protocol: str = "default"
    blind: bool = False
    use_cache: bool = True
    cache_dir: Path | None = None
    strict: bool = False
    n_boot: int = 1000
    progress: bool | None = None
    rerank_from: str | None = None
    rerank_k: int = 10
    world_size: int = 1
    # Photo-decoding processes (None: by plan size and CPUs) and how long one may take to
    # deliver a batch (seconds) before the run stops; neither changes a number.
    num_workers: int | None = None
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("data_root", "cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value).expanduser())
        roots = self.data_roots.items() if isinstance(self.data_roots, Mapping) else self.data_roots
        object.__setattr__(
            self, "data_roots", tuple((str(k), Path(v).expanduser()) for k, v in roots)
        )
        options = (
            self.dataset_options.items()
            if isinstance(self.dataset_options, Mapping)
            else self.dataset_options
        )
        object.__setattr__(
            self, "dataset_options",
            tuple(sorted((str(k), None if v is None else str(v)) for k, v in options)),
        )  # fmt: skip
        names = [name for name, _ in self.data_roots]
        if len(set(names)) != len(names):
            raise ConfigError(f"a dataset has more than one data root: {', '.join(names)}")
        if self.precision is None:  # an explicit None from a caller means the default
            object.__setattr__(self, "precision", REFERENCE_PRECISION)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("text policy", self.text_policy, TEXT_POLICIES)
        _one_of("tie rule", self.ties, TIE_RULES)
        _one_of("protocol", self.protocol, PROTOCOLS)
        _int_at_least("seed", self.seed, 0)
        _int_at_least("n_boot", self.n_boot, 0)
        _int_at_least("rerank_k", self.rerank_k, 1)
        _int_at_least("world_size", self.world_size, 1)
        if self.batch_size is not None:
            _int_at_least("batch_size", self.batch_size, 1)
        if self.num_workers is not None:
            _int_at_least("num_workers", self.num_workers, 0)
        timeout = self.worker_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"worker_timeout must be a number of seconds > 0, got {timeout!r}")

    @classmethod
    def from_options(cls, **options: Any) -> RunConfig:
        """Build from keyword options; an unknown name raises with a did-you-mean."""
        known = [f.name for f in fields(cls)]
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown option {name!r}{hint}; known: {', '.join(known)}")
        return cls(**options)

    def with_options(self, **changes: Any) -> RunConfig:
        return replace(self, **changes)

    def root_for(self, dataset: str) -> Path | None:
        """The data root of ``dataset``: its own (``data_roots``), else ``data_root``."""
        return dict(self.data_roots).get(dataset, self.data_root)

    @property
    def reference_exact(self) -> bool:
        """Whether the DCI subtests computed under this config can equal the reference's."""
        return self.precision == REFERENCE_PRECISION

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values (paths as strings); what the run card records."""
        out = {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in asdict(self).items()
        }
        out["data_roots"] = {name: str(root) for name, root in self.data_roots}
        out["dataset_options"] = dict(self.dataset_options)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Read back `to_dict` output, ignoring keys a newer version may have added."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _one_of(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r} (known: {', '.join(allowed)})")


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
