"""A tiny random FG-CLIP v1 folder in the released layout, and FG-CLIP's forward in plain torch.

Layout (360CVGroup/FG-CLIP v1.0, ``fgclip/model/clip_strc``): ``config.json`` of model type
``clip`` (architectures ``FGCLIPModel``, text ``max_position_embeddings`` 77), one
``model.safetensors`` with the stock CLIP keys plus ``text_model.embeddings.position_embedding_ori``
/ ``_res`` (248 rows), ``text_filip_projection`` and the training-only ``logit_scale_finegraind``
/ ``logit_scale_hardneg``; CLIP tokenizer and image processor files.

`reference_text` / `reference_image` re-implement the family's forward from those facts
(CLIP pre-LN blocks with quick-GELU, causal mask, pooling at the first end token 49407): they
share no code with the scorer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiny_models import write_clip_bpe

WIDTH, HEADS, PROJ = 32, 2, 16
EOS = 49407


def make_tiny_fgclip(folder: Path, *, seed: int = 0, drop: tuple[str, ...] = ()) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tower = {"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": HEADS}  # fmt: skip
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "max_position_embeddings": 77, **tower},
        vision_config={"image_size": 32, "patch_size": 16, **tower},
        projection_dim=PROJ,
    )
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in CLIPModel(config).state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    emb = "text_model.embeddings."
    state[emb + "position_embedding_ori.weight"] = torch.randn(248, WIDTH) * 0.5
    state[emb + "position_embedding_res.weight"] = torch.randn(248, WIDTH) * 0.5
    state["text_filip_projection.weight"] = torch.randn(PROJ, WIDTH) * 0.2
    state["logit_scale_finegraind"] = torch.tensor(2.0)
    state["logit_scale_hardneg"] = torch.tensor(2.5)
    for key in drop:
        state.pop(key)
    save_file(state, str(folder / "model.safetensors"))
    data = config.to_dict()
    data.update(architectures=["FGCLIPModel"], model_type="clip")
    (folder / "config.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    vocab, merges = write_clip_bpe(folder)
    CLIPTokenizer(str(vocab), str(merges), model_max_length=77).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


# -- FG-CLIP's forward, written out ------------------------------------------------------------


def _block(x: Any, s: dict[str, Any], p: str, causal: bool) -> Any:
    import torch

    def ln(t: Any, name: str) -> Any:
        return torch.nn.functional.layer_norm(t, (WIDTH,), s[name + ".weight"], s[name + ".bias"])

    def lin(t: Any, name: str) -> Any:
        return t @ s[name + ".weight"].T + s[name + ".bias"]

    b, n, _ = x.shape
    h = ln(x, p + "layer_norm1")
    q, k, v = (lin(h, p + f"self_attn.{m}_proj").view(b, n, HEADS, -1).transpose(1, 2)
               for m in "qkv")  # fmt: skip
    att = (q @ k.transpose(-1, -2)) / (WIDTH // HEADS) ** 0.5
    if causal:
        att = att.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    out = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, WIDTH)
    x = x + lin(out, p + "self_attn.out_proj")
    h = lin(ln(x, p + "layer_norm2"), p + "mlp.fc1")
    return x + lin(h * torch.sigmoid(1.702 * h), p + "mlp.fc2")  # quick-GELU


def reference_text(s: dict[str, Any], ids: Any, *, long: bool) -> Any:
    """FG-CLIP get_text_features(walk_short_pos=not long) on padded ids, normalised."""
    import torch

    e = "text_model.embeddings."
    n = ids.shape[1]
    if long:  # position_embedding_ori on 0-19, position_embedding_res on 20-247 (two masks)
        mask = (torch.arange(n) < 20).float()[:, None]
        pos = s[e + "position_embedding_ori.weight"][:n] * mask
        pos = pos + s[e + "position_embedding_res.weight"][:n] * (1 - mask)
    else:
        pos = s[e + "position_embedding.weight"][:n]
    x = s[e + "token_embedding.weight"][ids] + pos
    for i in range(2):
        x = _block(x, s, f"text_model.encoder.layers.{i}.", causal=True)
    ln = "text_model.final_layer_norm."
    x = torch.nn.functional.layer_norm(x, (WIDTH,), s[ln + "weight"], s[ln + "bias"])
    pooled = x[torch.arange(len(ids)), (ids == EOS).int().argmax(-1)]
    proj = s["text_filip_projection.weight" if long else "text_projection.weight"]
    return torch.nn.functional.normalize(pooled @ proj.T, dim=-1)


def reference_image(s: dict[str, Any], pixels: Any) -> Any:
    """CLIP vision tower + visual_projection on processed pixels, normalised."""
    import torch

    v = "vision_model."
    patches = torch.nn.functional.conv2d(pixels, s[v + "embeddings.patch_embedding.weight"],
                                         stride=16)  # fmt: skip
    x = patches.flatten(2).transpose(1, 2)
    cls = s[v + "embeddings.class_embedding"].expand(len(x), 1, WIDTH)
    x = torch.cat([cls, x], 1) + s[v + "embeddings.position_embedding.weight"]
    ln = torch.nn.functional.layer_norm
    x = ln(x, (WIDTH,), s[v + "pre_layrnorm.weight"], s[v + "pre_layrnorm.bias"])
    for i in range(2):
        x = _block(x, s, f"{v}encoder.layers.{i}.", causal=False)
    pooled = ln(x[:, 0], (WIDTH,), s[v + "post_layernorm.weight"], s[v + "post_layernorm.bias"])
    return torch.nn.functional.normalize(pooled @ s["visual_projection.weight"].T, dim=-1)
