"""The results store: the only code that writes or reads run directories.

Layout (docs/architecture.md, "Results store")::

    RESULTS_DIR/<run_id>/run.json          run card, status written last and atomically
    RESULTS_DIR/<run_id>/metrics.json      {concrete_task: {metric: value}}
    RESULTS_DIR/<run_id>/examples.parquet  one row per scored example

`RunWriter` creates the directory with status ``running``, writes the two data files through a
temporary file and ``os.replace``, and only then rewrites ``run.json`` with ``complete``. An
exception (or Ctrl-C) inside its ``with`` block marks the run ``failed`` (``interrupted``)
instead, so a half-written run is never taken for a finished one. `list_runs` reads a results
directory back and says, for each run directory, whether it is usable and if not why.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from densecap_eval.core.config import RunConfig
from densecap_eval.core.crashpoints import crash_point
from densecap_eval.core.errors import ResultsError
from densecap_eval.results.schema import (
    COMPLETE,
    CORRUPT,
    EXAMPLES_FILE,
    FAILED,
    INTERRUPTED,
    METRICS_FILE,
    RUN_CARD_FILE,
    RUNNING,
    RunCard,
    SchemaError,
    jsonable,
)

if TYPE_CHECKING:
    import pandas as pd

# RunConfig fields the run card has a top-level slot for (the whole config is in card.config).
CONFIG_CARD_FIELDS: tuple[str, ...] = (
    "blind", "split", "text_policy", "batch_size", "precision", "device", "seed", "n_boot",
    "ties", "world_size", "protocol",
)  # fmt: skip

# Distributions whose versions every run card records (card key -> distribution name).
VERSIONED_PACKAGES: dict[str, str] = {
    "densecap-eval": "densecap-eval",
    "torch": "torch",
    "open_clip": "open_clip_torch",
    "transformers": "transformers",
}


class RunResultLike(Protocol):
    """What `RunWriter.complete` needs of `densecap_eval.run.evaluate.RunResult`."""

    metrics: Mapping[str, Mapping[str, Any]]
    examples: pd.DataFrame
    skipped: Sequence[Any]
    config: Mapping[str, Any]
    started_at: Any
    finished_at: Any


@dataclass(frozen=True)
class StoredRun:
    """One run directory as read back: its status, its card (unless unreadable) and why not usable."""

    path: Path
    status: str  # running | complete | failed | interrupted | corrupt
    card: RunCard | None
    reason: str | None = None  # why it is corrupt, or the error of a failed run

    @property
    def run_id(self) -> str:
        return self.card.run_id if self.card is not None else self.path.name

    @property
    def is_complete(self) -> bool:
        return self.status == COMPLETE


# --------------------------------------------------------------------------- environment


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a result (None when not installed)."""
    versions: dict[str, str | None] = {}
    for key, dist in VERSIONED_PACKAGES.items():
        try:
            versions[key] = version(dist)
        except PackageNotFoundError:
            versions[key] = None
    versions["python"] = platform.python_version()
    return versions


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The commit of the densecap-eval source when it runs from a git checkout, else None.

    The package's own file must be tracked, so an installed copy inside some other repository
    (a virtualenv under a project) does not report that project's commit.
    """
    package_dir = Path(__file__).resolve().parent.parent
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", "__init__.py"],
            cwd=package_dir,
            capture_output=True,
            timeout=10,
            check=False,
        )
        if tracked.returncode != 0:
            return None
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=package_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = head.stdout.strip()
    return revision if head.returncode == 0 and revision else None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: Any) -> str | None:
    """A timestamp of any usual type as ISO 8601 text (UTC for naive POSIX times)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return str(value)


# --------------------------------------------------------------------------- run ids


