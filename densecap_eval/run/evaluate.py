"""The Python API: `evaluate` a model on a task and get a `RunResult`.

``evaluate_tasks`` runs in four phases over one `RunConfig`:

1. **plan**: expand suites, prepare each concrete task on its dataset, and put every region,
   text and pair it needs into ONE scoring plan (duplicates across tasks merge);
2. **score**: the engine scores the plan once (each unique region and text encoded once, from
   the cache when possible). A pair scorer (VLM) on a retrieval task re-ranks the top
   ``rerank_k`` candidates of the embedding scorer ``rerank_from``: that first stage scores
   its own plan first, and every re-rank pair joins the pair scorer's plan;
3. **compute**: each concrete task computes its metrics from the shared score table and one
   `ComputeContext` built for the run (`compute_context`: seed, resamples, tie rule, the
   model's token limit and first-difference positions, text policy);
4. **record**: one `RunResult` per requested task, with the run record (the config plus what
   was resolved: the model's fingerprint and cache key, the device, the dataset fingerprint,
   and each task's metric declarations, which the store writes to the run card's
   ``metric_specs``).

Under torchrun every rank runs the four phases in step (`densecap_eval.engine.distributed`): each
plans the same tasks (checked), scores its share of the plan's batches and receives the rest,
and rank 0 alone computes the metrics and records; a failure on any rank fails every rank.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from densecap_eval.core.config import ConfigError, RunConfig
from densecap_eval.core.errors import (
    DataAbsentError,
    DatasetError,
    DensecapError,
    TaskUnavailableError,
)
from densecap_eval.run.ranks import everywhere as _everywhere

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.datasets.records import SkippedImage
    from densecap_eval.engine.distributed import Group
    from densecap_eval.engine.plan import ScoreTable, ScoringPlan
    from densecap_eval.scorers.base import (
        EmbeddingScorer,
        LateInteractionScorer,
        PairScorer,
        Scorer,
    )
    from densecap_eval.tasks.base import ComputeContext, TaskInstance

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One model on one requested task (a suite such as ``dci`` holds several concrete tasks).

    ``metrics`` maps each concrete task to its metrics (the shape of metrics.json); ``examples``
    holds one row per scored example of every concrete task (``task`` column); ``config`` is
    the run record: `RunConfig.to_dict` plus what the run resolved (see `evaluate_tasks`).
    """

    model: str
    task: str
    metrics: dict[str, dict[str, Any]]
    examples: pd.DataFrame
    skipped: list[SkippedImage] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Concrete tasks that could not run here (a missing optional tool), with the message.
    unavailable: dict[str, str] = field(default_factory=dict)
    # Those of them whose data is just not under the root (`DataAbsentError`): a partial suite.
    absent: tuple[str, ...] = ()


def evaluate(
    scorer_or_spec: Scorer | str, task: str, *, config: RunConfig | None = None, **options: Any
) -> RunResult:
    """Score a model (a `Scorer` or a spec string) on a task and return its metrics and examples.

    Options are `RunConfig`'s fields (or pass ``config=``): ``data_root``, ``split`` (default
    per task: ``test`` for the DCI subtests, every split for retrieval), ``seed`` (random
    negatives and the bootstrap), ``precision`` (fp32 unless asked), ``text_policy``, ``ties``
    (retrieval tie rule), ``blind`` (every region replaced by uniform grey: the text-prior
    control), ``batch_size``, ``device``, ``use_cache`` / ``cache_dir``, ``strict``, ``n_boot``
    (0 skips the intervals), ``rerank_from`` / ``rerank_k`` (required for retrieval with a pair
    scorer: an embedding scorer or its spec ranks the gallery and the pair scorer re-ranks each
    query's top k). ``rerank_from`` may also be a loaded `Scorer`.

    Under torchrun (``world_size`` > 1, or after `densecap_eval.engine.distributed.init_from_env`),
    call it on every rank: the ranks share the scoring, rank 0's result holds the metrics, the
    other ranks' results hold none (``metrics == {}``).
    """
    (result,) = evaluate_tasks(scorer_or_spec, [task], config=config, **options)
    return result


