"""The Python API: `evaluate` a model on a task and get a `RunResult`.

``evaluate_tasks`` builds ONE scoring plan for all requested tasks (suites expanded, duplicates
dropped), scores it once (each unique region and text encoded once, from the cache when
possible), then lets each concrete task compute its metrics from the shared score table.

A pair scorer (VLM) on a retrieval task re-ranks the top ``rerank_k`` candidates of the
embedding scorer ``rerank_from`` (see tasks/retrieval.py): the first stage scores its own plan
(cache allowed) first, then every re-rank pair joins the one plan the pair scorer scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.errors import DensecapError

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.datasets.dci.records import SkippedImage

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One model on one requested task (a suite such as ``dci`` holds several concrete tasks).

    ``metrics`` maps each concrete task to its metrics (the shape of metrics.json); ``examples``
    holds one row per scored example of every concrete task (``task`` column).
    """

    model: str
    task: str
    metrics: dict[str, dict[str, Any]]
    examples: pd.DataFrame
    skipped: list[SkippedImage] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None


def evaluate(
    scorer_or_spec: Any,
    task: str,
    *,
    data_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    text_policy: str = "truncate",
    blind: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    strict: bool = False,
    n_boot: int = 1000,
    progress: bool | None = None,
    rerank_from: Any = None,
    rerank_k: int = 10,
) -> RunResult:
    """Score a model (a `Scorer` or a spec string) on a task and return its metrics and examples.

    ``split`` defaults per task (``test`` for the DCI subtests, every split for retrieval).
    ``seed`` seeds random negative choices and the bootstrap. ``blind`` replaces every image
    region by uniform grey (the text-prior control). ``n_boot=0`` skips the intervals.
    ``rerank_from`` (an embedding scorer or its spec) is required for retrieval tasks with a
    pair scorer, which then re-ranks each query's top ``rerank_k`` first-stage candidates; it
    is ignored for embedding scorers and for the DCI subtests. ``blind``, ``batch_size``,
    ``device``, ``precision`` and the cache apply to both stages.
    """
    (result,) = evaluate_tasks(
        scorer_or_spec,
        [task],
        data_root=data_root,
        split=split,
        seed=seed,
        batch_size=batch_size,
        device=device,
        precision=precision,
        text_policy=text_policy,
        blind=blind,
        cache_dir=cache_dir,
        use_cache=use_cache,
        strict=strict,
        n_boot=n_boot,
        progress=progress,
        rerank_from=rerank_from,
        rerank_k=rerank_k,
    )
    return result