def slugify(text: str, *, max_len: int = 40) -> str:
    """Lower-case alphanumerics and single dashes; long specs keep their informative tail."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > max_len:
        slug = slug[-max_len:].strip("-")
    return slug or "x"


def model_slug(spec: str) -> str:
    """``open_clip:ViT-B-32/openai`` -> ``open-clip-vit-b-32-openai``; paths keep their last parts."""
    prefix, sep, rest = spec.partition(":")
    if not sep:
        return slugify(spec)
    return f"{slugify(prefix, max_len=12)}-{slugify(rest, max_len=32)}"


def new_run_id(model: str, task: str, *, blind: bool = False, now: datetime | None = None) -> str:
    """Sortable by start time and unique: ``20261123T101500Z-<model>-<task>[-blind]-<4 hex>``."""
    stamp = (now or utc_now()).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    parts = [stamp, model_slug(model), slugify(task, max_len=24)]
    if blind:
        parts.append("blind")
    parts.append(secrets.token_hex(2))
    return "-".join(parts)


# --------------------------------------------------------------------------- writing


def ensure_writable(results_dir: str | os.PathLike[str]) -> Path:
    """Create ``results_dir`` if needed and prove a file can be written there.

    Call it before loading any model, so a bad ``--out`` fails in a second, not after an hour.
    """
    path = Path(results_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ResultsError(f"results directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        # A full disk is not a usage error (exit 1); a folder the user cannot write to is (2).
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        error = ResultsWriteError if full else ResultsError
        raise error(f"results directory {path} is not writable: {reason}") from exc
    return path


class ResultsWriteError(ResultsError):
    """A results file could not be written (a full disk, a quota, a file-size limit): exit 1."""

    exit_code = 1


def _write_atomic(target: Path, write: Any) -> None:
    """Write through a temporary file in the same directory, then rename over ``target``.

    A reader sees the old file or the new one, never half of one; a failed write leaves no
    temporary file behind and raises `ResultsWriteError` naming the file and the reason.
    """
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        crash_point("stored")
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ResultsWriteError(
                f"cannot write {target}: {exc.strerror or exc} (free some space in "
                f"{target.parent.parent} or store the results elsewhere with --out)"
            ) from exc
        raise


def _write_json(target: Path, data: Any) -> None:
    text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
    _write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(target: str | os.PathLike[str], data: Any) -> None:
    """Write JSON to ``target`` through a temporary file and a rename (readers never see half)."""
    _write_json(Path(target), data)


def _write_parquet(target: Path, frame: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ResultsError(f"cannot store the examples table as parquet: {exc}") from exc
    _write_atomic(target, lambda tmp: pq.write_table(table, tmp))


def _dataset_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation config's dataset identity, whatever shape it came in."""
    raw = config.get("dataset")
    dataset: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    if isinstance(raw, str):
        dataset["name"] = raw
    for key, sources in {
        "name": ("dataset_name",),
        "root": ("dataset_root", "data_root", "root"),
        "fingerprint": ("dataset_fingerprint",),
    }.items():
        for source in sources:
            if config.get(source) is not None:
                dataset.setdefault(key, config[source])
    return dataset


