"""Tiny long-text CLIP checkpoints in their released layouts, and plain-torch reference forwards.

The checkpoints are written key by key (OpenAI CLIP names, the family's extra tables, its
wrapping), not through the code under test; the reference forwards use plain torch ops from
the families' published facts, so a test comparing them with densecap-eval's embeddings checks
our loader against an independent reading of each family.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
VOCAB = 49408  # the CLIP BPE vocabulary (open_clip's bundled merges)


def _rand(g: torch.Generator, *shape: int, std: float = 0.02) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * std


def _norm(s: dict[str, torch.Tensor], key: str, width: int, g: torch.Generator) -> None:
    s[f"{key}.weight"] = 1 + _rand(g, width, std=0.1)
    s[f"{key}.bias"] = _rand(g, width, std=0.1)


def openai_block(
    s: dict[str, torch.Tensor], head: str, width: int, g: torch.Generator, *, mlp: str = "mlp"
) -> None:
    """One OpenAI CLIP residual block's keys (ln_1, attn in/out proj, ln_2, mlp c_fc/c_proj)."""
    _norm(s, f"{head}ln_1", width, g)
    s[f"{head}attn.in_proj_weight"] = _rand(g, 3 * width, width, std=width**-0.5)
    s[f"{head}attn.in_proj_bias"] = _rand(g, 3 * width)
    s[f"{head}attn.out_proj.weight"] = _rand(g, width, width, std=width**-0.5)
    s[f"{head}attn.out_proj.bias"] = _rand(g, width)
    _norm(s, f"{head}ln_2", width, g)
    s[f"{head}{mlp}.c_fc.weight"] = _rand(g, 4 * width, width, std=width**-0.5)
    s[f"{head}{mlp}.c_fc.bias"] = _rand(g, 4 * width)
    s[f"{head}{mlp}.c_proj.weight"] = _rand(g, width, 4 * width, std=(4 * width) ** -0.5)
    s[f"{head}{mlp}.c_proj.bias"] = _rand(g, width)


def openai_visual(
    s: dict[str, torch.Tensor], g: torch.Generator, *, width: int, embed: int, image: int = 32
) -> None:
    """OpenAI ViT keys under ``visual.`` (patch 16, one block)."""
    grid = image // 16
    s["visual.class_embedding"] = _rand(g, width, std=0.5)
    s["visual.positional_embedding"] = _rand(g, grid * grid + 1, width, std=0.5)
    s["visual.conv1.weight"] = _rand(g, width, 3, 16, 16, std=0.05)
    _norm(s, "visual.ln_pre", width, g)
    openai_block(s, "visual.transformer.resblocks.0.", width, g)
    _norm(s, "visual.ln_post", width, g)
    s["visual.proj"] = _rand(g, width, embed, std=width**-0.5)


