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


def openai_pixels(
    image: Image.Image,
    size: int = 32,
    mean: tuple[float, ...] = OPENAI_MEAN,
    std: tuple[float, ...] = OPENAI_STD,
) -> torch.Tensor:
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
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def openai_image_embeddings(s: dict[str, torch.Tensor], images: list[Image.Image]) -> torch.Tensor:
    """Unit image embeddings of ``images`` by the reference tower, after OpenAI's preprocessing."""
    pixels = torch.stack([openai_pixels(im) for im in images])
    return F.normalize(openai_image_features(s, pixels), dim=-1)


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


# -- LoTLIP --------------------------------------------------------------------------------------

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_WORDS = "the red cat sat on a blue mat near an old green door . , ##s".split()
BERT_WIDTH, BERT_FFN, TIMM_WIDTH = 64, 128, 64


def write_bert_folder(folder: Path) -> Path:
    """A tiny bert-base-uncased-style folder: config.json, vocab.txt, tokenizer_config.json."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [*BERT_SPECIALS, *BERT_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}), encoding="utf-8"
    )
    config = {
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": len(vocab),
        "hidden_size": BERT_WIDTH, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": BERT_FFN, "hidden_act": "gelu", "max_position_embeddings": 128,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _linear(s: dict[str, torch.Tensor], key: str, out: int, inp: int, g: torch.Generator) -> None:
    s[f"{key}.weight"] = _rand(g, out, inp, std=inp**-0.5)
    s[f"{key}.bias"] = _rand(g, out, std=0.1)


def lotlip_state(seed: int = 0, *, embed: int = TIMM_WIDTH) -> dict[str, torch.Tensor]:
    """LoTLIP's CustomTextCLIP keys: BERT (4.x names) with 2 corner rows, text.proj, a timm
    ViT (patch 16, 32 px, one block) under visual.trunk, logit_scale, the old position_ids."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    w, vocab = BERT_WIDTH, len(BERT_SPECIALS) + len(BERT_WORDS) + 2
    b = "text.transformer."
    s[f"{b}embeddings.word_embeddings.weight"] = _rand(g, vocab, w, std=0.5)
    s[f"{b}embeddings.position_embeddings.weight"] = _rand(g, 128, w, std=0.5)
    s[f"{b}embeddings.token_type_embeddings.weight"] = _rand(g, 2, w, std=0.5)
    s[f"{b}embeddings.position_ids"] = torch.arange(128)[None]
    _norm(s, f"{b}embeddings.LayerNorm", w, g)
    layer = f"{b}encoder.layer.0."
    for name in ("query", "key", "value"):
        _linear(s, f"{layer}attention.self.{name}", w, w, g)
    _linear(s, f"{layer}attention.output.dense", w, w, g)
    _norm(s, f"{layer}attention.output.LayerNorm", w, g)
    _linear(s, f"{layer}intermediate.dense", BERT_FFN, w, g)
    _linear(s, f"{layer}output.dense", w, BERT_FFN, g)
    _norm(s, f"{layer}output.LayerNorm", w, g)
    _linear(s, f"{b}pooler.dense", w, w, g)
    s["text.proj.weight"] = _rand(g, embed, w, std=w**-0.5)
    v, t = TIMM_WIDTH, "visual.trunk."
    s[f"{t}cls_token"] = _rand(g, 1, 1, v, std=0.5)
    s[f"{t}pos_embed"] = _rand(g, 1, 5, v, std=0.5)
    _linear(s, f"{t}patch_embed.proj", v, 3 * 16 * 16, g)
    s[f"{t}patch_embed.proj.weight"] = s[f"{t}patch_embed.proj.weight"].reshape(v, 3, 16, 16)
    blk = f"{t}blocks.0."
    _norm(s, f"{blk}norm1", v, g)
    _linear(s, f"{blk}attn.qkv", 3 * v, v, g)
    _linear(s, f"{blk}attn.proj", v, v, g)
    _norm(s, f"{blk}norm2", v, g)
    _linear(s, f"{blk}mlp.fc1", 4 * v, v, g)
    _linear(s, f"{blk}mlp.fc2", v, 4 * v, g)
    _norm(s, f"{t}norm", v, g)
    s["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return s


def save_lotlip(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    state = lotlip_state(seed)
    torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


def _ln(x: torch.Tensor, s: dict[str, torch.Tensor], key: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], s[f"{key}.weight"], s[f"{key}.bias"], eps=eps)


def _lin(x: torch.Tensor, s: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return x @ s[f"{key}.weight"].T + s[f"{key}.bias"]


def lotlip_mask(ids: torch.Tensor, corners: int = 2) -> torch.Tensor:
    """LoTLIP's build_attn_mask, written per text and per row as its code reads."""
    n, length = ids.shape
    mask = torch.zeros(n, length, length)
    for i in range(n):
        for q in range(length):
            for k in range(length):
                if k <= corners:  # [CLS] and the corners
                    keep = (q == k) or (k == 0 and q > corners)
                else:
                    keep = bool(ids[i, k] != 0)
                mask[i, q, k] = 1.0 if keep else 0.0
    return mask


def lotlip_text_features(
    s: dict[str, torch.Tensor], ids: torch.Tensor, *, corner_mask: bool = True
) -> torch.Tensor:
    """BERT + pooler + proj with LoTLIP's mask (``corner_mask=False``: a plain padding mask,
    what a stock BERT text tower would use)."""
    b, heads = "text.transformer.", 2
    n, length = ids.shape
    x = s[f"{b}embeddings.word_embeddings.weight"][ids]
    x = x + s[f"{b}embeddings.position_embeddings.weight"][:length]
    x = x + s[f"{b}embeddings.token_type_embeddings.weight"][0]
    x = _ln(x, s, f"{b}embeddings.LayerNorm", 1e-12)
    if corner_mask:
        allowed = lotlip_mask(ids)
    else:
        allowed = (ids != 0).float()[:, None, :].expand(n, length, length)
    bias = (1.0 - allowed)[:, None] * torch.finfo(torch.float32).min
    layer = f"{b}encoder.layer.0."
    q, k, v = (
        _lin(x, s, f"{layer}attention.self.{name}").reshape(n, length, heads, -1).transpose(1, 2)
        for name in ("query", "key", "value")
    )
    att = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias).softmax(-1) @ v
    att = att.transpose(1, 2).reshape(n, length, -1)
    x = _ln(_lin(att, s, f"{layer}attention.output.dense") + x, s,
            f"{layer}attention.output.LayerNorm", 1e-12)  # fmt: skip
    h = F.gelu(_lin(x, s, f"{layer}intermediate.dense"))
    x = _ln(_lin(h, s, f"{layer}output.dense") + x, s, f"{layer}output.LayerNorm", 1e-12)
    pooled = torch.tanh(_lin(x[:, 0], s, f"{b}pooler.dense"))
    return pooled @ s["text.proj.weight"].T


def timm_vit_features(s: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """timm ViT (one block, one head of 64), class-token output after the final norm."""
    t, blk = "visual.trunk.", "visual.trunk.blocks.0."
    x = F.conv2d(pixels, s[f"{t}patch_embed.proj.weight"], s[f"{t}patch_embed.proj.bias"], 16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s[f"{t}cls_token"].expand(len(x), 1, -1), x], dim=1) + s[f"{t}pos_embed"]
    h = _ln(x, s, f"{blk}norm1", 1e-6)
    q, k, v = _lin(h, s, f"{blk}attn.qkv").chunk(3, dim=-1)
    att = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1) @ v
    x = x + _lin(att, s, f"{blk}attn.proj")
    x = x + _lin(F.gelu(_lin(_ln(x, s, f"{blk}norm2", 1e-6), s, f"{blk}mlp.fc1")), s,
                 f"{blk}mlp.fc2")  # fmt: skip
    return _ln(x, s, f"{t}norm", 1e-6)[:, 0]


def half_pixels(image: Image.Image, size: int = 32) -> torch.Tensor:
    """timm's eval transform at crop_pct 1 with mean / std 0.5 (short side, center crop)."""
    return openai_pixels(image, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
