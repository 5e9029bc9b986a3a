"""The versioned schema of a stored run: file names, statuses and the run card.

A run directory holds ``run.json`` (the run card below), ``metrics.json``
(``{concrete_task: {metric: value}}``) and ``examples.parquet`` (one row per scored example).
Only `densecap_eval.results.store` writes or reads these files; bump `SCHEMA_VERSION` whenever
a reader of the old layout would misread the new one.

The run card also holds each task's metric declarations (`MetricSpec`, ``metric_specs``): what
report, compare, the sweep grids and the dashboard show, in which order, which way is better and
which examples column holds each outcome. Cards written before tasks declared their metrics lack
the key and are read with `legacy_metric_specs` (the same tables as before).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MetricSpec:
    """A metric a task declares (as lm-eval's ``metric_list``): what report, compare, the sweep
    grids and the dashboard show, in the order declared, and which way is better.

    ``column`` is the per-example column of examples.parquet holding the outcome (a bool per
    example; None: no per-example outcome, so compare skips it); ``tie_column`` the one that
    says the outcome was decided on equal scores. A non-``headline`` metric is declared for its
    direction and column but kept out of the headline tables.
    """

    name: str
    higher_is_better: bool = True
    column: str | None = None
    tie_column: str | None = None
    headline: bool = True
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def merge_specs(groups: Iterable[Sequence[MetricSpec]]) -> tuple[MetricSpec, ...]:
    """The specs of several tasks or runs as one list: first declaration of a name wins, in
    the order met."""
    merged: dict[str, MetricSpec] = {}
    for specs in groups:
        for spec in specs:
            merged.setdefault(spec.name, spec)
    return tuple(merged.values())


# -- runs stored before tasks declared their metrics ------------------------------------------
# Such run cards have no ``metric_specs``: their headline metrics, in this display order, with
# the per-example outcome in ``<metric>_correct`` (or ``correct_<metric>``) and the tie in
# ``<metric>_tie`` (or ``tie_<metric>``) where examples.parquet has those columns.
LEGACY_HEADLINE_METRICS: tuple[str, ...] = (
    "scm",
    "neg",
    "scm_per_image",
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "neg_visible",  # generated negatives: Neg over the edits the model can see
    "macro_accuracy",  # ARO VG-Relation / VG-Attribution
    "precision_at_1",  # ARO order tasks
    "accuracy",  # SugarCrepe categories, VL-CheckList groups
    "text",  # Winoground
    "image",
    "group",
    "zeroshot",  # ELEVATER zero-shot classification: each dataset's own metric
    "acc1",  # CLIP_benchmark zero-shot classification
    "acc5",
    "mean_per_class_recall",
)


def _legacy_column(metric: str, kind: str, columns: Sequence[str] | None) -> str | None:
    names = (f"{metric}_{kind}", f"{kind}_{metric}")
    if columns is None:
        return names[0]
    return next((name for name in names if name in columns), None)


def legacy_metric_specs(columns: Sequence[str] | None = None) -> tuple[MetricSpec, ...]:
    """The specs a run card without declarations is read with (see above). ``columns``: the
    run's examples.parquet columns, to find which naming its outcome columns use."""
    return tuple(
        MetricSpec(
            name,
            column=_legacy_column(name, "correct", columns),
            tie_column=_legacy_column(name, "tie", columns),
        )
        for name in LEGACY_HEADLINE_METRICS
    )


def headline_names(specs: Iterable[MetricSpec]) -> list[str]:
    return [spec.name for spec in specs if spec.headline]


SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1,)

RUN_CARD_FILE = "run.json"
METRICS_FILE = "metrics.json"
EXAMPLES_FILE = "examples.parquet"

RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"
INTERRUPTED = "interrupted"
CORRUPT = "corrupt"
WRITTEN_STATUSES: tuple[str, ...] = (RUNNING, COMPLETE, FAILED, INTERRUPTED)
"""Statuses a writer puts in run.json; `CORRUPT` is only ever a reader's verdict."""

# Card keys a reader cannot do without; everything else has a default.
REQUIRED_CARD_KEYS: tuple[str, ...] = ("schema_version", "run_id", "status", "model", "task")


class SchemaError(ValueError):
    """A run card does not follow the schema (the store turns this into a `corrupt` run)."""