def longclip_state(seed: int = 0, *, width: int = 64, embed: int = 32) -> dict[str, torch.Tensor]:
    """A Long-CLIP state dict: OpenAI keys, 248-row ``positional_embedding`` and ``_res``."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    s["positional_embedding"] = _rand(g, 248, width, std=0.5)
    s["positional_embedding_res"] = _rand(g, 248, width, std=0.5)
    s["token_embedding.weight"] = _rand(g, VOCAB, width, std=0.5)
    openai_block(s, "transformer.resblocks.0.", width, g)
    _norm(s, "ln_final", width, g)
    s["text_projection"] = _rand(g, width, embed, std=width**-0.5)
    s["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    openai_visual(s, g, width=width, embed=embed)
    return s


def save_longclip(path: Path, seed: int = 0, **kw: int) -> dict[str, torch.Tensor]:
    """As released: fp16, saved from DataParallel (``module.`` prefix). Returns fp32 weights."""
    state = {k: v.half() for k, v in longclip_state(seed, **kw).items()}
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return {k: v.float() for k, v in state.items()}


# -- reference forwards (plain torch) ------------------------------------------------------------


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def layer_norm(x: torch.Tensor, s: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], s[f"{key}.weight"], s[f"{key}.bias"], eps=1e-5)


def attention(
    x: torch.Tensor,
    s: dict[str, torch.Tensor],
    head: str,
    heads: int,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Multi-head self-attention with OpenAI's packed in-projection; x is (n, L, width)."""
    n, length, width = x.shape
    qkv = x @ s[f"{head}in_proj_weight"].T + s[f"{head}in_proj_bias"]
    q, k, v = (t.reshape(n, length, heads, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        scores = scores + mask
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
    return out @ s[f"{head}out_proj.weight"].T + s[f"{head}out_proj.bias"]


def openai_block_forward(
    x: torch.Tensor, s: dict[str, torch.Tensor], head: str, heads: int, mask: torch.Tensor | None
) -> torch.Tensor:
    x = x + attention(layer_norm(x, s, f"{head}ln_1"), s, f"{head}attn.", heads, mask)
    h = layer_norm(x, s, f"{head}ln_2") @ s[f"{head}mlp.c_fc.weight"].T + s[f"{head}mlp.c_fc.bias"]
    return x + quick_gelu(h) @ s[f"{head}mlp.c_proj.weight"].T + s[f"{head}mlp.c_proj.bias"]


def causal_mask(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf")).triu(1)


def openai_image_features(s: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    width = s["visual.class_embedding"].shape[0]
    x = F.conv2d(pixels, s["visual.conv1.weight"], stride=16).flatten(2).transpose(1, 2)
    cls = s["visual.class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + s["visual.positional_embedding"]
    x = layer_norm(x, s, "visual.ln_pre")
    x = openai_block_forward(x, s, "visual.transformer.resblocks.0.", width // 64, None)
    return layer_norm(x[:, 0], s, "visual.ln_post") @ s["visual.proj"]


def openai_pixels(image: Image.Image, size: int = 32) -> torch.Tensor:
    """OpenAI's preprocessing: short side to ``size`` (bicubic), center crop, RGB, normalise."""
    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    im = image.convert("RGB").resize(new, Image.Resampling.BICUBIC)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    im = im.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]


def clip_bpe_ids(texts: list[str], context: int) -> torch.Tensor:
    """CLIP BPE with sot/eot, cut to ``context`` keeping eot last, zero padded (CLIP's rule)."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    sot, eot = bpe.encoder["<start_of_text>"], bpe.encoder["<end_of_text>"]
    out = torch.zeros(len(texts), context, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot, *bpe.encode(text), eot]
        if len(ids) > context:
            ids = ids[:context]
            ids[-1] = eot
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def longclip_text_features(
    s: dict[str, torch.Tensor], texts: list[str], *, use_res: bool = True
) -> torch.Tensor:
    """Long-CLIP's encode_text: pe on positions 0-19, pe_res on 20-247 (``use_res=False``:
    the stock-CLIP mistake of keeping only ``positional_embedding``)."""
    ids = clip_bpe_ids(texts, 248)
    pe = s["positional_embedding"]
    res = s["positional_embedding_res"] if use_res else pe
    mask1 = torch.zeros(248, 1)
    mask1[:20] = 1
    x = s["token_embedding.weight"][ids] + pe * mask1 + res * (1 - mask1)
    width = x.shape[-1]
    x = openai_block_forward(x, s, "transformer.resblocks.0.", width // 64, causal_mask(248))
    x = layer_norm(x, s, "ln_final")
    return x[torch.arange(len(texts)), ids.argmax(-1)] @ s["text_projection"]


def texts_of_lengths(lengths: list[int]) -> list[str]:
    """Texts of about the given CLIP BPE token counts (common words: one token each)."""
    words = "the red cat sat on a blue mat near an old green door".split()
    return [" ".join(words[i % len(words)] for i in range(n)) for n in lengths]


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (32, 32), (64, 20), (48, 48)]
    return [
        Image.fromarray(rng.integers(0, 255, (*sizes[i % 4], 3), dtype=np.uint8)) for i in range(n)
    ]


# -- TULIP ---------------------------------------------------------------------------------------


def tulip_state(seed: int = 0, *, width: int = 128, embed: int = 32) -> dict[str, torch.Tensor]:
    """TULIP's CLIP state dict: rotary text tower keys (OpenAI names), an unused 77-row
    ``positional_embedding``, ``logit_scale`` and an OpenAI ViT under ``visual.``."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    s["positional_embedding"] = _rand(g, 77, width, std=0.5)  # left over, unused
    s["token_embedding.weight"] = _rand(g, VOCAB, width, std=0.5)
    openai_block(s, "transformer.resblocks.0.", width, g)
    _norm(s, "ln_final", width, g)
    s["text_projection"] = _rand(g, width, embed, std=width**-0.5)
    s["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    openai_visual(s, g, width=64, embed=embed)
    return s


def save_tulip(path: Path, seed: int = 0, **kw: int) -> dict[str, torch.Tensor]:
    """As TULIP's training saves it: an open_clip checkpoint dict, DDP ``module.`` keys."""
    state = tulip_state(seed, **kw)
    torch.save(
        {"epoch": 1, "name": "tulip", "state_dict": {f"module.{k}": v for k, v in state.items()}},
        path,
    )
    return state


def rope_complex(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary embedding as TULIP writes it: consecutive pairs as complex numbers times
    cis(position x frequency); x is (n, heads, L, head_dim)."""
    dim, length = x.shape[-1], x.shape[-2]
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    cis = torch.polar(torch.ones(length, dim // 2), torch.outer(torch.arange(length), freqs))
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * cis).flatten(-2)


def tulip_text_features(
    s: dict[str, torch.Tensor], texts: list[str], *, rope: bool = True, gelu: str = "erf"
) -> torch.Tensor:
    """TULIP's TextTransformerRoPE.encode_text (``rope=False`` / ``gelu="quick"``: what a stock
    CLIP text tower without the rotary positions or with QuickGELU would compute)."""
    ids = clip_bpe_ids(texts, 248)
    x = s["token_embedding.weight"][ids]
    n, length, width = x.shape
    heads, head = width // 64, "transformer.resblocks.0."
    h = layer_norm(x, s, f"{head}ln_1")
    qkv = h @ s[f"{head}attn.in_proj_weight"].T + s[f"{head}attn.in_proj_bias"]
    q, k, v = (t.reshape(n, length, heads, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    if rope:
        q, k = rope_complex(q), rope_complex(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads) + causal_mask(length)
    att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
    x = x + att @ s[f"{head}attn.out_proj.weight"].T + s[f"{head}attn.out_proj.bias"]
    h = layer_norm(x, s, f"{head}ln_2") @ s[f"{head}mlp.c_fc.weight"].T + s[f"{head}mlp.c_fc.bias"]
    h = F.gelu(h) if gelu == "erf" else quick_gelu(h)
    x = x + h @ s[f"{head}mlp.c_proj.weight"].T + s[f"{head}mlp.c_proj.bias"]
    x = layer_norm(x, s, "ln_final")
    return x[torch.arange(n), ids.argmax(-1)] @ s["text_projection"]
