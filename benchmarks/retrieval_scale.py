"""Retrieval ranks at 10k, 30k and 100k pairs in flat memory: seconds and peak RSS per size.

Embeddings are drawn (no model): N unit image and N unit text embeddings of size ``--dim``,
text i belonging to image i, with a few exact duplicates planted. Each size runs in a fresh
process through the path the retrieval task uses (a `ScoreTable` with the CLIP logit, its row
strips, `stream_gallery` for recall ranks under both tie rules and the top-k candidates a
re-ranker would get), and reports wall seconds of the ranking and the process's peak RSS.
The full matrix would be N^2 x 4 bytes (40 GB at 100k); the streaming pass holds one strip.

    python benchmarks/retrieval_scale.py                   # 10k, 30k, 100k on the CPU
    python benchmarks/retrieval_scale.py --sizes 2000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _one(n: int, *, dim: int, k: int, device: str, threads: int | None) -> dict[str, object]:
    import numpy as np
    import torch

    from densecap_eval.engine.plan import ScoreTable
    from densecap_eval.metrics.retrieval import recall_at
    from densecap_eval.metrics.retrieval_stream import stream_gallery, strip_rows

    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(n)
    img = rng.standard_normal((n, dim), dtype=np.float32)
    txt = rng.standard_normal((n, dim), dtype=np.float32)  # in place: no N x dim temporaries
    txt *= 1.5
    txt += img  # a noisy match
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    text_slot = np.arange(n)
    dup = rng.choice(n, size=n // 100, replace=False)  # planted exact duplicates
    txt[dup] = txt[0]
    text_slot[dup] = 0
    text_slot[0] = 0
    on_device: dict[int, torch.Tensor] = {}

    def logit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if device == "cpu":
            return (a @ b.T).mul_(100.0)  # in place, as TwoTowerScorer.logits
        bd = on_device.setdefault(id(b), b.to(device))  # the gallery side moves once
        return (a.to(device) @ bd.T).mul_(100.0).cpu()

    table = ScoreTable(
        text_tokens=np.zeros(n, dtype=np.int64),
        text_cut=np.zeros(n, dtype=bool),
        image_embeddings=img,
        text_embeddings=txt,
        logit_fn=logit,
        text_slot=text_slot,
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu = time.perf_counter(), time.process_time()
    idx = np.arange(n)
    out = stream_gallery(table.strips(idx, idx), n, n, idx, k=k)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu  # all threads: what the CPUs spent, whoever else ran
    ranks = out.ranks["pessimistic"]
    return {
        "n": n,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_ranking_mb": round(before),
        "strip_rows": strip_rows(n),
        "i2t_r1": recall_at(ranks.i2t, 1),
        "t2i_r1": recall_at(ranks.t2i, 1),
        "i2t_tied": int(ranks.i2t_tied.sum()),
        "device": device,
        "threads": torch.get_num_threads(),
        "k": k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10, help="top-k candidates per query (0: none)")
    parser.add_argument("--device", default="cpu", help="where the logits are computed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(_one(args.one, dim=args.dim, k=args.k, device=args.device,
                              threads=args.threads)))  # fmt: skip
        return
    print(f"{'N':>8} {'seconds':>9} {'peak RSS MB':>12} {'s / (N/10k)^2':>14}")
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim)]
        cmd += ["--k", str(args.k), "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        norm = res["seconds"] / (n / 10_000) ** 2
        print(f"{n:>8} {res['seconds']:>9.1f} {res['peak_rss_mb']:>12} {norm:>14.2f}", flush=True)
        print("         " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
