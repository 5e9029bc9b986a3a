"""Pairs per second of a VLM pair scorer with prefix sharing vs the batched path, per family.

Builds a tiny random model in a temp dir and scores N images x 10 captions (DCI's typical
fan-out: a region's caption and its negatives, edits of it of about its length) with
``score_pairs`` in batches of ``--batch-size``, twice: with prefix sharing (the default: each
distinct image's prompt prefix runs once per batch and its captions continue from its KV cache)
and with ``?share_prefix=0`` (one forward of whole prompts). ``--family llava576`` (default) is
a LLaVA-1.5-shaped model (tests/tiny_vlms.py `build_llava_sized`: 336 x 336 images, 576 image
tokens, a narrow 2-layer tower and language model) in two pair orders: ``engine`` (an image's
pairs together, then by length) and ``length`` (by text token count, then photo);
``--family NAME`` takes a family of tests/tiny_vlm_families.py (32 x 32 images) and
``--family all`` prints one table row per family (engine order). Prints pairs/s, the speed-up,
the largest score difference and how many times the image processor saw each distinct image of
a batch (1 on both paths: images are deduplicated before preprocessing). Each batch runs
``--repeats`` times on both paths, alternating, and its best time counts (the CPUs may be shared).

    python benchmarks/vlm_prefix.py [--family all] [--images 24] [--batch-size 30]
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


def build(family: str, folder: Path) -> Path:
    import tiny_vlm_families
    import tiny_vlms

    if family == "llava576":
        return tiny_vlms.build_llava_sized(folder)  # type: ignore[no-any-return]
    return tiny_vlm_families.FAMILIES[family](folder)


def run(family: str, args: Any, photos: list[Any], images: list[Any], texts: list[str]) -> None:
    """Both orders (one family) or the engine's order as one table row (``--family all``)."""
    import numpy as np
    import torch

    from densecap_eval.scorers import vlm

    with tempfile.TemporaryDirectory() as tmp:
        folder = build(family, Path(tmp) / family)
        loader = vlm.load_vqascore if args.scorer == "vqascore" else vlm.load_captionlik
        spec = f"{args.scorer}:{folder}"
        shared = loader(spec, args.device, "fp32")
        plain = loader(f"{spec}?share_prefix=0", args.device, "fp32")
        config = shared.model_config
        image_id = getattr(config, "image_token_id", None)
        if image_id is None:
            image_id = getattr(config, "image_token_index", None)
        ids = shared._process([shared.prompt("")], [photos[0]])["input_ids"]
        image_tokens = int(ids.eq(image_id).sum())  # Llama 3.2 Vision: 1 (cross-attention)
        counts = shared.count_tokens(texts)
        photo_of = {id(p): k for k, p in enumerate(photos)}
        orders = {
            # the engine's order: photo first, then caption length (engine._score_pairs)
            "engine": sorted(range(len(texts)), key=lambda i: (photo_of[id(images[i])], counts[i])),
            # the order it used before prefix sharing: caption length first
            "length": sorted(range(len(texts)), key=lambda i: (counts[i], photo_of[id(images[i])])),
        }
        if args.family == "all":
            orders = {"engine": orders["engine"]}
        for scorer in (shared, plain):  # warm-up
            scorer.score_pairs(images[:4], texts[:4])
        if args.family != "all":
            print(
                f"scorer {args.scorer}, tiny {family} ({image_tokens} image tokens), "
                f"{args.images} images x {args.captions} captions = {len(texts)} pairs, "
                f"batch {args.batch_size}, {torch.get_num_threads()} threads"
            )
        for name, order in orders.items():
            per_batch = [
                len({photo_of[id(images[i])] for i in order[a : a + args.batch_size]})
                for a in range(0, len(order), args.batch_size)
            ]
            for scorer in (shared, plain):
                scorer.images.processed = 0
            r_shared, r_plain, diff = compare(shared, plain, images, texts, order, args)
            # Images the image processor saw per distinct image of a batch (should be 1).
            seen = sum(per_batch) * args.repeats
            per_image = (shared.images.processed / seen, plain.images.processed / seen)
            if args.family == "all":
                print(
                    f"| {family} | {image_tokens} | {r_shared:.1f} | {r_plain:.1f} | "
                    f"{r_shared / r_plain:.2f}x | {diff:.1e} | "
                    f"{per_image[0]:.2f} / {per_image[1]:.2f} | "
                    f"{shared.config.get('share_prefix_off', 'on')} |"
                )
                continue
            print(
                f"order {name:6s} ({np.mean(per_batch):.1f} distinct images per batch): "
                f"shared {r_shared:7.1f} pairs/s, batched {r_plain:7.1f} pairs/s, "
                f"speed-up {r_shared / r_plain:.2f}x, max |diff| {diff:.1e}, image-processor "
                f"runs per image {per_image[0]:.2f} shared / {per_image[1]:.2f} batched"
            )
        if args.family != "all":
            print("prefix sharing:", shared.config)


def main() -> None:
    import numpy as np
    import tiny_vlm_families
    import tiny_vlms
    import torch
    from PIL import Image

    families = ["llava576", *tiny_vlm_families.FAMILIES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=[*families, "all"], default="llava576")
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
    side = 336 if args.family == "llava576" else 32
    photos = [
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
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

    if args.family != "all":
        run(args.family, args, photos, images, texts)
        return
    print(
        f"scorer {args.scorer}, engine order, {args.images} images x {args.captions} captions, "
        f"batch {args.batch_size}, {torch.get_num_threads()} threads, 32 x 32 images "
        "(llava576: 336 x 336)"
    )
    print(
        "| family | image tokens | shared pairs/s | batched pairs/s | speed-up | max diff "
        "| image-processor runs per image (shared / batched) | sharing |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for family in families:
        if family == "llava576":
            big = [Image.fromarray(np.asarray(p.resize((336, 336)))) for p in photos]
            swap = {id(p): b for p, b in zip(photos, big, strict=True)}
            run(family, args, big, [swap[id(im)] for im in images], texts)
        else:
            run(family, args, photos, images, texts)


if __name__ == "__main__":
    main()
