"""Data-parallel scaling: scoring one plan with 1 and with 2 torchrun processes, one thread each.

Workload: a synthetic DCI set (``densecap_eval.synth.generate_dci``) of ``--images`` photos,
test split, the ``dci`` suite's four subtests in one `ScoringPlan`; model ``--model`` (default
``builtin:tiny``), no cache. Each process runs ``OMP_NUM_THREADS=1``.

Two numbers per process count, best of ``--repeat``:

- **scoring**: `score_plan` on every rank, timed on rank 0 from a barrier before it to its
  return (every rank holds the whole table then: the shards and the gather included);
- **end to end**: the wall time of ``torchrun ... -m densecap_eval run`` (start-up, loading,
  planning, scoring, metrics with ``--bootstrap 0``, writing the run).

Scaling efficiency = T(1) / (2 x T(2)). On this machine (2 cores shared by everything else
running) the figures are only as steady as its load; the load average is printed with them.

    python benchmarks/scaling.py --images 24 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    """One rank (run by torchrun): plan, then time `score_plan` from a common barrier."""
    import torch

    from densecap_eval.datasets import load_dataset
    from densecap_eval.engine import ScoringPlan, distributed, score_plan
    from densecap_eval.scorers import load_scorer
    from densecap_eval.tasks import concrete_tasks, get_task

    torch.set_num_threads(1)
    group = distributed.init_from_env("cpu")
    scorer = load_scorer(args.model, device="cpu")
    dataset = load_dataset("dci", root=str(args.root))
    plan = ScoringPlan()
    for name in concrete_tasks(["dci"]):
        get_task(name).prepare(dataset, split="test", seed=0).add_to_plan(plan)
    if group is not None:
        group.all_gather(None)  # barrier
    start = time.perf_counter()
    score_plan(scorer, plan, batch_size=args.batch_size, cache=None, progress=False, group=group)
    seconds = time.perf_counter() - start
    if group is None or group.is_main:
        sizes = {"regions": len(plan.regions), "texts": len(plan.texts)}
        print(json.dumps({"scoring_s": seconds, **sizes}), flush=True)
    distributed.shutdown()


def launch(nproc: int, *command: str) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", *command]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from densecap_eval.synth import generate_dci

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dci"
        generate_dci(root, images=args.images, seed=0, split_sizes=(0, 0, args.images))
        me = str(Path(__file__).resolve())
        results: dict[int, dict[str, float]] = {}
        sizes: dict[str, int] = {}
        for nproc in (1, 2):
            scoring, e2e = [], []
            for i in range(args.repeat):
                _, out = launch(nproc, me, "--worker", "--root", str(root),
                                "--model", args.model, "--batch-size", str(args.batch_size))  # fmt: skip
                line = json.loads(out.strip().splitlines()[-1])
                scoring.append(line["scoring_s"])
                sizes = {"regions": line["regions"], "texts": line["texts"]}
                seconds, _ = launch(nproc, "-m", "densecap_eval", "run", "--model", args.model,
                                    "--data-root", str(root), "--out", f"{tmp}/out{nproc}-{i}",
                                    "--no-cache", "--bootstrap", "0", "--device", "cpu",
                                    "--batch-size", str(args.batch_size))  # fmt: skip
                e2e.append(seconds)
            results[nproc] = {"scoring_s": min(scoring), "end_to_end_s": min(e2e)}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.model}, {args.images} photos ({sizes['regions']} regions, {sizes['texts']} "
          f"texts), batch {args.batch_size}, best of {args.repeat}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")  # fmt: skip
    print(f"{'':14}{'1 process':>12}{'2 processes':>14}{'speed-up':>10}{'efficiency':>12}")
    for key, label in (("scoring_s", "scoring"), ("end_to_end_s", "end to end")):
        one, two = results[1][key], results[2][key]
        print(f"{label:14}{one:>11.2f}s{two:>13.2f}s{one / two:>9.2f}x{one / (2 * two):>11.0%}")


if __name__ == "__main__":
    main()
