"""Train the bundled tiny CLIP (`builtin:tiny`) on the synthetic DCI generator's scenes.

A small open_clip CUSTOM model (ViT + text transformer, the OpenAI CLIP tokenizer and its
77-token context) is trained contrastively on (region, text) pairs drawn from freshly generated
synthetic scenes: whole scenes and object/part crops with their captions and summaries. The
generator's false-by-construction negatives (attribute swaps, layout swaps, object replacements)
join each batch as extra non-matching texts, as in the DCI paper's own fine-tuning; that is what
teaches the model to bind attributes to objects.

Everything is seeded and runs on CPU with a fixed thread count, so re-running with the same seed
reproduces the same weights. The held-out evaluation goes through the product's own path
(`densecap_eval.evaluate`) on a synthetic split generated with a seed never used in training.

    python scripts/train_tiny_clip.py                 # train, evaluate, write data/models/
    python scripts/train_tiny_clip.py --eval-only     # evaluate the bundled weights only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger("train_tiny_clip")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "models"
CONFIG_NAME = "tiny_clip.json"
WEIGHTS_NAME = "tiny_clip.safetensors"
CARD_NAME = "MODEL_CARD.md"

# The tokenizer is open_clip's bundled OpenAI CLIP BPE (offline); the 49408-entry token
# embedding dominates the file size, so the text tower stays narrow.
MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 96,
    "vision_cfg": {
        "image_size": 96,
        "layers": 3,
        "width": 128,
        "head_width": 32,
        "patch_size": 12,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 3,
    },
}

# Seeds: training data, model init and data order all derive from --seed; the held-out split
# uses its own seed, which training never uses.
DEFAULT_SEED = 0
HELDOUT_SEED = 9_001
DCI_TASKS = ("dci/all_swaps", "dci/all_swaps_pick5", "dci/base_swaps", "dci/all_hardest")
NEGATIVE_KINDS = ("swaps", "layout", "basic")


@dataclass(frozen=True)
class TrainItem:
    """One training region: its pixels (index into the pixel table), true texts, false texts."""

    pixels: int
    positives: tuple[int, ...]  # indices into the text table; [0] is the region's main summary
    negatives: tuple[tuple[int, ...], ...]  # per positive: its false variants (minimal pairs)
    is_photo: bool  # the whole photo (oversampled: its summaries are the longest to bind)


@dataclass(frozen=True)
class TrainRegion:
    """A region before preprocessing, as the generator describes it."""

    image: Any  # PIL image
    positives: list[str]  # [0] is the main summary (the one DCI negatives are written from)
    negatives: list[list[str]]  # per positive
    is_photo: bool


@dataclass
class TrainData:
    pixels: Any  # uint8 tensor (n, 3, S, S), already resized and centre-cropped
    tokens: Any  # int64 tensor (n_texts, 77)
    lengths: Any  # int64 tensor (n_texts,): position of the end-of-text token + 1
    texts: list[str]
    items: list[TrainItem]


# --------------------------------------------------------------------------------------------
# Determinism


def set_determinism(seed: int, threads: int) -> None:
    """Seed every generator and pin the CPU thread count (the script only, never the package)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# --------------------------------------------------------------------------------------------
# Data


def generate(out: Path, *, images: int, seed: int) -> Path:
    """Write a synthetic DCI release with the package's generator; returns the data root."""
    from densecap_eval.synth.writer import generate_dci

    # Every image in the test split: the whole set is held out.
    generate_dci(out, images=images, seed=seed, split_sizes=(0, 0, images), overwrite=True)
    return out


MIN_CROP = 24  # smaller crops are a few pixels at the model's resolution


def padded_box(
    bounds: tuple[int, int, int, int], width: int, height: int
) -> tuple[int, int, int, int]:
    """A mask's box padded by 15% of its size each side and clamped, as DCI subcrops are."""
    left, top, right, bottom = bounds
    pw, ph = int(0.15 * (right - left)), int(0.15 * (bottom - top))
    return (max(0, left - pw), max(0, top - ph), min(width, right + pw), min(height, bottom + ph))