def evaluate_tasks(
    scorer_or_spec: Scorer | str,
    tasks: Sequence[str],
    *,
    config: RunConfig | None = None,
    **options: Any,
) -> list[RunResult]:
    """`evaluate` for several tasks on one shared plan: one `RunResult` per requested task."""
    from densecap_eval.core.paths import resolve_data_root

    if not tasks:
        raise DensecapError("no task given")
    rerank_scorer = None
    if options.get("rerank_from") is not None and not isinstance(options["rerank_from"], str):
        rerank_scorer = options["rerank_from"]  # a loaded scorer: the config records its spec
        options["rerank_from"] = _spec(rerank_scorer)
    if config is None:
        config = RunConfig.from_options(**options)
    elif options:
        config = config.with_options(**options)
    config = config.with_options(data_root=resolve_data_root(config.data_root))
    group, config = _join_group(config)

    started = datetime.now(timezone.utc)
    scorer = _everywhere(group, partial(_load, scorer_or_spec, config))
    config = _adopt_scorer_precision(config, scorer, explicit=options.get("precision") is not None)
    prepared = _everywhere(group, partial(_plan, scorer, tasks, config))
    if group is not None:
        group.check_same("plan", _plan_digest(prepared))
    if prepared.reranked:
        first = rerank_scorer or config.rerank_from
        rerank_scorer = _everywhere(group, partial(_load, first, config))
        _check_first_stage(rerank_scorer, config)
    elif config.rerank_from is not None:
        # Only a pair scorer on a retrieval task re-ranks: the run card must not say it did.
        log.info("--rerank-from %s is not used here (no retrieval task with a pair scorer)",
                 config.rerank_from)  # fmt: skip
        config, rerank_scorer = config.with_options(rerank_from=None), None
    table, rerank_record = _score(scorer, rerank_scorer, prepared, config, group)
    del rerank_scorer  # free its memory (a GPU) before metrics
    scaling: dict[str, Any] = {}
    if group is not None:
        # Each rank's own items and seconds per phase (the CLI prints the summary).
        scaling = {"backend": group.backend, "ranks": group.throughput()}
        if not group.is_main:  # rank 0 alone computes metrics (from the same table)
            return _scored_elsewhere(scorer, prepared, config, group.rank)
    computed = _compute(table, prepared, compute_context(scorer, config))
    finished = datetime.now(timezone.utc)
    results = _record(scorer, prepared, computed, config, rerank_record, started, finished)
    if scaling:
        for result in results:
            result.config["distributed"] = scaling
    return results


# -- torchrun -------------------------------------------------------------------------------


def _join_group(config: RunConfig) -> tuple[Group | None, RunConfig]:
    """The torch.distributed group this run scores in (None: one process), and the config
    with its ``world_size`` and this rank's device (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    from densecap_eval.engine import distributed

    group = distributed.current()
    if group is None and config.world_size > 1:
        group = distributed.init_from_env(config.device)
        if group is None:
            raise ConfigError(
                f"world_size={config.world_size}, but this process is not one of a torchrun "
                f"job's {config.world_size} (WORLD_SIZE={distributed.env_world_size()}); start "
                "it with torchrun --nproc-per-node N"
            )
    if group is None:
        return None, config
    if config.world_size not in (1, group.world_size):
        raise ConfigError(
            f"world_size={config.world_size}, but the torchrun job has {group.world_size} ranks"
        )
    group.stats.clear()
    device = distributed.rank_device(config.device, group.local_rank)
    return group, config.with_options(world_size=group.world_size, device=device)


def _plan_digest(prepared: _Prepared) -> str:
    """What every rank must agree on: the plans' texts, regions (photo file name, box), pairs."""
    import hashlib

    h = hashlib.sha256()
    for plan in (prepared.first_plan, prepared.plan):
        for text in plan.texts:
            h.update(text.encode("utf-8") + b"\0")
        for region in plan.regions:
            h.update(f"{os.path.basename(region.photo)}#{region.box}\0".encode())
        h.update(plan.pairs.tobytes())
    return h.hexdigest()


