"""Late interaction at retrieval scale: FLAIR-shaped model, 1,000 images x 1,000 texts.

Builds a small random FLAIR checkpoint in the released layout, writes 1,000 synthetic photos
and captions as a ``files`` release (JSONL), and runs ``files/retrieval`` through
`densecap_eval.evaluate` (the engine's late-interaction path: each image's tokens and each
text's embedding computed once, the pooling head run for all 1,000,000 pairs in batches). It
counts the image-tower forwards (must be 1,000) and reports pairs/s, then times the naive way,
every pair through the whole model (image tower + text tower + pooling head), on a sample of
pairs, and extrapolates to the full gallery (the full naive run would take days on a CPU):
one pair per forward, and batched (``--naive-batch`` pairs through each tower per forward).

    python benchmarks/late_interaction.py [--images 1000] [--naive-pairs 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import densecap_eval
from densecap_eval import load_scorer
from densecap_eval.scorers.flair import _flair_module

# FLAIR-shaped (ViT with a class token, CLIP text tower, 8-head pooling block), but small
# enough for a CPU: 64 px images in 8 px patches = 64 tokens per image.
ARCH: dict[str, Any] = {
    "embed_dim": 128,
    "vision_width": 128,
    "vision_layers": 4,
    "vision_mlp": 512,
    "patch_size": 8,
    "image_size": 64,
    "text_width": 128,
    "text_layers": 4,
    "text_mlp": 512,
    "context_length": 77,
    "vocab_size": 49408,
}
WORDS = (
    "a red tram passes bakery with striped awnings near the old bridge while two cyclists "
    "wait at light under grey sky and people cross wet cobbles beside market stalls"
).split()


def write_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    model = _flair_module(ARCH)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and "ln" in name:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02 if p.ndim > 1 else 0.01)
        model.logit_scale.fill_(math.log(1 / 0.07))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state}, path)


def write_release(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        pixels = (rng.random((72, 96, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), rng.integers(15, 60))]
        rows.append({"image": f"img/{i}.png", "caption": f"photo {i}: " + " ".join(words)})
    path = root / "release.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--naive-pairs", type=int, default=200)
    parser.add_argument("--naive-batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = root / "flair-bench.pt"
        write_checkpoint(ckpt)
        release = write_release(root / "data", args.images)
        scorer = load_scorer(f"flair:{ckpt}", args.device)
        forwards: list[int] = []
        tower = scorer.model.visual.forward

        def counted(pixels: torch.Tensor) -> Any:
            forwards.append(int(pixels.shape[0]))
            return tower(pixels)

        scorer.model.visual.forward = counted  # type: ignore[method-assign]
        head_s = [0.0]
        head = scorer.score_tokens

        def timed_head(tokens: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = head(tokens, texts)
            head_s[0] += time.perf_counter() - t0
            return out

        scorer.score_tokens = timed_head  # type: ignore[method-assign]
        start = time.perf_counter()
        result = densecap_eval.evaluate(
            scorer,
            "files/retrieval",
            data_root=release,
            n_boot=0,
            use_cache=False,
            progress=False,
            batch_size=args.batch_size,
            num_workers=0,
        )
        late_s = time.perf_counter() - start
        metrics = result.metrics["files/retrieval"]
        n = int(metrics["n"])
        pairs = n * int(metrics["gallery"])
        tower_forwards = sum(forwards)

        # The naive way: every pair through the whole model (image tower, text tower, head).
        images = [Image.open(root / "data" / "img" / f"{i}.png").convert("RGB") for i in range(n)]
        texts = result.examples["text"].tolist()
        rng = np.random.default_rng(1)
        sample = rng.integers(0, n, size=(args.naive_pairs, 2))
        start = time.perf_counter()
        for i, t in sample.tolist():
            scorer.score([images[i]], [texts[t]])
        naive_s = time.perf_counter() - start
        # The same, batched: B pairs per forward of each tower, then the head on those B pairs.
        start = time.perf_counter()
        for a in range(0, len(sample), args.naive_batch):
            chunk = sample[a : a + args.naive_batch]
            tokens = scorer.encode_image_tokens([images[i] for i in chunk[:, 0]])
            query = scorer.encode_texts([texts[t] for t in chunk[:, 1]]).embeddings
            scorer.score_token_pairs(tokens, query)
        batched_s = time.perf_counter() - start

    late_rate = pairs / late_s
    naive_rate = args.naive_pairs / naive_s
    batched_rate = args.naive_pairs / batched_s
    print(
        json.dumps(
            {
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "images": n,
                "texts": int(metrics["gallery"]),
                "pairs": pairs,
                "image_tower_images": tower_forwards,
                "late_interaction_seconds": round(late_s, 2),
                "late_interaction_pairs_per_s": round(late_rate),
                "of_which_pooling_head_seconds": round(head_s[0], 2),
                "naive_sampled_pairs": args.naive_pairs,
                "naive_sample_seconds": round(naive_s, 2),
                "naive_pairs_per_s": round(naive_rate, 1),
                "naive_full_run_hours_extrapolated": round(pairs / naive_rate / 3600, 2),
                "speedup": round(late_rate / naive_rate),
                "naive_batched_pairs_per_forward": args.naive_batch,
                "naive_batched_pairs_per_s": round(batched_rate, 1),
                "naive_batched_full_run_hours_extrapolated": round(pairs / batched_rate / 3600, 2),
                "speedup_vs_batched": round(late_rate / batched_rate),
                "i2t_r1": metrics["i2t_r1"],
            },
            indent=1,
        )
    )
    assert tower_forwards == n, f"{tower_forwards} images went through the image tower, not {n}"


if __name__ == "__main__":
    main()