def training_regions(*, images: int, seed: int) -> Iterator[TrainRegion]:
    """(PIL region, true texts, false texts) for every region of ``images`` synthetic scenes.

    Regions are the whole photo and every object, part and background crop (padded like DCI
    subcrops); true texts are the short caption and every summary the generator can say about
    the region; false texts are, per true text, the generator's negatives (swaps, layout,
    basic) of that summary, so a batch holds minimal pairs that differ in one fact.
    """
    from densecap_eval.synth.language import (
        background_templates,
        entry_texts,
        negatives_for,
        object_templates,
        part_templates,
        short_caption,
    )
    from densecap_eval.synth.records import scene_for

    makers = {
        "object": object_templates,
        "part": part_templates,
        "background": background_templates,
    }

    for index in range(images):
        scene = scene_for(seed, index)
        rng = np.random.default_rng([seed, index, 7])
        regions = [(scene.image, entry_texts(scene, rng)["base"].templates, [short_caption(scene)])]
        for node in scene.nodes:
            make = makers.get(node.role)
            box = padded_box(node.bounds, scene.width, scene.height)
            if make is None or min(box[2] - box[0], box[3] - box[1]) < MIN_CROP:
                continue
            regions.append((scene.image.crop(box), make(scene, node, rng), []))
        for image, templates, extra in regions:
            positives = [t.render() for t in templates] + extra
            negatives = [
                [n for texts in negatives_for(scene, t, rng).values() for n in texts]
                for t in templates
            ] + [[] for _ in extra]
            yield TrainRegion(image, positives, negatives, is_photo=image is scene.image)


def build_train_data(regions: Iterable[TrainRegion], *, image_size: int) -> TrainData:
    """Resize every region once (the eval preprocessing minus normalisation) and tokenize once.

    Regions stream in and only their small pixel arrays are kept, so memory stays flat.
    """
    import open_clip
    import torch
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    resize = Resize(image_size, interpolation=InterpolationMode.BICUBIC)
    center = CenterCrop(image_size)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")

    text_index: dict[str, int] = {}
    texts: list[str] = []

    def text_id(text: str) -> int:
        idx = text_index.get(text)
        if idx is None:
            idx = text_index[text] = len(texts)
            texts.append(text)
        return idx

    arrays: list[np.ndarray] = []
    items: list[TrainItem] = []
    for i, region in enumerate(regions):
        arrays.append(np.asarray(center(resize(region.image.convert("RGB"))), dtype=np.uint8))
        pos = tuple(text_id(t) for t in region.positives)
        true = set(pos)
        neg = tuple(
            tuple(n for n in dict.fromkeys(text_id(t) for t in ns) if n not in true)
            for ns in region.negatives
        )
        items.append(TrainItem(pixels=i, positives=pos, negatives=neg, is_photo=region.is_photo))

    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    tokens = tokenizer(texts).long()
    eot = tokens.argmax(dim=-1)  # the end-of-text id is the largest in the vocabulary
    return TrainData(pixels=pixels, tokens=tokens, lengths=eot + 1, texts=texts, items=items)


# --------------------------------------------------------------------------------------------
# Model


def build_model(config: dict[str, Any]) -> Any:
    from open_clip.model import CLIP

    return CLIP(**config)


def encode_text_trimmed(model: Any, tokens: Any) -> Any:
    """`CLIP.encode_text`, but over only as many positions as the longest text needs.

    The causal mask means positions after the end-of-text token never reach the pooled
    end-of-text feature, so trimming the padding changes nothing but the cost.
    """
    import torch.nn.functional as F
    from open_clip.transformer import text_global_pool

    n = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:n]
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type)
    return F.normalize(x @ model.text_projection, dim=-1)


def normalise_pixels(pixels: Any) -> Any:
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


# --------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    negatives_per_item: int
    lr: float
    weight_decay: float
    warmup: int
    seed: int


def multi_positive_nce(logits: Any, targets: Any) -> Any:
    """-log(sum of softmax over the true columns), averaged over rows that have one."""
    import torch

    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~targets, float("-inf")), dim=1)
    has = targets.any(dim=1)
    return (log_all[has] - log_pos[has]).mean()


