"""A tiny random FLAIR checkpoint in the released layout (written key by key, not by our model).

The released files are ``torch.save({"epoch", "name", "state_dict": {"module." + key: ...}})``
of FLAIR's model: a ViT without ``visual.proj``, the text tower's keys at the top level,
``image_post.proj``, ``text_post.proj``, the pooling block ``visual_proj`` and the scalars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VISION_WIDTH = 64  # one 64-wide head, as FLAIR's head width rule gives
TEXT_WIDTH = 32  # 8 heads of 4
EMBED_DIM = 16  # the pooling block's 8 heads of 2
PATCH = 8
IMAGE = 32  # 4 x 4 patches
CONTEXT = 77
VOCAB = 49408  # CLIP BPE


def _block(prefix: str, width: int, gen: Any) -> dict[str, Any]:
    import torch

    def rnd(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    return {
        f"{prefix}.ln_1.weight": 1 + rnd(width, std=0.1),
        f"{prefix}.ln_1.bias": rnd(width, std=0.1),
        f"{prefix}.attn.in_proj_weight": rnd(3 * width, width),
        f"{prefix}.attn.in_proj_bias": rnd(3 * width, std=0.05),
        f"{prefix}.attn.out_proj.weight": rnd(width, width),
        f"{prefix}.attn.out_proj.bias": rnd(width, std=0.05),
        f"{prefix}.ln_2.weight": 1 + rnd(width, std=0.1),
        f"{prefix}.ln_2.bias": rnd(width, std=0.1),
        f"{prefix}.mlp.c_fc.weight": rnd(4 * width, width),
        f"{prefix}.mlp.c_fc.bias": rnd(4 * width, std=0.05),
        f"{prefix}.mlp.c_proj.weight": rnd(width, 4 * width, std=0.1),
        f"{prefix}.mlp.c_proj.bias": rnd(width, std=0.05),
    }


def flair_state(seed: int = 0, *, layers: int = 1) -> dict[str, Any]:
    """The model's state dict (keys without ``module.``)."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    n_patches = (IMAGE // PATCH) ** 2
    state: dict[str, Any] = {
        "visual.class_embedding": rnd(VISION_WIDTH),
        "visual.positional_embedding": rnd(n_patches + 1, VISION_WIDTH),
        "visual.conv1.weight": rnd(VISION_WIDTH, 3, PATCH, PATCH, std=0.05),
        "visual.ln_pre.weight": 1 + rnd(VISION_WIDTH, std=0.1),
        "visual.ln_pre.bias": rnd(VISION_WIDTH, std=0.1),
        "visual.ln_post.weight": 1 + rnd(VISION_WIDTH, std=0.1),
        "visual.ln_post.bias": rnd(VISION_WIDTH, std=0.1),
        "token_embedding.weight": rnd(VOCAB, TEXT_WIDTH, std=0.5),
        "positional_embedding": rnd(CONTEXT, TEXT_WIDTH, std=0.1),
        "ln_final.weight": 1 + rnd(TEXT_WIDTH, std=0.1),
        "ln_final.bias": rnd(TEXT_WIDTH, std=0.1),
        "image_post.proj": rnd(VISION_WIDTH, EMBED_DIM),
        "text_post.proj": rnd(TEXT_WIDTH, EMBED_DIM),
        "visual_proj.attn.in_proj_weight": rnd(3 * EMBED_DIM, EMBED_DIM, std=0.5),
        "visual_proj.attn.in_proj_bias": rnd(3 * EMBED_DIM, std=0.1),
        "visual_proj.attn.out_proj.weight": rnd(EMBED_DIM, EMBED_DIM, std=0.5),
        "visual_proj.attn.out_proj.bias": rnd(EMBED_DIM, std=0.1),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
        "logit_bias": torch.tensor(-10.0),
    }
    for name in ("ln_q", "ln_k", "ln_v"):
        state[f"visual_proj.{name}.weight"] = 1 + rnd(EMBED_DIM, std=0.1)
        state[f"visual_proj.{name}.bias"] = rnd(EMBED_DIM, std=0.1)
    for i in range(layers):
        state.update(_block(f"visual.transformer.resblocks.{i}", VISION_WIDTH, gen))
        state.update(_block(f"transformer.resblocks.{i}", TEXT_WIDTH, gen))
    return state


def save_flair(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the authors' training code saves it (DDP's ``module.`` prefixes)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "epoch": 32,
        "name": "tiny-flair",
        "state_dict": {f"module.{k}": v.contiguous() for k, v in state.items()},
    }
    torch.save(checkpoint, path)
    return path


def make_tiny_flair(directory: Path, *, seed: int = 0) -> Path:
    return save_flair(directory / "flair-tiny.pt", flair_state(seed))
