"""One run's options: a frozen, typed `RunConfig` built once and passed through unchanged.

The CLI, a script or `evaluate(**options)` builds it; the runner, `evaluate_tasks`, the engine
and the results store read it; the run card records it (`RunConfig.to_dict`). Every option that
can change a number is here (precision, device, text policy, tie rule, seed, blind, world
size ...), so there is one place that says what a run computed.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import Field, asdict, dataclass, field, fields, replace
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
# see datasets/elevater/protocol.py and run/protocols.py
ZeroShotProtocol = Literal["default", "elevater-dci", "clip_benchmark"]
PROTOCOLS: tuple[str, ...] = ("default", "elevater-dci", "clip_benchmark")
REFERENCE_PRECISION = "fp32"  # what the reference DCI implementation computes
# Seconds a photo-decoding worker may take to deliver one batch before the run stops: generous,
# as a batch of large photos on a loaded, shared CPU can take a while (--worker-timeout).
DEFAULT_WORKER_TIMEOUT = 300.0


class ConfigError(DensecapError):
    """An option has a value no run can use (the CLI reports it before loading anything)."""


@dataclass(frozen=True)
class Flag:
    """How ``densecap-eval run`` spells one `RunConfig` field, declared beside the field.

    Plain data (core imports no CLI library): `densecap_eval.cli.run_options` makes it a Typer
    option, `RunConfig.command_line` the arguments a run card records. The option's type and
    default are the field's own; a ``repeatable`` option takes texts the CLI parses (NAME=DIR,
    KEY=VALUE) instead. A bool field's flag sets the opposite of its default (``--no-cache``).
    """

    name: str
    help: str | None = None
    min: int | None = None
    repeatable: bool = False
    # What the command line records: "set" (any value but None, defaults too, so a run card
    # still says what ran if a default changes) or "changed" (only a value off the default).
    # A bool flag is recorded when set against its default.
    record: Literal["set", "changed"] = "set"
    record_with: str | None = None  # recorded only while this other field is set
    given_by: str | None = None  # no option of its own: another field's option fills it

    def arguments(self, value: Any, default: Any) -> list[str]:
        """This field's part of a command line that reproduces ``value``."""
        if isinstance(value, bool):
            return [self.name] if value != default else []
        if isinstance(value, tuple):  # (key, value) pairs: one KEY=VALUE argument each
            return [x for key, item in value
                    for x in (self.name, f"{key}={'' if item is None else item}")]  # fmt: skip
        if value is None or (self.record == "changed" and value == default):
            return []
        return [self.name, str(value)]


FLAG_KEY = "cli"  # where a field's `Flag` is, in its dataclass metadata


def cli(flag: str, **how: Any) -> dict[str, Flag]:
    """The metadata of a `RunConfig` field with a ``run`` option (see `Flag`)."""
    return {FLAG_KEY: Flag(flag, **how)}


def flag_of(item: Field[Any]) -> Flag | None:
    """The ``run`` option of a `RunConfig` field (None: not an option, e.g. ``world_size``)."""
    flag = item.metadata.get(FLAG_KEY)
    return flag if isinstance(flag, Flag) else None