def _scored_elsewhere(
    scorer: Scorer, prepared: _Prepared, config: RunConfig, rank: int
) -> list[RunResult]:
    """What a rank other than 0 returns: no metrics (rank 0 has them) and no examples."""
    import pandas as pd

    return [
        RunResult(
            model=_spec(scorer),
            task=name,
            metrics={},
            examples=pd.DataFrame(),
            config={**config.to_dict(), "model": _spec(scorer), "task": name, "rank": rank},
        )
        for name in prepared.requested
    ]


# -- phase 1: plan --------------------------------------------------------------------------


@dataclass
class _Prepared:
    """The tasks of one call prepared on their datasets, and the plans they asked for."""

    requested: list[str]
    members: dict[str, tuple[str, ...]]
    datasets: dict[str, Any]
    instances: dict[str, TaskInstance]
    plan: ScoringPlan
    first_plan: ScoringPlan  # the re-ranking first stage's (empty without re-ranking)
    reranked: list[str]
    unavailable: dict[str, str] = field(default_factory=dict)  # task -> why it cannot run
    absent: set[str] = field(default_factory=set)  # those whose data is not under the root


def _plan(scorer: Scorer, tasks: Sequence[str], config: RunConfig) -> _Prepared:
    from densecap_eval.datasets import check_options, load_dataset
    from densecap_eval.engine.plan import ScoringPlan
    from densecap_eval.run.protocols import run_tasks
    from densecap_eval.tasks import concrete_tasks, get_task, needs_gallery

    # The tasks the protocol runs (``elevater/<key>`` is ``clip_benchmark/<key>`` under
    # clip_benchmark), checked against it; each result and run card names the task run.
    requested = list(run_tasks(tasks, config.protocol).values())
    members = {name: get_task(name).concrete() for name in requested}  # unknown names raise here
    concrete = concrete_tasks(requested)
    reranked: list[str] = []
    if scorer.kind == "pair":
        reranked = [n for n in concrete if needs_gallery(n)]
        if reranked and config.rerank_from is None:
            raise DensecapError(
                f"{reranked[0]}: retrieval with a pair scorer needs --rerank-from SPEC (an "
                f"embedding scorer ranks the gallery, {scorer.spec} re-ranks its top "
                "--rerank-k; scoring every pair needs an embedding scorer)"
            )
    check_options({get_task(n).dataset for n in concrete}, dict(config.dataset_options))
    prepared = _Prepared(requested, members, {}, {}, ScoringPlan(), ScoringPlan(), reranked)
    empty: list[DatasetError] = []  # tasks left with no usable record
    for name in concrete:
        task = get_task(name)
        if task.dataset not in prepared.datasets:
            root = config.root_for(task.dataset)
            options = _loader_options(task.dataset, config)
            prepared.datasets[task.dataset] = load_dataset(
                task.dataset, root=str(root), strict=config.strict, **options
            )
        try:
            # A task that takes a protocol (zero-shot classification) gets the run's.
            extra = {"protocol": config.protocol} if getattr(task, "takes_protocol", False) else {}
            instance = task.prepare(
                prepared.datasets[task.dataset], split=config.split, seed=config.seed, **extra
            )
        except TaskUnavailableError as exc:  # the other tasks still run
            if isinstance(exc, DataAbsentError):  # a partial suite: the caller says it once
                log.info("%s", exc)
                prepared.absent.add(name)
            else:
                log.error("%s", exc)
            prepared.unavailable[name] = str(exc)
            continue
        if _n_examples(instance) == 0:  # nothing left to score must never look like a result
            # A suite's other members are still scored; this one is reported failed with the
            # message (as an unavailable task is); with no member left, the run stops.
            empty.append(_nothing_left(name, prepared.datasets[task.dataset], instance))
            prepared.unavailable[name] = str(empty[-1])
            continue
        instance.add_to_plan(prepared.first_plan if name in reranked else prepared.plan)
        prepared.instances[name] = instance
    if empty and not prepared.instances:
        raise empty[0]
    if prepared.unavailable and not prepared.instances:
        raise TaskUnavailableError(next(iter(prepared.unavailable.values())))
    return prepared


