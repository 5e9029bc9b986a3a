"""FLAIR's torch module (`densecap_eval.scorers.flair` builds it when a model loads).

Kept apart so that importing the scorer module does not import torch or open_clip.
"""

from __future__ import annotations

from typing import Any

import torch
from open_clip.transformer import LayerNorm, Transformer
from torch import nn


class Vision(nn.Module):
    """The ViT up to ``ln_post``: (class token, patch tokens), nothing projected."""

    def __init__(self, arch: dict[str, Any], head_width: int) -> None:
        super().__init__()
        w, p, g = arch["vision_width"], arch["patch_size"], arch["image_size"]
        self.image_size = g
        self.conv1 = nn.Conv2d(3, w, kernel_size=p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.positional_embedding = nn.Parameter(torch.zeros((g // p) ** 2 + 1, w))
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(
            w, arch["vision_layers"], w // head_width, arch["vision_mlp"] / w
        )
        self.ln_post = LayerNorm(w)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # (n, grid², width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_post(self.transformer(self.ln_pre(x)))
        return x[:, 0], x[:, 1:]


class Projection(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.zeros(d_in, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.proj


class AttentionPool(nn.Module):
    """FLAIR's pooling block: layer norms on query, keys and values, then attention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, add_zero_attn=True)
        self.ln_q, self.ln_k, self.ln_v = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(self.ln_q(q), self.ln_k(kv), self.ln_v(kv), need_weights=False)
        return out

    def forward_shared(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """``forward(q for every image, kv)``: (C, dim) x (R, tokens, dim) -> (R, C, dim).

        ``MultiheadAttention`` would project the C queries again for each of the R images
        (2-3x the time): this is its ``add_zero_attn`` computation on its own weights (one
        zero key and value per head, appended after the projections), queries projected
        once.
        """
        import torch.nn.functional as F

        a = self.attn
        d, h = a.embed_dim, a.num_heads
        w, b = a.in_proj_weight, a.in_proj_bias
        r, t = kv.shape[0], kv.shape[1]
        qh = F.linear(self.ln_q(q), w[:d], b[:d]).view(-1, h, d // h).transpose(0, 1)
        k = F.linear(self.ln_k(kv), w[d : 2 * d], b[d : 2 * d])
        v = F.linear(self.ln_v(kv), w[2 * d :], b[2 * d :])
        k, v = (x.view(r, t, h, d // h).transpose(1, 2) for x in (k, v))
        zero = k.new_zeros(r, h, 1, d // h)
        out = F.scaled_dot_product_attention(
            qh.unsqueeze(0).expand(r, -1, -1, -1),
            torch.cat([k, zero], dim=2),
            torch.cat([v, zero], dim=2),
        )
        return a.out_proj(out.transpose(1, 2).reshape(r, -1, d))


class FlairModule(nn.Module):
    """FLAIR: open_clip towers, ``image_post`` / ``text_post`` projections and the
    ``visual_proj`` attention pooling; parameter names are the checkpoint's keys."""

    def __init__(
        self, arch: dict[str, Any], *, vision_head_width: int, text_heads: int, pool_heads: int
    ) -> None:
        super().__init__()
        d, tw = arch["embed_dim"], arch["text_width"]
        self.context_length = arch["context_length"]
        self.visual = Vision(arch, vision_head_width)
        self.transformer = Transformer(tw, arch["text_layers"], text_heads, arch["text_mlp"] / tw)
        self.token_embedding = nn.Embedding(arch["vocab_size"], tw)
        self.positional_embedding = nn.Parameter(torch.zeros(self.context_length, tw))
        self.ln_final = LayerNorm(tw)
        self.image_post = Projection(arch["vision_width"], d)
        self.text_post = Projection(tw, d)
        self.visual_proj = AttentionPool(d, pool_heads)
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.logit_bias = nn.Parameter(torch.zeros(()))
        causal = torch.full((self.context_length, self.context_length), float("-inf"))
        self.register_buffer("attn_mask", causal.triu_(1), persistent=False)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Global mode: the class token through ``image_post``."""
        return self.image_post(self.visual(pixels)[0])

    def encode_image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Late mode: the patch tokens through ``image_post``, (n, tokens, embed_dim)."""
        return self.image_post(self.visual(pixels)[1])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """The end token's state through ``text_post`` (argmax pooling), unnormalised."""
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        return self.text_post(x[torch.arange(x.shape[0]), ids.argmax(dim=-1)])