@dataclass(frozen=True)
class RunConfig:
    """How to score and evaluate: everything a run's numbers depend on besides model and task.

    ``precision`` is fp32 unless asked (the reference parity was established in fp32); ``ties``
    is the retrieval tie rule (``pessimistic``: a tie counts against the model; ``first``: the
    first index of the maximum, as the published peers compute it). ``world_size`` is the
    number of processes that scored the plan (recorded; 1 outside torchrun).

    Each field that ``densecap-eval run`` sets declares its option here (`Flag`); the command's
    options, their help and a run card's command line are generated from them, in field order.
    """

    data_root: Path | None = field(default=None, metadata=cli(
        "--data-root", repeatable=True,
        help="Dataset root (the folder of the release's files), or NAME=DIR for one dataset "
        "(repeatable: several datasets in one command). Default: the bundled sample without "
        "--model, else $DENSECAP_EVAL_DATA.",
    ))  # fmt: skip
    # Per-dataset roots, as ((dataset, root), ...): one command can run several datasets.
    data_roots: tuple[tuple[str, Path], ...] = field(
        default=(), metadata=cli("--data-root", given_by="data_root")
    )
    # Loader options, as ((key, value), ...): e.g. the files dataset's column names.
    dataset_options: tuple[tuple[str, str | None], ...] = field(default=(), metadata=cli(
        "--dataset-option", repeatable=True,
        help="KEY=VALUE for the dataset loaders (repeatable), e.g. caption_column=text for "
        "your own files (KEY= means none).",
    ))  # fmt: skip
    batch_size: int | None = field(default=None, metadata=cli("--batch-size", min=1))
    device: str | None = field(default=None, metadata=cli(
        "--device", help="cpu, cuda, cuda:1, mps ... Default: best available.",
    ))  # fmt: skip
    precision: Precision = field(default="fp32", metadata=cli(
        "--precision",
        help="fp32 (default on every device: what the reference computes), or bf16 / fp16 "
        "under autocast (faster on a GPU; DCI subtests then marked not reference-exact).",
    ))  # fmt: skip
    text_policy: TextPolicy = field(default="truncate", metadata=cli(
        "--text-policy", help="Past the model's text limit: truncate, chunk-mean or error.",
    ))  # fmt: skip
    split: str | None = field(default=None, metadata=cli(
        "--split", help="Dataset split. Default: the task's own (test for DCI).",
    ))  # fmt: skip
    seed: int = field(default=0, metadata=cli(
        "--seed", min=0, help="Seed of the bootstrap intervals.",
    ))  # fmt: skip
    blind: bool = field(default=False, metadata=cli(
        "--blind", help="Blind control: every image region replaced by uniform grey.",
    ))  # fmt: skip
    use_cache: bool = field(default=True, metadata=cli(
        "--no-cache", help="Do not read or write the embedding cache.",
    ))  # fmt: skip
    cache_dir: Path | None = field(default=None, metadata=cli("--cache-dir"))
    strict: bool = field(default=False, metadata=cli(
        "--strict", help="Stop at the first unusable image instead of skipping it.",
    ))  # fmt: skip
    n_boot: int = field(default=1000, metadata=cli(
        "--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals.",
    ))  # fmt: skip
    rerank_from: str | None = field(default=None, metadata=cli(
        "--rerank-from",
        help="Retrieval with a pair scorer (vqascore:, captionlik:, itm:): the embedding "
        "scorer whose top --rerank-k candidates it re-ranks, e.g. open_clip:ViT-B-32/openai.",
    ))  # fmt: skip
    ties: TieRule = field(default="pessimistic", metadata=cli(
        "--ties",
        help="Retrieval ties: pessimistic (a tie counts against the model) or first (the "
        "first index of the maximum, as Long-CLIP/LoTLIP compute it).",
    ))  # fmt: skip
    # Zero-shot classification protocol: "default" (the model's own preprocessing),
    # "elevater-dci" (DCI's ELEVATER run: ImageNet statistics, ELEVATER's prompt cleaning) or
    # "clip_benchmark" (elevater/<key> runs as clip_benchmark/<key>, on CLIP_benchmark's data).
    protocol: ZeroShotProtocol = field(default="default", metadata=cli(
        "--protocol", record="changed",
        help="Zero-shot classification (elevater/...): default (the model's own "
        "preprocessing), elevater-dci (DCI's ELEVATER run: ImageNet mean/std, ELEVATER's "
        "prompt cleaning) or clip_benchmark (CLIP_benchmark's protocol: elevater/KEY runs as "
        "clip_benchmark/KEY on its wds copy). Recorded on the run card.",
    ))  # fmt: skip
    rerank_k: int = field(default=10, metadata=cli(
        "--rerank-k", min=1, record_with="rerank_from",
        help="Candidates per query the pair scorer re-ranks (>= 10 keeps R@10 its own).",
    ))  # fmt: skip
    # Photo-decoding processes (None: by plan size and CPUs) and how long one may take to
    # deliver a batch (seconds) before the run stops; neither changes a number.
    num_workers: int | None = field(default=None, metadata=cli(
        "--workers", min=0,
        help="Processes decoding photos (0: none, decode in the main process). Default: "
        "by the number of photos and CPUs.",
    ))  # fmt: skip
    worker_timeout: float = field(default=DEFAULT_WORKER_TIMEOUT, metadata=cli(
        "--worker-timeout", min=1, record="changed",
        help="Seconds a decoding process may take to deliver one batch before the run "
        "stops with an error (rather than wait for ever).",
    ))  # fmt: skip
    # Not options of `run`: the progress display, and the torchrun job's size (recorded).
    progress: bool | None = None
    world_size: int = 1

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

    def command_line(self) -> list[str]:
        """The ``run`` options that reproduce this config, in field order (see `Flag`)."""
        argv: list[str] = []
        for item in fields(self):
            flag = flag_of(item)
            if flag is None or (flag.record_with and getattr(self, flag.record_with) is None):
                continue
            argv += flag.arguments(getattr(self, item.name), item.default)
        return argv

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
