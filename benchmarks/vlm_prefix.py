"""Pairs per second of a VLM pair scorer with prefix sharing vs today's batched path.

Builds a tiny random LLaVA-1.5-shaped model (tests/tiny_vlms.py `build_llava_sized`: 336 x 336
images in 14-pixel patches, 576 image tokens, a narrow 2-layer tower and language model) in a
temp dir and scores N images x 10 captions (DCI's typical fan-out: a region's caption and its
negatives, edits of it of about its length) with ``score_pairs`` in batches of ``--batch-size``,
twice: with prefix sharing (the default: each distinct image's prompt prefix runs once per batch
and its captions continue from its KV cache) and with ``?share_prefix=0`` (one forward of whole
prompts). Two pair orders: ``photo`` (an image's pairs together, then by length) and ``engine``
(the engine's order today: by text token count, then photo). Prints pairs/s, the speed-up and the
largest score difference. Each batch runs ``--repeats`` times on both paths, alternating,
and its best time counts (the CPUs may be shared).

    python benchmarks/vlm_prefix.py [--images 24] [--batch-size 30] [--scorer vqascore]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def compare(
    shared: Any, plain: Any, images: list[Any], texts: list[str], order: list[int], args: Any
) -> tuple[float, float, float]:
    """(pairs/s shared, pairs/s batched, max |difference|), batch by batch, the two paths
    alternating and each batch's best of ``--repeats`` counting (the CPUs may be shared)."""
    import torch

    best = {"shared": 0.0, "plain": 0.0}
    out = {"shared": torch.zeros(len(order)), "plain": torch.zeros(len(order))}
    for a in range(0, len(order), args.batch_size):
        idx = order[a : a + args.batch_size]
        ims, txs = [images[i] for i in idx], [texts[i] for i in idx]
        times = {"shared": float("inf"), "plain": float("inf")}
        for _ in range(args.repeats):
            for name, scorer in (("plain", plain), ("shared", shared)):
                t0 = time.perf_counter()
                out[name][idx] = scorer.score_pairs(ims, txs)
                times[name] = min(times[name], time.perf_counter() - t0)
        for name in best:
            best[name] += times[name]
    diff = float((out["shared"] - out["plain"]).abs().max())
    return len(order) / best["shared"], len(order) / best["plain"], diff


def main() -> None:
    import numpy as np
    import tiny_vlms
    import torch
    from PIL import Image

    from densecap_eval.scorers import vlm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--captions", type=int, default=10, help="captions per image")
    parser.add_argument("--batch-size", type=int, default=30)
    parser.add_argument("--scorer", choices=["vqascore", "captionlik"], default="vqascore")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path; best counts")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    words = tiny_vlms.WORDS.split()
    photos = [
        Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8))
        for _ in range(args.images)
    ]
    images: list[Any] = []
    texts: list[str] = []
    for photo in photos:
        base = int(rng.integers(6, 40))
        for _ in range(args.captions):  # negatives: about the caption's length
            n = max(1, base + int(rng.integers(-2, 3)))
            images.append(photo)
            texts.append(" ".join(rng.choice(words, size=n)))

    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_vlms.build_llava_sized(Path(tmp) / "llava576")
        loader = vlm.load_vqascore if args.scorer == "vqascore" else vlm.load_captionlik
        spec = f"{args.scorer}:{folder}"
        shared = loader(spec, args.device, "fp32")
        plain = loader(f"{spec}?share_prefix=0", args.device, "fp32")
        image_tokens = int(
            shared.processor(text=[shared.prompt("")], images=[photos[0]], return_tensors="pt")[
                "input_ids"
            ]
            .eq(shared.processor.image_token_id)
            .sum()
        )
        counts = shared.count_tokens(texts)
        photo_of = {id(p): k for k, p in enumerate(photos)}
        orders = {
            # the engine's order: photo first, then caption length (engine._score_pairs)
            "engine": sorted(range(len(texts)), key=lambda i: (photo_of[id(images[i])], counts[i])),
            # the order it used before prefix sharing: caption length first
            "length": sorted(range(len(texts)), key=lambda i: (counts[i], photo_of[id(images[i])])),
        }
        for scorer in (shared, plain):  # warm-up
            scorer.score_pairs(images[:4], texts[:4])
        print(
            f"scorer {args.scorer}, tiny LLaVA ({image_tokens} image tokens), {args.images} images"
            f" x {args.captions} captions = {len(texts)} pairs, batch {args.batch_size}, "
            f"{torch.get_num_threads()} threads"
        )
        for name, order in orders.items():
            per_batch = [
                len({photo_of[id(images[i])] for i in order[a : a + args.batch_size]})
                for a in range(0, len(order), args.batch_size)
            ]
            r_shared, r_plain, diff = compare(shared, plain, images, texts, order, args)
            print(
                f"order {name:6s} ({np.mean(per_batch):.1f} distinct images per batch): "
                f"shared {r_shared:7.1f} pairs/s, batched {r_plain:7.1f} pairs/s, "
                f"speed-up {r_shared / r_plain:.2f}x, max |diff| {diff:.1e}"
            )
        print("prefix sharing:", shared.config)


if __name__ == "__main__":
    main()