@dataclass
class RunCard:
    """Everything needed to know what a stored run measured and how (``run.json``).

    ``model`` is ``{"spec", "fingerprint", "max_text_tokens"}``, ``dataset`` is
    ``{"name", "root", "fingerprint"}``; ``config`` keeps the evaluation's full configuration as
    the library reported it, so nothing is lost when a field here has no slot for it.
    """

    run_id: str
    model: dict[str, Any]
    task: str
    status: str = RUNNING
    schema_version: int = SCHEMA_VERSION
    tasks: list[str] = field(default_factory=list)  # concrete tasks, known once complete
    blind: bool = False
    dataset: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    text_policy: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    device: str | None = None
    seed: int | None = None
    ties: str | None = None  # retrieval tie rule (None: runs from before it was an option)
    protocol: str | None = None  # zero-shot protocol (config.PROTOCOLS); None: older runs
    world_size: int | None = None
    n_boot: int | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    git_revision: str | None = None
    host: str | None = None
    pid: int | None = None
    # "<boot id>:<start time in clock ticks>" of the writing process (Linux), so a reader can
    # tell the writer from a later process that got the same pid; None elsewhere.
    pid_start: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    n_skipped: int = 0
    command: list[str] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    # The sweep cell this run computed (`densecap_eval.run.sweep`): the sweep's name, the cell's id
    # and the grid options that set it apart; None / {} for a plain `run`.
    sweep: str | None = None
    cell: str | None = None
    cell_options: dict[str, Any] = field(default_factory=dict)
    # Each concrete task's declared metrics (`MetricSpec.to_dict`, in display order); {} for
    # runs stored before tasks declared them (read with `legacy_metric_specs`).
    metric_specs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def model_spec(self) -> str:
        return str(self.model.get("spec", ""))

    @property
    def label(self) -> str:
        """How reports name the run's model: the spec, with the settings that set this run
        apart from a default one (a non-default text policy, precision, tie rule or protocol, blind), so
        two runs of one model under different settings read differently in every table."""
        marks = [
            value
            for value, default in (
                (self.text_policy, "truncate"),
                (self.precision, "fp32"),
                (f"ties {self.ties}" if self.ties else None, "ties pessimistic"),
                (f"protocol {self.protocol}" if self.protocol else None, "protocol default"),
            )
            if value is not None and value != default
        ]
        if self.blind:
            marks.append("blind")
        return f"{self.model_spec} ({', '.join(marks)})" if marks else self.model_spec

    def specs_for(self, task: str, columns: Sequence[str] | None = None) -> tuple[MetricSpec, ...]:
        """The metrics ``task`` declared in this run, or the legacy ones for an older run."""
        declared = self.metric_specs.get(task)
        if declared is None:
            return legacy_metric_specs(columns)
        return tuple(MetricSpec.from_dict(item) for item in declared)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema_version": data.pop("schema_version"), **jsonable(data)}

    @classmethod
    def from_dict(cls, data: Any) -> RunCard:
        """Validate a parsed run.json; raises `SchemaError` naming the problem."""
        if not isinstance(data, Mapping):
            raise SchemaError("run.json is not a JSON object")
        missing = [key for key in REQUIRED_CARD_KEYS if key not in data]
        if missing:
            raise SchemaError(f"run.json lacks {', '.join(missing)}")
        version = data["schema_version"]
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise SchemaError(
                f"unknown schema_version {version!r} (this densecap-eval reads "
                f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}); upgrade densecap-eval"
            )
        if data["status"] not in WRITTEN_STATUSES:
            raise SchemaError(f"unknown status {data['status']!r}")
        if not isinstance(data["model"], Mapping) or "spec" not in data["model"]:
            raise SchemaError("run.json 'model' has no 'spec'")
        if not isinstance(data["task"], str) or not isinstance(data["run_id"], str):
            raise SchemaError("run.json 'task' and 'run_id' must be strings")
        # Keys a newer writer of the same schema version may add are ignored, not fatal.
        known = {f.name for f in fields(cls)}
        kwargs = {key: value for key, value in data.items() if key in known}
        kwargs["model"] = dict(data["model"])
        return cls(**kwargs)


# How reports mark DCI subtest results of a run that `reference_exact` says no to.
NOT_REFERENCE_EXACT = "not reference-exact"


def reference_exact(card: RunCard) -> bool:
    """Whether the run was scored in fp32, so its DCI subtests can match the reference exactly.

    fp16 / bf16 scores round differently and can flip ties and near-ties of SCM and Neg. A card
    without a precision (runs from before it was recorded) counts as fp32.
    """
    return card.precision is None or card.precision == "fp32"


def jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and non-finite floats into strict-JSON values.

    NaN and infinities become ``null`` so that every stored file is standard JSON.
    """
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without importing numpy
    if callable(tolist):
        return jsonable(tolist())
    isoformat = getattr(value, "isoformat", None)  # datetimes
    if callable(isoformat):
        return isoformat()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} value {value!r} as JSON")
