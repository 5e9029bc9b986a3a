"""Encoding throughput: the densecap-eval engine against a plain per-batch loop.

Workload: a synthetic DCI set (``densecap_eval.synth.generate_dci``) of N photos, test split,
the four reference subtests (all_swaps, all_swaps_pick5, base_swaps, all_hardest). An *item*
is one subtest example: a region, its positive caption bag and its negative.

(a) engine: one ScoringPlan over all four subtests (each unique region and text once), texts
    sorted by length, regions grouped by photo and decoded in DataLoader workers, no cache;
    then every group-of-8 matrix the metrics need is read from the ScoreTable.
(b) plain loop, what the DCI reference script does: per subtest, per group of 8 examples,
    decode each example's photo, crop, preprocess, tokenise padded to the full context, and run
    the model's own forward (image and text towers) once for the positives and again for the
    negatives.

Both produce the same logits (checked, max abs difference printed). Model: ``--model SPEC``
through ``densecap_eval.load_scorer`` when given (e.g. ``builtin:tiny``), else open_clip
``--arch`` (default ViT-B-32) with random weights (no download).

    python benchmarks/engine_throughput.py --images 6 --arch ViT-B-32
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from densecap_eval.datasets.regions import crop, open_photo
from densecap_eval.engine import ScoringPlan, score_plan

SUBTESTS = ("all_swaps", "all_swaps_pick5", "base_swaps", "all_hardest")
GROUP = 8  # the reference's DataLoader batch size


class OpenClipRandom:
    """Minimal EmbeddingScorer over an open_clip model with random weights (benchmark only)."""

    kind = "embedding"
    text_policy = "truncate"

    def __init__(self, arch: str, device: str) -> None:
        import open_clip

        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        self.model = model.eval().to(device)
        self._preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.device = device
        self.spec = f"open_clip:{arch}/random"
        self.max_text_tokens = int(getattr(self.tokenizer, "context_length", 77))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.spec.encode()).hexdigest()

    @property
    def preprocess_id(self) -> str:
        return repr(self._preprocess)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._preprocess(image)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # open_clip's SimpleTokenizer: BPE ids without start/end tokens, untruncated.
        return [len(self.tokenizer.encode(t)) + 2 for t in texts]

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model.encode_image(pixels.to(self.device), normalize=True)
        return out.float().cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], *, policy: str | None = None) -> Any:
        from densecap_eval.scorers.base import TextEncoding

        tokens = self.tokenizer(list(texts)).to(self.device)
        emb = self.model.encode_text(tokens, normalize=True).float().cpu()
        n = self.count_tokens(texts)
        return TextEncoding(embeddings=emb, n_tokens=n, cut=[k > self.max_text_tokens for k in n])

    def logits(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        scale = self.model.logit_scale.exp().float().cpu()
        return scale * img.float() @ txt.float().T


def load_model(args: argparse.Namespace) -> Any:
    if args.model:
        from densecap_eval import load_scorer

        return load_scorer(args.model, device=args.device)
    return OpenClipRandom(args.arch, args.device)


def build_workload(root: Path, images: int) -> dict[str, list[Any]]:
    from densecap_eval.datasets.dci.entries import build_subtest
    from densecap_eval.datasets.dci.loader import DCIDataset
    from densecap_eval.synth import generate_dci

    generate_dci(root, images=images, seed=0, split_sizes=(0, 0, images))
    dataset = DCIDataset(root)
    return {name: build_subtest(dataset, name).examples for name in SUBTESTS}


def run_engine(
    scorer: Any, workload: dict[str, list[Any]], args: argparse.Namespace
) -> dict[str, list[np.ndarray]]:
    plan = ScoringPlan()
    groups: dict[str, list[tuple[list[int], list[list[int]], list[int]]]] = {}
    for name, examples in workload.items():
        rows = []
        for ex in examples:
            r = plan.add_region(ex.entry.region)
            pos = [plan.add_text(t) for t in ex.positives]
            neg = plan.add_text(ex.negative)
            rows.append((r, pos, neg))
        groups[name] = []
        for g in range(0, len(rows), GROUP):
            chunk = rows[g : g + GROUP]
            regions = [r for r, _, _ in chunk]
            plan.need_all(regions, [t for _, pos, _ in chunk for t in pos])
            for r, _, neg in chunk:
                plan.need(r, neg)
            groups[name].append(
                (regions, [pos for _, pos, _ in chunk], [neg for _, _, neg in chunk])
            )
    table = score_plan(
        scorer, plan, batch_size=args.batch_size, num_workers=args.workers, progress=False
    )
    out: dict[str, list[np.ndarray]] = {}
    for name, gs in groups.items():
        out[name] = []
        for regions, pos, negs in gs:
            pos_m = table.matrix(regions, [t for p in pos for t in p])
            neg_m = table.matrix(regions, negs)
            out[name].append(np.concatenate([pos_m, neg_m], axis=1))
    print(
        f"  engine plan: {len(plan.regions)} unique regions, {len(plan.texts)} unique texts, "
        f"{len(plan.pairs)} pairs",
        file=sys.stderr,
    )
    return out


@torch.inference_mode()
def run_plain(scorer: Any, workload: dict[str, list[Any]]) -> dict[str, list[np.ndarray]]:
    model, tokenizer, device = scorer.model, scorer.tokenizer, scorer.device
    out: dict[str, list[np.ndarray]] = {}

    def forward(pixels: torch.Tensor, texts: list[str]) -> np.ndarray:
        img = model.encode_image(pixels, normalize=True).float()
        txt = model.encode_text(tokenizer(texts).to(device), normalize=True).float()
        return (model.logit_scale.exp().float() * img @ txt.T).cpu().numpy()

    for name, examples in workload.items():
        out[name] = []
        for g in range(0, len(examples), GROUP):
            chunk = examples[g : g + GROUP]
            crops = [crop(open_photo(ex.entry.region.photo), ex.entry.region.box) for ex in chunk]
            pixels = torch.stack([scorer.preprocess(c) for c in crops]).to(device)
            pos = forward(pixels, [t for ex in chunk for t in ex.positives])
            neg = forward(pixels, [ex.negative for ex in chunk])
            out[name].append(np.concatenate([pos, neg], axis=1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8, help="synthetic photos (test split)")
    parser.add_argument("--model", default=None, help="a model spec for load_scorer (optional)")
    parser.add_argument(
        "--arch", default="ViT-B-32", help="open_clip architecture (random weights)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="densecap-bench-") as tmp:
        t0 = time.perf_counter()
        workload = build_workload(Path(tmp), args.images)
        items = sum(len(v) for v in workload.values())
        print(
            f"workload: {args.images} photos, {items} examples over {len(SUBTESTS)} subtests "
            f"({time.perf_counter() - t0:.1f}s to generate)",
            file=sys.stderr,
        )
        scorer = load_model(args)
        if not hasattr(scorer, "model") or not hasattr(scorer, "tokenizer"):
            print("the plain loop needs an open_clip model; pass --arch", file=sys.stderr)
            return 2

        def timed(fn: Any) -> tuple[float, Any]:
            best, result = float("inf"), None
            for _ in range(args.repeats):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                result = fn()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
            return best, result

        run_plain(scorer, {k: v[:1] for k, v in workload.items()})  # warm-up
        t_engine, engine_out = timed(lambda: run_engine(scorer, workload, args))
        t_plain, plain_out = timed(lambda: run_plain(scorer, workload))
        diff = max(
            float(np.abs(a - b).max())
            for name in workload
            for a, b in zip(engine_out[name], plain_out[name], strict=True)
        )
    figures = {
        "device": args.device,
        "model": args.model or f"open_clip:{args.arch} (random weights)",
        "photos": args.images,
        "items": items,
        "engine_s": round(t_engine, 3),
        "plain_s": round(t_plain, 3),
        "engine_items_per_s": round(items / t_engine, 2),
        "plain_items_per_s": round(items / t_plain, 2),
        "speedup": round(t_plain / t_engine, 2),
        "max_abs_logit_diff": diff,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