class RunWriter:
    """Context manager owning one run directory from creation to a final status.

    >>> with RunWriter(out, model_spec="builtin:tiny", task="dci") as writer:  # doctest: +SKIP
    ...     writer.complete(evaluate("builtin:tiny", "dci"))

    Leaving the block without `complete` (an exception, Ctrl-C, or simply forgetting) records
    ``failed`` / ``interrupted`` with the reason; the exception itself is re-raised.
    """

    def __init__(
        self,
        results_dir: str | os.PathLike[str],
        *,
        model_spec: str,
        task: str,
        config: RunConfig | None = None,
        command: Sequence[str] | None = None,
        sweep: str | None = None,
        cell: str | None = None,
        cell_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.results_dir = Path(results_dir).expanduser()
        config = config if config is not None else RunConfig()
        # The card starts as the config (so a failed run says what it was doing); `complete`
        # adds what the run resolved (the actual device, the model's fingerprint ...).
        self.card = RunCard(
            run_id=new_run_id(model_spec, task, blind=config.blind),
            model={"spec": model_spec, "fingerprint": None, "max_text_tokens": None},
            task=task,
            dataset={"root": str(config.data_root)} if config.data_root is not None else {},
            command=list(command) if command is not None else None,
            config=config.to_dict(),
            sweep=sweep,
            cell=cell,
            cell_options=dict(cell_options or {}),
            **{key: getattr(config, key) for key in CONFIG_CARD_FIELDS},
        )
        self.run_dir: Path | None = None
        self._finished = False

    # The card file is the run's status flag, so it is always replaced whole.
    def _write_card(self) -> None:
        assert self.run_dir is not None, "RunWriter.start() was not called"
        _write_json(self.run_dir / RUN_CARD_FILE, self.card.to_dict())

    def start(self) -> Path:
        """Create the run directory and record the run as ``running``."""
        ensure_writable(self.results_dir)
        card = self.card
        card.versions = package_versions()
        card.git_revision = git_revision()
        card.host = socket.gethostname()
        card.pid = os.getpid()
        card.pid_start = process_start(card.pid)
        card.started_at = utc_now().isoformat()
        while True:  # a 4-hex suffix can collide within one second; draw again
            run_dir = self.results_dir / card.run_id
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                card.run_id = new_run_id(card.model_spec, card.task, blind=card.blind)
            except OSError as exc:
                raise ResultsWriteError(f"cannot create run directory {run_dir}: {exc}") from exc
        self.run_dir = run_dir
        self._write_card()
        return run_dir

    def complete(self, result: RunResultLike) -> StoredRun:
        """Store the result's metrics and examples, then mark the run ``complete``."""
        if self.run_dir is None:
            self.start()
        assert self.run_dir is not None
        metrics = jsonable(result.metrics)
        if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
            raise ResultsError(f"{self.card.run_id}: metrics must map each task to a dict")
        _write_json(self.run_dir / METRICS_FILE, metrics)
        _write_parquet(self.run_dir / EXAMPLES_FILE, result.examples)

        card = self.card
        record = dict(result.config or {})
        # The tasks' metric declarations get their own card key (`RunCard.metric_specs`).
        specs = record.pop("metric_specs", None)
        if isinstance(specs, Mapping):
            card.metric_specs = jsonable(specs)
        card.config = jsonable(record) if record else card.config
        card.tasks = list(metrics)
        if record:
            card.dataset = {**card.dataset, **_dataset_from_config(record)}
        for key in (*CONFIG_CARD_FIELDS, "batch_size", "device"):
            if record.get(key) is not None:
                setattr(card, key, record[key])
        splits = record.get("splits")
        if card.split is None and isinstance(splits, Mapping) and len(set(splits.values())) == 1:
            card.split = next(iter(splits.values()))  # the task's default, as resolved
        if record.get("model_fingerprint") is not None:
            card.model["fingerprint"] = record["model_fingerprint"]
        for key, slot in (
            ("max_text_tokens", "max_text_tokens"),
            ("model_key", "cache_key"),
            ("preprocess_id", "preprocess_id"),
            ("model_provenance", "provenance"),
        ):
            if record.get(key) is not None:
                card.model[slot] = record[key]
        card.skipped = [_skipped_dict(item) for item in result.skipped]
        card.n_skipped = len(card.skipped)
        card.started_at = _iso(result.started_at) or card.started_at
        card.finished_at = _iso(result.finished_at) or utc_now().isoformat()
        card.status = COMPLETE
        card.error = None
        self._write_card()  # last: from here on the run counts as complete
        self._finished = True
        return StoredRun(path=self.run_dir, status=COMPLETE, card=card)

    def fail(self, message: str, *, interrupted: bool = False) -> None:
        """Record the run as ``failed`` (or ``interrupted``) with ``message``."""
        if self.run_dir is None or self._finished:
            return
        self.card.status = INTERRUPTED if interrupted else FAILED
        self.card.error = message
        self.card.finished_at = utc_now().isoformat()
        self._finished = True
        # On a full disk the card may not be writable either: it then still says "running"
        # with this process's pid, which reads as interrupted once the process is gone.
        with contextlib.suppress(ResultsError):
            self._write_card()

    def __enter__(self) -> RunWriter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._finished:
            return
        if exc is None:
            self.fail("the run ended before its results were stored")
        elif isinstance(exc, KeyboardInterrupt):
            self.fail("interrupted by the user", interrupted=True)
        else:
            self.fail(f"{type(exc).__name__}: {exc}")


def _skipped_dict(item: Any) -> dict[str, str]:
    if isinstance(item, Mapping):
        return {"image": str(item.get("image", "")), "reason": str(item.get("reason", ""))}
    to_dict = getattr(item, "to_dict", None)
    if callable(to_dict):
        return {str(k): str(v) for k, v in to_dict().items()}
    return {"image": str(getattr(item, "image", item)), "reason": str(getattr(item, "reason", ""))}


# --------------------------------------------------------------------------- reading


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None off Linux or for no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself hold spaces or parentheses
    return text.rpartition(")")[2].split()


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """``"<boot id>:<start time>"`` of a live process on Linux (/proc), else None.

    With the pid it identifies the process across pid reuse, reboots included: the start time
    (field 22 of /proc/<pid>/stat, clock ticks since boot) is fixed for a process's life.
    Elsewhere (macOS, Windows) the run card stores None and a reused pid passes for the
    writer, so such a run reads as ``running`` until that other process ends.
    """
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"


def writer_gone(card: RunCard) -> str | None:
    """Why a ``running`` card's writer is known to be dead (a kill -9, a crash), or None.

    Only a card written on this host can be checked: a run from another machine sharing the
    results directory stays ``running`` whatever became of its writer.
    """
    if card.pid is None or card.host != socket.gethostname():
        return None
    gone = f"the process (pid {card.pid}) writing it is gone"
    if not _pid_alive(card.pid):
        return gone
    fields = _proc_stat(card.pid)
    if fields is not None and fields[:1] == ["Z"]:  # killed, not yet reaped by its parent
        return gone
    if card.pid_start is not None:
        now = process_start(card.pid)
        if now is not None and now != card.pid_start:
            return f"{gone}; the pid now belongs to another process"
    return None


def read_run(run_dir: str | os.PathLike[str]) -> StoredRun:
    """Read one run directory; never raises for a bad run, returns status ``corrupt`` instead."""
    path = Path(run_dir)
    card_path = path / RUN_CARD_FILE
    if not card_path.is_file():
        return StoredRun(path, CORRUPT, None, f"no {RUN_CARD_FILE}")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return StoredRun(path, CORRUPT, None, f"{RUN_CARD_FILE} is not valid JSON ({exc})")
    try:
        card = RunCard.from_dict(data)
    except (SchemaError, TypeError) as exc:
        return StoredRun(path, CORRUPT, None, f"{RUN_CARD_FILE}: {exc}")

    if card.status == RUNNING:
        # A run whose writer died without a word (SIGKILL, power cut) stays "running" on disk.
        gone = writer_gone(card)
        if gone is not None:
            return StoredRun(path, INTERRUPTED, card, gone)
        return StoredRun(path, RUNNING, card, None)
    if card.status != COMPLETE:
        return StoredRun(path, card.status, card, card.error)

    problem = _complete_run_problem(path)
    if problem is not None:
        return StoredRun(path, CORRUPT, card, f"status is complete but {problem}")
    return StoredRun(path, COMPLETE, card, None)


def _complete_run_problem(path: Path) -> str | None:
    metrics_path = path / METRICS_FILE
    if not metrics_path.is_file():
        return f"{METRICS_FILE} is missing"
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{METRICS_FILE} is not valid JSON ({exc})"
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        return f"{METRICS_FILE} is not {{task: {{metric: value}}}}"
    examples_path = path / EXAMPLES_FILE
    if not examples_path.is_file():
        return f"{EXAMPLES_FILE} is missing"
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.read_schema(examples_path)  # footer only: cheap, and catches truncated files
    except (OSError, pa.ArrowException) as exc:
        return f"{EXAMPLES_FILE} is unreadable ({exc})"
    return None


def list_runs(results_dir: str | os.PathLike[str]) -> list[StoredRun]:
    """Every run directory under ``results_dir``, oldest first, each with its status.

    Hidden entries and plain files are ignored; any other sub-directory is a run (``corrupt``
    when it has no readable card).
    """
    root = Path(results_dir).expanduser()
    if not root.exists():
        raise ResultsError(f"results directory {root} does not exist")
    if not root.is_dir():
        raise ResultsError(f"results directory {root} is not a directory")
    runs = [
        read_run(child)
        for child in sorted(root.iterdir())
        if child.is_dir() and not child.name.startswith(".")
    ]
    return sorted(runs, key=lambda r: ((r.card.started_at or "") if r.card else "", r.path.name))


def resolve_run(
    ref: str | os.PathLike[str], *, results_dir: str | os.PathLike[str] | None = None
) -> StoredRun:
    """A run given as its directory, or as a run id (or unique id prefix) inside ``results_dir``."""
    path = Path(ref).expanduser()
    if (path / RUN_CARD_FILE).is_file() or (path.is_dir() and results_dir is None):
        return read_run(path)
    if results_dir is not None:
        root = Path(results_dir).expanduser()
        if (root / str(ref)).is_dir():
            return read_run(root / str(ref))
        if root.is_dir():
            matches = [
                p for p in sorted(root.iterdir()) if p.is_dir() and p.name.startswith(str(ref))
            ]
            if len(matches) == 1:
                return read_run(matches[0])
            if len(matches) > 1:
                names = ", ".join(p.name for p in matches[:5])
                raise ResultsError(f"run id {ref!r} is ambiguous in {root}: {names}")
        raise ResultsError(f"no run {ref!r} in {root} (and no run directory at {path})")
    raise ResultsError(f"no run directory at {path} (give --results DIR to look up run ids)")


def _require_complete(run: StoredRun) -> Path:
    if run.status != COMPLETE:
        why = f": {run.reason}" if run.reason else ""
        raise ResultsError(f"run {run.path} is {run.status}{why}")
    return run.path


def load_metrics(run: StoredRun) -> dict[str, dict[str, Any]]:
    """``{concrete_task: {metric: value}}`` of a complete run."""
    path = _require_complete(run) / METRICS_FILE
    try:
        data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read metrics ({exc})") from exc
    return data


def load_examples(run: StoredRun, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The per-example table of a complete run, reading only ``columns`` when given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _require_complete(run) / EXAMPLES_FILE
    try:
        if columns is not None:
            available = set(pq.read_schema(path).names)
            unknown = [c for c in columns if c not in available]
            if unknown:
                raise ResultsError(
                    f"{path}: no column {', '.join(map(repr, unknown))} "
                    f"(columns: {', '.join(sorted(available))})"
                )
        table = pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"{path}: cannot read examples ({exc})") from exc
    return table.to_pandas()