@dataclass(frozen=True)
class Batch:
    items: list[TrainItem]
    text_ids: list[int]  # unique texts scored against every image of the batch
    chosen: list[int]  # per item: column of its sampled positive
    hard: list[list[int]]  # per item: columns of its sampled negatives


def epoch_order(data: TrainData, rng: np.random.Generator) -> np.ndarray:
    """A seeded shuffle of the items, whole photos twice (they are few and the hardest)."""
    photos = [i for i, it in enumerate(data.items) if it.is_photo]
    return rng.permutation(
        np.concatenate([np.arange(len(data.items)), np.array(photos, dtype=int)])
    )


def sample_batch(
    data: TrainData, indices: np.ndarray, cfg: TrainConfig, rng: np.random.Generator
) -> Batch:
    """Items, one positive each (the main summary half the time) and its minimal-pair negatives."""
    items = [data.items[int(i)] for i in indices]
    columns: dict[int, int] = {}

    def column(text: int) -> int:
        return columns.setdefault(text, len(columns))

    chosen: list[int] = []
    hard: list[list[int]] = []
    for item in items:
        k = 0 if rng.random() < 0.5 else int(rng.integers(len(item.positives)))
        chosen.append(column(item.positives[k]))
        negs = item.negatives[k] or item.negatives[0]
        picks = rng.permutation(len(negs))[: cfg.negatives_per_item]
        hard.append([column(negs[int(j)]) for j in picks])
    return Batch(items, list(columns), chosen, hard)


def batch_loss(model: Any, data: TrainData, batch: Batch) -> tuple[Any, Any]:
    """Symmetric multi-positive InfoNCE over the batch, plus each item's minimal-pair softmax."""
    import torch
    import torch.nn.functional as F

    pix = normalise_pixels(data.pixels[[it.pixels for it in batch.items]])
    ids = torch.tensor(batch.text_ids)
    width = int(data.lengths[ids].max())
    image_emb = model.encode_image(pix, normalize=True)
    text_emb = encode_text_trimmed(model, data.tokens[ids, :width])
    logits = model.logit_scale.exp() * image_emb @ text_emb.T

    position = {t: j for j, t in enumerate(batch.text_ids)}
    targets = torch.zeros(logits.shape, dtype=torch.bool)
    for i, item in enumerate(batch.items):
        for t in item.positives:  # a text may be true of several regions of the batch
            j = position.get(t)
            if j is not None:
                targets[i, j] = True
    # Negatives describe no image, so their columns have no target and drop out of text->image.
    contrastive = 0.5 * (
        multi_positive_nce(logits, targets) + multi_positive_nce(logits.T, targets.T)
    )

    rows = [i for i, h in enumerate(batch.hard) if h]
    if not rows:
        return contrastive, contrastive.detach()
    width_h = max(len(batch.hard[i]) for i in rows)
    cols = torch.tensor(
        [
            [batch.chosen[i], *batch.hard[i], *[batch.hard[i][0]] * (width_h - len(batch.hard[i]))]
            for i in rows
        ]
    )
    pair_logits = logits[torch.tensor(rows)].gather(1, cols)
    hard_nce = F.cross_entropy(pair_logits, torch.zeros(len(rows), dtype=torch.long))
    return contrastive + hard_nce, contrastive.detach()


def train(data: TrainData, config: dict[str, Any], cfg: TrainConfig) -> tuple[Any, list[float]]:
    import torch

    torch.manual_seed(cfg.seed)
    model = build_model(config)
    model.train()

    def decays(name: str, p: Any) -> bool:
        return p.ndim >= 2 and "embedding" not in name

    params = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if decays(n, p)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in params if not decays(n, p)], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    rng = np.random.default_rng(cfg.seed)
    order = epoch_order(data, rng)
    cursor = 0
    losses: list[float] = []
    start = time.time()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = epoch_order(data, rng), 0
        batch = sample_batch(data, order[cursor : cursor + cfg.batch_size], cfg, rng)
        cursor += cfg.batch_size
        loss, contrastive = batch_loss(model, data, batch)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == cfg.steps - 1:
            LOG.info(
                "step %d/%d loss %.4f (contrastive %.4f, mean of last 100 %.4f) scale %.1f %.0fs",
                step,
                cfg.steps,
                losses[-1],
                float(contrastive),
                float(np.mean(losses[-100:])),
                float(model.logit_scale.detach().exp()),
                time.time() - start,
            )
    model.eval()
    return model, losses


