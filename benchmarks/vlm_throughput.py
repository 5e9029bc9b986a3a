"""Pairs per second of a VLM pair scorer: its batched path vs one pair at a time.

Builds a tiny random LLaVA-style model (tests/tiny_vlms.py) in a temp dir, loads it through the
spec string and scores the same pairs twice: as the engine does (pairs sorted by token count,
``score_pairs`` once per batch of ``--batch-size``: one forward, each image processed once per
batch) and a per-pair loop calling ``score_pairs`` on one pair at a time, as a naive evaluation
loop would. Prints both rates and their ratio.

    python benchmarks/vlm_throughput.py [--pairs 256] [--batch-size 32] [--scorer vqascore]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    import numpy as np
    import tiny_vlms
    from PIL import Image

    from densecap_eval.scorers import vlm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scorer", choices=["vqascore", "captionlik"], default="vqascore")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(16)]
    words = tiny_vlms.WORDS.split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 30)))) for _ in range(64)]
    pair_images = [images[i % len(images)] for i in range(args.pairs)]
    pair_texts = [texts[(i * 7) % len(texts)] for i in range(args.pairs)]

    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_vlms.build_llava(Path(tmp) / "llava")
        loader = vlm.load_vqascore if args.scorer == "vqascore" else vlm.load_captionlik
        scorer = loader(f"{args.scorer}:{folder}", args.device, "fp32", batch_size=args.batch_size)
        scorer.score_pairs(pair_images[:4], pair_texts[:4])  # warm-up

        t0 = time.perf_counter()
        counts = scorer.count_tokens(pair_texts)
        order = sorted(range(args.pairs), key=lambda i: counts[i])  # the engine's order
        batched = [0.0] * args.pairs
        for a in range(0, args.pairs, args.batch_size):
            idx = order[a : a + args.batch_size]
            out = scorer.score_pairs([pair_images[i] for i in idx], [pair_texts[i] for i in idx])
            for i, value in zip(idx, out.tolist(), strict=True):
                batched[i] = value
        t_batched = time.perf_counter() - t0

        t0 = time.perf_counter()
        single = [
            scorer.score_pairs([im], [tx])[0]
            for im, tx in zip(pair_images, pair_texts, strict=True)
        ]
        t_single = time.perf_counter() - t0

    diff = max(abs(float(a) - float(b)) for a, b in zip(batched, single, strict=True))
    print(f"scorer {args.scorer}, tiny LLaVA, {args.pairs} pairs, batch {args.batch_size}")
    print(f"batched : {args.pairs / t_batched:10.1f} pairs/s ({t_batched:.2f} s)")
    print(f"per pair: {args.pairs / t_single:10.1f} pairs/s ({t_single:.2f} s)")
    print(f"speed-up: {t_single / t_batched:.1f}x   max |batched - single| = {diff:.2e}")


if __name__ == "__main__":
    main()
