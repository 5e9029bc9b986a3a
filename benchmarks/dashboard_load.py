"""How fast the dashboard opens over a big results store: 200 runs x 10,000 examples.

    python benchmarks/dashboard_load.py [--runs 200] [--examples 10000] [--dir DIR]

The store is SYNTHETIC: every number in it (scores, correct flags, token counts, metrics and
intervals) is fabricated at random, because only the volume matters for a load benchmark. It is
written through the real store writer (`RunWriter`), so the files have the real layout, and
read back through the same functions the pages call:

* leaderboard data: `list_runs` + every run's metrics.json -> `leaderboard_rows` -> the shown table
* one explorer view: one run's explorer columns only -> one task -> a filter -> one page
* a headless `AppTest` run of the leaderboard, charts (12 models by default), explorer and
  run-card pages, each with a cold and then a warm cache

Times are wall-clock seconds on this machine; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("dci/all_swaps", "dci/all_swaps_pick5", "dci/base_swaps", "dci/all_hardest")
MODELS = ("open_clip:ViT-B-32/openai", "open_clip:ViT-L-14/openai", "hf:google/siglip-base",
          "builtin:tiny", "lora:adapters/dac@open_clip:ViT-B-32/openai")  # fmt: skip
WORDS = "a red blue green small large ball box car house sky grass above below left of the".split()


@dataclass
class FakeResult:
    """What `RunWriter.complete` stores; every value made up (see the module docstring)."""

    metrics: dict[str, dict[str, Any]]
    examples: Any
    skipped: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    started_at: Any = None
    finished_at: Any = None


def fabricate_examples(n: int, rng: random.Random) -> Any:
    import numpy as np
    import pandas as pd

    gen = np.random.default_rng(rng.randrange(2**32))
    per_task = n // len(TASKS)
    tasks = np.repeat(TASKS, per_task).tolist() + [TASKS[0]] * (n - per_task * len(TASKS))
    images = [f"synth_{i // 6:06d}.json" for i in range(n)]
    keys = ["base" if i % 6 == 0 else f"m-{i % 6}-sc" for i in range(n)]
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(8, 120))) for _ in range(64)]
    pos = gen.integers(0, len(sentences), n)
    neg_scores = gen.random(n)
    pos_scores = gen.random(n)
    tokens = gen.integers(10, 300, n)
    return pd.DataFrame(
        {
            "task": tasks,
            "image": images,
            "entry_key": keys,
            "box": [None if k == "base" else [10, 20, 300, 260] for k in keys],
            "positives": [[sentences[p]] for p in pos],
            "negative": [sentences[(p + 1) % len(sentences)] for p in pos],
            "negative_key": [
                f"{rng.choice(('swaps', 'layout', 'basic'))}_{i % 3}" for i in range(n)
            ],
            "pos_scores": [[float(s)] for s in pos_scores],
            "neg_score": neg_scores,
            "scm_correct": gen.random(n) < 0.4,
            "neg_correct": pos_scores > neg_scores,
            "pos_tokens": [[int(t)] for t in tokens],
            "neg_tokens": tokens + 1,
            "pos_cut": [[bool(t > 77)] for t in tokens],
            "neg_cut": tokens + 1 > 77,
            "diff_position": gen.integers(1, 200, n),
        }
    )


def fabricate_metrics(rng: random.Random, n: int) -> dict[str, dict[str, Any]]:
    metrics = {}
    for task in TASKS:
        values = {"scm": rng.random(), "neg": rng.random(), "scm_per_image": rng.random()}
        metrics[task] = {
            **values,
            "n": n // len(TASKS),
            "ci": {k: [max(0.0, v - 0.03), min(1.0, v + 0.03)] for k, v in values.items()},
        }
    return metrics


def write_store(root: Path, runs: int, examples: int) -> None:
    from densecap_eval.results.store import RunWriter

    rng = random.Random(0)
    template = fabricate_examples(examples, rng)
    for i in range(runs):
        frame = template.copy()
        flip = random.Random(i).random()
        frame["neg_correct"] = frame["neg_score"].rank(pct=True) > flip  # differs run to run
        model = f"{MODELS[i % len(MODELS)]}#{i // len(MODELS)}"
        result = FakeResult(fabricate_metrics(rng, examples), frame,
                            config={"dataset": {"name": "dci", "root": "/nonexistent"},
                                    "split": "test"})  # fmt: skip
        with RunWriter(root, model_spec=model, task="dci") as writer:
            writer.complete(result)


@contextmanager
def timed(label: str, results: dict[str, float]):
    start = time.perf_counter()
    yield
    results[label] = time.perf_counter() - start
    print(f"{label:55s} {results[label]:7.2f} s", flush=True)


def measure(root: Path) -> dict[str, float]:
    from densecap_eval.dashboard import data, explorer

    times: dict[str, float] = {}
    with timed("leaderboard data (list_runs + metrics, uncached)", times):
        runs = data.read_store(root)
        frame = data.leaderboard_rows(runs)
        data.display_leaderboard(frame)
    print(f"  {len(runs)} runs, {len(frame)} leaderboard rows")
    run = runs[len(runs) // 2]
    with timed("explorer view (one run, its columns, filter, page)", times):
        columns = explorer.explorer_columns(data.example_columns(run))
        from densecap_eval.results.store import load_examples

        examples = load_examples(run, columns=columns)
        part = examples[examples["task"] == TASKS[0]]
        shown = explorer.filter_examples(part, explorer.ExampleFilter(outcome="wrong"))
        explorer.page_of(shown, 1)
    print(f"  {len(examples)} examples read, {len(part)} of the task, {len(shown)} wrong")

    from streamlit.testing.v1 import AppTest

    os.environ[data.ENV_VAR] = str(root)
    app = str(Path(data.__file__).with_name("app.py"))
    for page in ("leaderboard", "charts", "explorer", "cards"):
        for state in ("cold", "warm"):
            at = AppTest.from_file(app, default_timeout=300)
            at.query_params["page"] = page
            with timed(f"AppTest: {page} page, {state} cache", times):
                at.run()
            if at.exception:
                raise SystemExit(f"the {page} page raised: {at.exception[0].value}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="keep the store here (reused)")
    args = parser.parse_args(argv)

    root = args.dir or Path(tempfile.mkdtemp(prefix="densecap-dashboard-bench-"))
    try:
        existing = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        if len(existing) < args.runs:
            start = time.perf_counter()
            write_store(root, args.runs - len(existing), args.examples)
            print(f"wrote {args.runs} runs x {args.examples} examples to {root} "
                  f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
        measure(root)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