def _loader_options(dataset: str, config: RunConfig) -> dict[str, Any]:
    """A loader's options: its ``--dataset-option`` values, and the run's --cache-dir for a
    loader that keeps files derived from the data in a cache (ELEVATER's decoded photos)."""
    from densecap_eval.datasets import accepted_options, options_for

    options = options_for(dataset, dict(config.dataset_options))
    if config.cache_dir is not None and "cache_dir" in accepted_options(dataset):
        options.setdefault("cache_dir", config.cache_dir)
    return options


def _n_examples(instance: Any) -> int | None:
    """How many examples a prepared task holds (None: a task type that does not say)."""
    for attr in ("examples", "entries", "images"):
        items = getattr(instance, attr, None)
        if items is not None:
            return len(items)
    return None


def _nothing_left(task: str, dataset: Any, instance: Any) -> DatasetError:
    """The error for a task with no usable record: the release, the count and the first reason."""
    skipped = _unique_skipped([*instance.skipped, *getattr(dataset, "skipped", [])])
    title = getattr(dataset, "title", "") or getattr(dataset, "name", "the dataset")
    where = f"{title} at {getattr(dataset, 'root', '?')}"
    split = f" split {instance.split!r}" if instance.split else ""
    if skipped:
        why = f"{len(skipped)} skipped, first: {skipped[0].image}: {skipped[0].reason}"
    else:
        why = "it holds nothing this task uses"
    return DatasetError(
        f"{task}: no usable record in {where}{split} ({why}); fix or re-download the release "
        "(`densecap-eval inspect` lists every skipped record)"
    )


# -- phase 2: score -------------------------------------------------------------------------


def _score(
    scorer: Scorer,
    first_scorer: Scorer | None,
    prepared: _Prepared,
    config: RunConfig,
    group: Group | None,
) -> tuple[ScoreTable, dict[str, Any]]:
    from densecap_eval.engine.cache import EmbeddingCache
    from densecap_eval.engine.engine import score_plan
    from densecap_eval.scorers.base import ScorerFacts

    cache = EmbeddingCache(config.cache_dir) if config.use_cache else None
    options: dict[str, Any] = {
        "text_policy": config.text_policy,
        "batch_size": config.batch_size,
        "cache": cache,
        "blind": config.blind,
        "num_workers": config.num_workers,
        "worker_timeout": config.worker_timeout,
        "progress": config.progress,
        "group": group,
    }
    rerank_record: dict[str, Any] = {}
    if first_scorer is not None:
        first_plan = prepared.first_plan
        log.info("first stage %s: %d photos, %d texts", first_scorer.spec,
                 len(first_plan.regions), len(first_plan.texts))  # fmt: skip
        first_table = score_plan(_for_engine(first_scorer), first_plan, **options)
        for name in prepared.reranked:
            prepared.instances[name].plan_rerank(first_table, prepared.plan, k=config.rerank_k)  # type: ignore[attr-defined]
        rerank_record = {
            "rerank_from": _spec(first_scorer),
            "rerank_fingerprint": _fingerprint(first_scorer),
            "rerank_k": config.rerank_k,
            "rerank_plan": {"regions": len(first_plan.regions), "texts": len(first_plan.texts)},
            "rerank_scorer_config": ScorerFacts.of(first_scorer).config,
        }
    plan = prepared.plan
    log.info("scoring %d regions and %d texts", len(plan.regions), len(plan.texts))
    if config.protocol != "default":  # the protocol's preprocessing (datasets/elevater/protocol.py)
        from densecap_eval.datasets.elevater.protocol import protocol_scorer

        scorer = protocol_scorer(scorer, config.protocol)
    return score_plan(_for_engine(scorer), plan, **options), rerank_record


def _for_engine(scorer: Scorer) -> EmbeddingScorer | PairScorer | LateInteractionScorer:
    """The scorer as the engine takes it: it serves each kind by ``scorer.kind``, which the
    loaders and `_check_first_stage` match to the kind's protocol."""
    return cast("EmbeddingScorer | PairScorer | LateInteractionScorer", scorer)


# -- phase 3: compute -----------------------------------------------------------------------