# --------------------------------------------------------------------------------------------
# Output


def save_model(model: Any, config: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the open_clip model config and fp16 safetensors weights."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_NAME
    weights_path = out / WEIGHTS_NAME
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    # attn_mask is a buffer rebuilt from the config; keep the file to learned tensors.
    save_file(state, str(weights_path), metadata={"format": "pt"})
    return config_path, weights_path


# --------------------------------------------------------------------------------------------
# Held-out evaluation


def _dci_entries(root: Path, split: str) -> list[dict[str, Any]]:
    """Entries of a DCI release split (base + subcrops), the reference way (direct fallback)."""
    from PIL import Image

    release = root / "densely_captioned_images"
    names = json.loads((release / "splits.json").read_text(encoding="utf-8"))[split]
    entries: list[dict[str, Any]] = []
    for name in names:
        rec = json.loads((release / "complete" / name).read_text(encoding="utf-8"))
        if not rec.get("summaries") or not rec.get("negatives"):
            continue
        photo = Image.open(release / "photos" / rec["image"]).convert("RGB")
        keys = [("base", None)]
        for mask in rec["mask_data"].values():
            b = mask["bounds"]
            bounds = (
                b["topLeft"]["x"],
                b["topLeft"]["y"],
                b["bottomRight"]["x"],
                b["bottomRight"]["y"],
            )
            if bounds[2] - bounds[0] >= 224 and bounds[3] - bounds[1] >= 224:
                keys.append((f"m-{mask['idx']}-sc", padded_box(bounds, *photo.size)))
        for key, box in keys:
            if key not in rec["summaries"] or key not in rec["negatives"]:
                continue
            summ = rec["summaries"][key]
            entries.append(
                {
                    "key": key,
                    "image": photo if box is None else photo.crop(box),
                    "bag": [summ] if isinstance(summ, str) else list(summ),
                    "negatives": rec["negatives"][key],
                    "clip_scores": rec["clip_scores"][key],
                }
            )
    return entries


def direct_dci_metrics(
    model: Any, root: Path, *, split: str = "test"
) -> dict[str, dict[str, float]]:
    """The four DCI subtests computed directly (reference semantics: groups of 8, min/max bags)."""
    import open_clip
    import torch

    transform = open_clip.image_transform(MODEL_CONFIG["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    entries = _dci_entries(root, split)
    with torch.no_grad():
        img = model.encode_image(
            torch.stack([transform(e["image"]) for e in entries]), normalize=True
        )

        def enc(texts: list[str]) -> Any:
            return model.encode_text(tokenizer(texts), normalize=True)

        results: dict[str, dict[str, float]] = {}
        for name, subcrops, source, strategy, bag in (
            ("all_swaps", True, "swaps", "first", 0),
            ("all_swaps_pick5", True, "swaps", "first", 5),
            ("base_swaps", False, "swaps", "first", 0),
            ("all_hardest", True, "any", "hardest", 0),
        ):
            idx = [
                i
                for i, e in enumerate(entries)
                if (subcrops or e["key"] == "base") and (bag == 0 or len(e["bag"]) >= bag)
            ]
            bags, negs = [], []
            for i in idx:
                e = entries[i]
                bags.append(e["bag"][: max(bag, 1)])
                if source == "any":
                    cands = [
                        (f"{k}_{j}", t)
                        for k in NEGATIVE_KINDS
                        for j, t in enumerate(e["negatives"].get(k, []))
                    ]
                else:
                    cands = [
                        (f"{source}_{j}", t) for j, t in enumerate(e["negatives"].get(source, []))
                    ]
                if strategy == "hardest":
                    negs.append(max(cands, key=lambda c: e["clip_scores"][c[0]])[1])
                else:
                    negs.append(cands[0][1])
            correct_scm = correct_neg = 0
            for g in range(0, len(idx), 8):
                rows = list(range(g, min(g + 8, len(idx))))
                ie = img[[idx[r] for r in rows]]
                bag_emb = [enc(bags[r]) for r in rows]
                own_min = torch.stack([(ie[k] @ bag_emb[k].T).min() for k in range(len(rows))])
                m = torch.stack([ie @ b.T for b in bag_emb], dim=1).amax(dim=2)  # max over bags
                m[range(len(rows)), range(len(rows))] = own_min
                correct_scm += int((m.argmax(dim=1) == torch.arange(len(rows))).sum())
                neg_scores = (ie * enc([negs[r] for r in rows])).sum(dim=1)
                correct_neg += int((own_min > neg_scores).sum())
            n = max(1, len(idx))
            results[name] = {"scm": correct_scm / n, "neg": correct_neg / n, "n": float(len(idx))}
        # Neg by negative kind: each entry's first candidate of the kind (all entries that have one).
        for kind in NEGATIVE_KINDS:
            rows = [i for i, e in enumerate(entries) if e["negatives"].get(kind)]
            pos = enc([entries[i]["bag"][0] for i in rows])
            neg = enc([entries[i]["negatives"][kind][0] for i in rows])
            ie = img[rows]
            wins = ((ie * pos).sum(dim=1) > (ie * neg).sum(dim=1)).float()
            results[f"neg_{kind}"] = {"neg": float(wins.mean()), "n": float(len(rows))}
        results["scm_chance"] = {
            "all": _chance(len(entries)),
            "pick5": _chance(int(results["all_swaps_pick5"]["n"])),
        }
    return results


def _chance(n: int) -> float:
    """SCM chance level: mean over entries of 1 / (size of its group of 8)."""
    sizes = [min(8, n - g) for g in range(0, n, 8)]
    return len(sizes) / n if n else 0.0


def write_card(out: Path, summary: dict[str, Any], metrics: dict[str, Any], args: Any) -> Path:
    """A short model card with the data, the training run and the held-out numbers."""
    cfg = summary["config"]
    losses = summary["losses"]
    lines = [
        "# builtin:tiny: a tiny CLIP trained on synthetic DCI scenes",
        "",
        "A small open_clip CUSTOM model (config `tiny_clip.json`, fp16 weights",
        "`tiny_clip.safetensors`) that ships with densecap-eval so the main job runs offline. It has",
        "only ever seen the synthetic generator's drawings: it is a test fixture and a demo, **not** a",
        "model of real photos, and its numbers say nothing about CLIP on real DCI.",
        "",
        "## Model",
        f"- Vision: ViT, {MODEL_CONFIG['vision_cfg']['image_size']} px input, patch "
        f"{MODEL_CONFIG['vision_cfg']['patch_size']}, width {MODEL_CONFIG['vision_cfg']['width']}, "
        f"{MODEL_CONFIG['vision_cfg']['layers']} layers.",
        f"- Text: transformer, width {MODEL_CONFIG['text_cfg']['width']}, "
        f"{MODEL_CONFIG['text_cfg']['layers']} layers, the OpenAI CLIP tokenizer (vocabulary 49408) "
        "and its 77-token context.",
        f"- Embedding dimension {MODEL_CONFIG['embed_dim']}; "
        f"{summary['parameters'] / 1e6:.2f} M parameters; preprocessing is open_clip's default "
        "(bicubic resize of the shorter side, centre crop, OpenAI mean/std).",
        "",
        "## Training data",
        f"- Generator `densecap_eval.synth`, seed {args.seed}, scenes 0..{args.images - 1} "
        f"({args.images} images, 640x480).",
        f"- {summary['regions']} regions (whole photos and object/part/background crops padded by "
        f"15%), {summary['pairs']} true (region, text) pairs from captions and summaries, and "
        f"{summary['negatives']} false texts (the generator's swaps / layout / basic negatives of "
        "each summary).",
        "",
        "## Training",
        f"- `python scripts/train_tiny_clip.py --seed {args.seed} --steps {cfg.steps} "
        f"--images {args.images} --batch-size {cfg.batch_size} --negatives "
        f"{cfg.negatives_per_item} --lr {cfg.lr} --threads {args.threads}` (CPU, deterministic "
        "algorithms).",
        f"- {cfg.steps} steps, batch {cfg.batch_size} regions (whole photos sampled twice as often), "
        f"{cfg.negatives_per_item} hard negatives per region; AdamW lr {cfg.lr} "
        f"(warm-up {cfg.warmup} steps, cosine), weight decay {cfg.weight_decay}.",
        "- Loss: symmetric multi-positive InfoNCE over the batch's regions and texts, the negatives",
        "  as extra non-matching texts, plus a softmax of each region's positive against its own",
        "  negatives (minimal pairs).",
        f"- Loss: first step {losses[0]:.3f}, mean of the last 100 steps {float(np.mean(losses[-100:])):.3f}.",
        f"- Wall time: {summary['train_s'] / 60:.1f} min including {summary['prep_s']:.0f} s of data "
        "preparation, measured on a shared 2-core machine.",
        "",
    ]
    path = out / CARD_NAME
    path.write_text("\n".join(lines) + "\n" + heldout_section(metrics, args), encoding="utf-8")
    return path


HELDOUT_HEADING = "## Held-out results"


def heldout_section(metrics: dict[str, Any], args: Any) -> str:
    """The card's held-out section (rewritten alone by ``--eval-only``)."""
    six = [
        ("All SCM", metrics["all_swaps"]["scm"]),
        ("All Neg", metrics["all_swaps"]["neg"]),
        ("Pick5 SCM", metrics["all_swaps_pick5"]["scm"]),
        ("Pick5 Neg", metrics["all_swaps_pick5"]["neg"]),
        ("Base Neg", metrics["base_swaps"]["neg"]),
        ("Hardest Neg", metrics["all_hardest"]["neg"]),
    ]
    lines = [
        HELDOUT_HEADING,
        f"Synthetic split generated with seed {args.heldout_seed} (never used in training), "
        f"{args.heldout_images} images, all in `test`; computed by {metrics['computed_by']}.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {name} | {value:.4f} |" for name, value in six],
        "",
        f"Entries: all {int(metrics['all_swaps']['n'])}, pick5 {int(metrics['all_swaps_pick5']['n'])}, "
        f"base {int(metrics['base_swaps']['n'])}. SCM chance level (mean 1 / group size): "
        f"all {metrics['scm_chance']['all']:.4f}, pick5 {metrics['scm_chance']['pick5']:.4f}.",
        "",
        "Neg accuracy by negative kind (first candidate of the kind, all entries that have one):",
        "",
        "| kind | neg | n |",
        "|---|---|---|",
        *[
            f"| {kind} | {metrics[f'neg_{kind}']['neg']:.4f} | {int(metrics[f'neg_{kind}']['n'])} |"
            for kind in NEGATIVE_KINDS
        ],
        "",
        "Re-running the command above with the same seed on the same software reproduces these",
        "weights bit for bit; `--eval-only` recomputes this table from the bundled files.",
        "",
    ]
    return "\n".join(lines)


def update_card(out: Path, metrics: dict[str, Any], args: Any) -> Path:
    """Replace the held-out section of an existing card (``--eval-only``)."""
    path = out / CARD_NAME
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    head = text.split(HELDOUT_HEADING, 1)[0]
    path.write_text(head + heldout_section(metrics, args), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the model")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--images", type=int, default=800, help="synthetic training images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=4, help="hard negatives per region")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--heldout-seed", type=int, default=HELDOUT_SEED)
    parser.add_argument("--heldout-images", type=int, default=100)
    parser.add_argument("--eval-only", action="store_true", help="evaluate the weights in --out")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    parser.add_argument("--work", type=Path, default=None, help="keep generated data here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    if args.heldout_seed == args.seed:
        parser.error("--heldout-seed must differ from --seed")
    set_determinism(args.seed, args.threads)

    with tempfile.TemporaryDirectory(prefix="tiny-clip-") as tmp:
        work = args.work or Path(tmp)
        if args.eval_only:
            model = load_model(args.out)
            summary: dict[str, Any] = {}
        else:
            t0 = time.time()
            regions = training_regions(images=args.images, seed=args.seed)
            data = build_train_data(regions, image_size=MODEL_CONFIG["vision_cfg"]["image_size"])
            prep_s = time.time() - t0
            LOG.info(
                "%d regions, %d texts from %d scenes in %.0fs",
                len(data.items),
                len(data.texts),
                args.images,
                prep_s,
            )
            cfg = TrainConfig(
                steps=args.steps,
                batch_size=args.batch_size,
                negatives_per_item=args.negatives,
                lr=args.lr,
                weight_decay=0.05,
                warmup=min(100, args.steps // 10 + 1),
                seed=args.seed,
            )
            model, losses = train(data, MODEL_CONFIG, cfg)
            save_model(model, MODEL_CONFIG, args.out)
            summary = {
                "regions": len(data.items),
                "texts": len(data.texts),
                "pairs": sum(len(it.positives) for it in data.items),
                "negatives": sum(len(n) for it in data.items for n in it.negatives),
                "config": cfg,
                "losses": losses,
                "train_s": time.time() - t0,
                "prep_s": prep_s,
            }
            model = load_model(args.out)  # evaluate what was written (fp16 round trip)
        if args.no_eval:
            return 0
        heldout = generate(work / "heldout", images=args.heldout_images, seed=args.heldout_seed)
        metrics = heldout_metrics(model, args.out, heldout)
        LOG.info("held-out: %s", json.dumps(metrics, indent=1))
        if summary:
            summary["parameters"] = sum(p.numel() for p in model.parameters())
            LOG.info("wrote %s", write_card(args.out, summary, metrics, args))
        else:
            LOG.info("updated %s", update_card(args.out, metrics, args))
    return 0


def heldout_metrics(model: Any, out: Path, root: Path) -> dict[str, Any]:
    """The six DCI numbers through the product's evaluate path when it exists, else directly."""
    metrics: dict[str, Any] = direct_dci_metrics(model, root, split="test")
    metrics["computed_by"] = (
        "a direct computation of the reference semantics (scripts/train_tiny_clip.py)"
    )
    try:
        from densecap_eval.run.evaluate import evaluate
    except ImportError:
        LOG.warning("densecap_eval.evaluate is not available; held-out numbers computed directly")
        return metrics
    spec = f"open_clip:{out / CONFIG_NAME}/{out / WEIGHTS_NAME}"
    result = evaluate(spec, "dci", data_root=str(root), split="test", n_boot=0, use_cache=False)
    for task in DCI_TASKS:
        name = task.split("/", 1)[1]
        mine = metrics[name]
        metrics[name] = {k: float(result.metrics[task][k]) for k in ("scm", "neg", "n")}
        if any(abs(metrics[name][k] - mine[k]) > 1e-9 for k in mine):
            LOG.info(  # float order can flip a near tie; large gaps would mean a bug
                "%s: evaluate gives %s, the direct computation %s", task, metrics[name], mine
            )
    shown = spec.replace(str(REPO_ROOT) + "/", "")
    metrics["computed_by"] = f'`densecap_eval.evaluate("{shown}", "dci", split="test")`'
    return metrics


def load_model(out: Path) -> Any:
    """The written config and weights, loaded the way open_clip loads a checkpoint."""
    from open_clip.factory import load_checkpoint

    config = json.loads((out / CONFIG_NAME).read_text(encoding="utf-8"))
    model = build_model(config)
    load_checkpoint(model, str(out / WEIGHTS_NAME))
    model.eval()
    return model


if __name__ == "__main__":
    raise SystemExit(main())
