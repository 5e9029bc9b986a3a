"""TULIP's rotary text tower as a torch module (`densecap_eval.scorers.tulip` builds it).

Kept apart so that importing the scorer module does not import torch. Frequencies are
precomputed for ``2 x context`` positions with base ``theta`` (the module doc of
`densecap_eval.scorers.tulip`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on consecutive pairs (x0, x1), (x2, x3), ... of the last dimension."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class RotaryAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = (
            t.reshape(n, length, self.heads, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1)
        )
        # rotary positions on queries and keys only, per head, in fp32 as TULIP does
        q = rotate(q.float(), cos, sin).to(v.dtype)
        k = rotate(k.float(), cos, sin).to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = RotaryAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", nn.GELU())  # plain GELU, not CLIP's QuickGELU
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cos, sin, mask)
        return x + self.mlp(self.ln_2(x))


class Blocks(nn.Module):
    def __init__(self, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])


class RotaryTextTower(nn.Module):
    """TULIP's text tower; parameter names are the checkpoint's top-level text keys."""

    def __init__(
        self,
        *,
        context: int,
        theta: float,
        vocab: int,
        width: int,
        heads: int,
        layers: int,
        output_dim: int,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.transformer = Blocks(width, heads, layers)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        head_dim = width // heads
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim)
        )
        angles = torch.outer(torch.arange(2 * context).float(), inv_freq)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)
        causal = torch.full((context, context), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.token_embedding(ids)
        cos: torch.Tensor = self.get_buffer("rope_cos")[:length]
        sin: torch.Tensor = self.get_buffer("rope_sin")[:length]
        mask = self.get_buffer("causal_mask")[:length, :length]
        for block in self.transformer.resblocks:
            x = block(x, cos, sin, mask)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)] @ (
            self.text_projection
        )