def compute_context(scorer: Scorer, config: RunConfig) -> ComputeContext:
    """What every task's metrics depend on in this run (built once, shared by every task)."""
    from densecap_eval.metrics.length import diff_position_fn
    from densecap_eval.tasks.base import ComputeContext

    diff_fn, _ = diff_position_fn(scorer)
    return ComputeContext(
        bootstrap_seed=config.seed,
        n_boot=config.n_boot,
        diff_positions=diff_fn,
        ties=config.ties,
        max_text_tokens=scorer.max_text_tokens,
        text_policy=config.text_policy,
    )


def _compute(
    table: ScoreTable, prepared: _Prepared, ctx: ComputeContext
) -> dict[str, tuple[dict[str, Any], pd.DataFrame]]:
    return {name: inst.compute(table, ctx) for name, inst in prepared.instances.items()}


# -- phase 4: record ------------------------------------------------------------------------


def _record(
    scorer: Scorer,
    prepared: _Prepared,
    computed: dict[str, tuple[dict[str, Any], pd.DataFrame]],
    config: RunConfig,
    rerank_record: dict[str, Any],
    started: datetime,
    finished: datetime,
) -> list[RunResult]:
    import pandas as pd

    from densecap_eval.tasks import get_task

    record_base = _run_record(scorer, prepared, config)
    results = []
    for name in prepared.requested:
        unavailable = {m: prepared.unavailable[m] for m in prepared.members[name]
                       if m in prepared.unavailable}  # fmt: skip
        names = tuple(m for m in prepared.members[name] if m not in unavailable)
        if not names:
            results.append(RunResult(_spec(scorer), name, {}, pd.DataFrame(),
                                     config={**record_base, "task": name},
                                     unavailable=unavailable))  # fmt: skip
            continue
        record = _task_record(prepared, record_base, name, names)
        if unavailable:
            record["unavailable"] = unavailable
        if rerank_record and any(m in prepared.reranked for m in names):
            record.update(rerank_record)
            record["reranked_tasks"] = [m for m in names if m in prepared.reranked]
        frames = [computed[m][1] for m in names]
        dataset_names = sorted({get_task(m).dataset for m in names})
        results.append(
            RunResult(
                model=record["model"],
                task=name,
                metrics={m: computed[m][0] for m in names},
                examples=pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                skipped=_unique_skipped(
                    [item for m in names for item in prepared.instances[m].skipped]
                    # records the loaders themselves left out (bad lines, unreadable captions)
                    + [item for d in dataset_names for item in prepared.datasets[d].skipped]
                ),
                config=record,
                started_at=started,
                finished_at=finished,
                unavailable=unavailable,
                absent=tuple(m for m in unavailable if m in prepared.absent),
            )
        )
    return results


def _run_record(scorer: Scorer, prepared: _Prepared, config: RunConfig) -> dict[str, Any]:
    """The part of the run record every requested task shares: the config plus what the run
    resolved (the actual device and batch size, the model's identity, the plan's size)."""
    from densecap_eval.core.batching import default_batch_size
    from densecap_eval.engine.cache import EmbeddingCache, ModelKey
    from densecap_eval.metrics.length import diff_position_fn
    from densecap_eval.scorers.base import ScorerFacts

    plan = prepared.plan
    facts = ScorerFacts.of(scorer)
    device = str(facts.device or config.device)
    record: dict[str, Any] = {
        **config.to_dict(),
        "requested_device": config.device,
        "device": device,
        "batch_size": config.batch_size or default_batch_size(device, scorer.kind),
        "model": _spec(scorer),
        "model_fingerprint": _fingerprint(scorer),
        "model_key": ModelKey.of(scorer).to_dict() if _fingerprint(scorer) else None,
        "model_provenance": facts.provenance or None,
        "preprocess_id": facts.preprocess_id,
        "scorer_kind": scorer.kind,
        "max_text_tokens": scorer.max_text_tokens,
        "cache_dir": str(EmbeddingCache(config.cache_dir).root) if config.use_cache else None,
        "diff_position_method": diff_position_fn(scorer)[1],
        "plan": {"regions": len(plan.regions), "texts": len(plan.texts)},
        "scorer_config": facts.config,
    }
    if scorer.kind == "pair":
        record["plan"]["pairs"] = len(plan.pairs)
    return record