def evaluate_tasks(
    scorer_or_spec: Any,
    tasks: Sequence[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    text_policy: str = "truncate",
    blind: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    strict: bool = False,
    n_boot: int = 1000,
    progress: bool | None = None,
    rerank_from: Any = None,
    rerank_k: int = 10,
) -> list[RunResult]:
    """`evaluate` for several tasks on one shared plan: one `RunResult` per requested task."""
    import pandas as pd

    from densecap_eval.datasets import load_dataset
    from densecap_eval.engine.cache import EmbeddingCache
    from densecap_eval.engine.engine import default_batch_size, score_plan
    from densecap_eval.engine.plan import ScoringPlan
    from densecap_eval.metrics.length import diff_position_fn
    from densecap_eval.paths import resolve_data_root
    from densecap_eval.scorers.text_policy import check_policy
    from densecap_eval.tasks import concrete_tasks, get_task

    if not tasks:
        raise DensecapError("no task given")
    check_policy(text_policy)
    if n_boot < 0:
        raise DensecapError(f"the number of bootstrap resamples must be >= 0, got {n_boot}")
    if isinstance(rerank_k, bool) or not isinstance(rerank_k, int) or rerank_k < 1:
        raise DensecapError(f"--rerank-k must be an integer >= 1, got {rerank_k!r}")
    requested = list(dict.fromkeys(tasks))
    members = {name: get_task(name).concrete() for name in requested}  # unknown names raise here
    concrete = concrete_tasks(requested)
    root = resolve_data_root(data_root)

    started = datetime.now(timezone.utc)
    scorer = _load(scorer_or_spec, device=device, precision=precision, text_policy=text_policy)
    reranked: list[str] = []
    if getattr(scorer, "kind", "embedding") == "pair":
        reranked = [n for n in concrete if getattr(get_task(n), "protocol", None) is not None]
        if reranked and rerank_from is None:
            raise DensecapError(
                f"{reranked[0]}: retrieval with a pair scorer needs --rerank-from SPEC (an "
                f"embedding scorer ranks the gallery, {scorer.spec} re-ranks its top "
                "--rerank-k; scoring every pair needs an embedding scorer)"
            )
    first_scorer = None
    if reranked:
        first_scorer = _load(
            rerank_from, device=device, precision=precision, text_policy=text_policy
        )
        first_kind = getattr(first_scorer, "kind", "embedding")
        if first_kind != "embedding":
            raise DensecapError(
                f"--rerank-from {getattr(first_scorer, 'spec', rerank_from)}: the first stage "
                f"must be an embedding scorer (open_clip:, hf:, ...), not a {first_kind} scorer"
            )

    datasets: dict[str, Any] = {}
    instances = {}
    plan = ScoringPlan()
    first_plan = ScoringPlan()
    for name in concrete:
        task = get_task(name)
        if task.dataset not in datasets:
            datasets[task.dataset] = load_dataset(task.dataset, root=str(root), strict=strict)
        instance = task.prepare(datasets[task.dataset], split=split, seed=seed)
        instance.add_to_plan(first_plan if name in reranked else plan)
        instances[name] = instance

    cache = EmbeddingCache(cache_dir) if use_cache else None
    rerank_config: dict[str, Any] = {}
    if first_scorer is not None:
        log.info("first stage %s: %d photos, %d texts", first_scorer.spec,
                 len(first_plan.regions), len(first_plan.texts))  # fmt: skip
        first_table = score_plan(
            first_scorer,
            first_plan,
            text_policy=text_policy,  # type: ignore[arg-type]
            batch_size=batch_size,
            cache=cache,
            blind=blind,
            progress=progress,
        )
        for name in reranked:
            instances[name].plan_rerank(first_table, plan, k=rerank_k)
        rerank_config = {
            "rerank_from": str(getattr(first_scorer, "spec", type(first_scorer).__name__)),
            "rerank_fingerprint": _fingerprint(first_scorer),
            "rerank_k": rerank_k,
            "rerank_plan": {"regions": len(first_plan.regions), "texts": len(first_plan.texts)},
            "rerank_scorer_config": _scorer_config(first_scorer),
        }
        # Done with the first stage: free its memory (a GPU) before the pair scorer runs.
        del first_table, first_scorer
    log.info("scoring %d regions and %d texts for %s", len(plan.regions), len(plan.texts), concrete)
    table = score_plan(
        scorer,
        plan,
        text_policy=text_policy,  # type: ignore[arg-type]
        batch_size=batch_size,
        cache=cache,
        blind=blind,
        progress=progress,
    )
    diff_fn, diff_method = diff_position_fn(scorer)
    computed = {
        name: inst.compute(table, bootstrap_seed=seed, n_boot=n_boot, diff_positions=diff_fn)
        for name, inst in instances.items()
    }
    finished = datetime.now(timezone.utc)

    spec = str(getattr(scorer, "spec", type(scorer).__name__))
    config_base: dict[str, Any] = {
        "model": spec,
        "model_fingerprint": _fingerprint(scorer),
        "scorer_kind": getattr(scorer, "kind", None),
        "max_text_tokens": getattr(scorer, "max_text_tokens", None),
        "data_root": str(root),
        "split": split,
        "seed": seed,
        "batch_size": batch_size or default_batch_size(getattr(scorer, "device", "cpu")),
        "precision": _describe(getattr(scorer, "precision", None), precision),
        "device": _describe(getattr(scorer, "device", None), device),
        "text_policy": text_policy,
        "blind": blind,
        "n_boot": n_boot,
        "use_cache": use_cache,
        "cache_dir": str(cache.root) if cache is not None else None,
        "diff_position_method": diff_method,
        "plan": {"regions": len(plan.regions), "texts": len(plan.texts)},
        "scorer_config": _scorer_config(scorer),
    }
    if getattr(scorer, "kind", None) == "pair":
        config_base["plan"]["pairs"] = len(plan.pairs)

    results = []
    for name in requested:
        names = members[name]
        task_objs = [get_task(m) for m in names]
        dataset_names = sorted({t.dataset for t in task_objs})
        frames = [computed[m][1] for m in names]
        config = {
            **config_base,
            "task": name,
            "tasks": list(names),
            "dataset": dataset_names[0] if len(dataset_names) == 1 else dataset_names,
            "splits": {m: instances[m].split for m in names},
            "dataset_fingerprint": _dataset_fingerprints(datasets, dataset_names, instances, names),
        }
        protocols = {
            m: t.protocol for m, t in zip(names, task_objs, strict=True) if hasattr(t, "protocol")
        }
        if protocols:
            config["protocols"] = protocols
        if rerank_config and any(m in reranked for m in names):
            config.update(rerank_config)
            config["reranked_tasks"] = [m for m in names if m in reranked]
        results.append(
            RunResult(
                model=spec,
                task=name,
                metrics={m: computed[m][0] for m in names},
                examples=pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                skipped=_unique_skipped(inst for m in names for inst in instances[m].skipped),
                config=config,
                started_at=started,
                finished_at=finished,
            )
        )
    return results


def _load(
    scorer_or_spec: Any, *, device: str | None, precision: str | None, text_policy: str
) -> Any:
    if isinstance(scorer_or_spec, str):
        from densecap_eval.scorers import load_scorer

        return load_scorer(scorer_or_spec, device, precision, text_policy=text_policy)  # type: ignore[arg-type]
    if not callable(getattr(scorer_or_spec, "count_tokens", None)):
        raise DensecapError(
            f"evaluate() needs a model spec string or a Scorer, got {type(scorer_or_spec).__name__}"
        )
    return scorer_or_spec


def _describe(actual: Any, requested: str | None) -> str | None:
    if actual is not None:
        return str(actual)
    return requested


def _scorer_config(scorer: Any) -> dict[str, Any]:
    """What a scorer says about its own options (a VLM's template, answer, reduce ...)."""
    value = getattr(scorer, "config", None)
    return dict(value) if isinstance(value, Mapping) else {}


def _fingerprint(scorer: Any) -> str | None:
    value = getattr(scorer, "fingerprint", None)
    return str(value) if value is not None else None


def _unique_skipped(items: Any) -> list[SkippedImage]:
    seen: dict[tuple[str, str], SkippedImage] = {}
    for item in items:
        seen.setdefault((item.image, item.reason), item)
    return list(seen.values())


def dataset_fingerprint(dataset: Any, splits: Sequence[str]) -> str | None:
    """sha256 of splits.json's bytes and the name and byte size of each record of ``splits``.

    Cheap (one stat per record) and unchanged by copying the release (no mtimes). A dataset
    object with its own ``fingerprint`` attribute is trusted instead.
    """
    own = getattr(dataset, "fingerprint", None)
    if isinstance(own, str):
        return own
    base = getattr(dataset, "base", None)
    if base is None or not callable(getattr(dataset, "record_path", None)):
        return None
    digest = hashlib.sha256()
    splits_file = Path(base) / "splits.json"
    digest.update(splits_file.read_bytes())
    for split in sorted(set(splits)):
        for name in dataset.split(split):
            path = dataset.record_path(name)
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            digest.update(json.dumps([split, name, size]).encode("utf-8"))
    return digest.hexdigest()


def _dataset_fingerprints(
    datasets: dict[str, Any],
    dataset_names: list[str],
    instances: dict[str, Any],
    names: Sequence[str],
) -> str | dict[str, str | None] | None:
    out: dict[str, str | None] = {}
    for dname in dataset_names:
        ds = datasets[dname]
        used: set[str] = set()
        for m in names:
            split = instances[m].split
            used.update(ds.splits() if split == "all" else [split])
        out[dname] = dataset_fingerprint(ds, sorted(used))
    return out[dataset_names[0]] if len(out) == 1 else out