def _task_record(
    prepared: _Prepared, record_base: dict[str, Any], name: str, names: tuple[str, ...]
) -> dict[str, Any]:
    """One requested task's run record: its concrete tasks, datasets, splits, fingerprints,
    protocols and metric declarations (the run card's ``metric_specs``)."""
    from densecap_eval.tasks import get_task

    task_objs = [get_task(m) for m in names]
    dataset_names = sorted({t.dataset for t in task_objs})
    record = {
        **record_base,
        "task": name,
        "tasks": list(names),
        "dataset": dataset_names[0] if len(dataset_names) == 1 else dataset_names,
        "splits": {m: prepared.instances[m].split for m in names},
        "dataset_fingerprint": _dataset_fingerprints(prepared, dataset_names, names),
        # A plugin task from before declarations has none: readers then use the legacy list.
        "metric_specs": {
            m: [spec.to_dict() for spec in t.metrics]
            for m, t in zip(names, task_objs, strict=True)
            if hasattr(t, "metrics")
        },
    }
    protocols = {
        m: t.protocol for m, t in zip(names, task_objs, strict=True) if hasattr(t, "protocol")
    }
    if protocols:
        record["protocols"] = protocols
    return record


# -- helpers --------------------------------------------------------------------------------


def _load(scorer_or_spec: Any, config: RunConfig) -> Scorer:
    from densecap_eval.scorers.base import Scorer

    if isinstance(scorer_or_spec, (str, os.PathLike)):
        from densecap_eval.scorers import load_scorer

        return load_scorer(
            str(scorer_or_spec), config.device, config.precision, text_policy=config.text_policy
        )
    if not isinstance(scorer_or_spec, Scorer):
        raise DensecapError(
            f"evaluate() needs a model spec string or a Scorer, got {type(scorer_or_spec).__name__}"
        )
    return scorer_or_spec


def _adopt_scorer_precision(config: RunConfig, scorer: Scorer, *, explicit: bool) -> RunConfig:
    """A scorer passed in loaded has its own precision: record that, refuse a contradiction."""
    from densecap_eval.scorers.base import ScorerFacts

    actual = ScorerFacts.of(scorer).precision
    if actual is None or actual == config.precision:
        return config
    if explicit:
        raise ConfigError(
            f"precision={config.precision!r} was asked for, but {_spec(scorer)} was loaded in "
            f"{actual}; load it with precision={config.precision!r} or drop the option"
        )
    return config.with_options(precision=actual)


def _check_first_stage(first_scorer: Scorer, config: RunConfig) -> None:
    kind = first_scorer.kind
    if kind not in ("embedding", "late-interaction"):  # both rank a whole gallery
        raise DensecapError(
            f"--rerank-from {first_scorer.spec}: the first stage must be an embedding scorer "
            f"(open_clip:, hf:, ...), not a {kind} scorer"
        )


def _spec(scorer: Scorer) -> str:
    return str(scorer.spec)


def _fingerprint(scorer: Scorer) -> str | None:
    value = scorer.fingerprint
    return str(value) if value is not None else None


def _unique_skipped(items: Any) -> list[SkippedImage]:
    seen: dict[tuple[str, str], SkippedImage] = {}
    for item in items:
        seen.setdefault((item.image, item.reason), item)
    return list(seen.values())


def _dataset_fingerprints(
    prepared: _Prepared, dataset_names: list[str], names: Sequence[str]
) -> str | dict[str, str | None] | None:
    """Each dataset's own fingerprint of the splits these tasks read (None if it has none)."""
    out: dict[str, str | None] = {}
    for dname in dataset_names:
        ds = prepared.datasets[dname]
        used: set[str] = set()
        for m in names:
            split = prepared.instances[m].split
            if split == "all":
                used.update(ds.splits())
            elif split is not None:
                used.add(split)
        fingerprint = getattr(ds, "fingerprint", None)
        out[dname] = fingerprint(sorted(used)) if callable(fingerprint) else None
    return out[dataset_names[0]] if len(out) == 1 else out
