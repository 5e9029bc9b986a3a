"""A tiny random FG-CLIP 2 folder in the released layout, and its long-text tower in plain torch.

Layout (360CVGroup/FG-CLIP ``fgclip2/model/strcs``): ``config.json`` of model type ``fgclip2``
(text ``fgclip2_text_model`` with ``max_position_embeddings`` 64, ``keep_len`` 20,
``longtext_len`` 196; vision ``fgclip2_vision_model``), safetensors with SigLIP 2's keys plus
``text_model.embeddings.position_embedding_ori`` / ``_res`` (196 rows), ``longtext_head``,
``boxtext_head`` and ``dense_feature_head``; a Gemma tokenizer (which does not lower-case) and a
``preprocessor_config.json`` of ``Fgclip2ImageProcessor`` with ``dynamic_max_patches``.

`reference_long_text` re-implements ``get_text_features(walk_type="long")`` from those facts:
no causal mask, padding masked out of attention, pooling at the last position, then
``longtext_head`` (not the text tower's own head).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiny_models import CHAR_VOCAB

WIDTH, HEADS, PATCH = 32, 2, 4


def gemma_tokenizer() -> Any:
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for ch in CHAR_VOCAB + "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        vocab[ch] = len(vocab)
    return GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=False, add_eos_token=True,
                          model_max_length=64)  # fmt: skip


def make_tiny_fgclip2(folder: Path, *, seed: int = 0, drop: tuple[str, ...] = ()) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import Siglip2Config, Siglip2Model

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = gemma_tokenizer()
    tower = {"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": HEADS}  # fmt: skip
    text = {"vocab_size": len(tokenizer), "max_position_embeddings": 64, "pad_token_id": 0,
            "eos_token_id": 1, "bos_token_id": 2, **tower}  # fmt: skip
    vision = {"num_patches": 16, "patch_size": PATCH, **tower}
    torch.manual_seed(seed)
    model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-3.0)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    emb = "text_model.embeddings."
    state[emb + "position_embedding_ori.weight"] = torch.randn(196, WIDTH) * 0.5
    state[emb + "position_embedding_res.weight"] = torch.randn(196, WIDTH) * 0.5
    for head in ("longtext_head", "boxtext_head"):
        state[head + ".weight"] = torch.randn(WIDTH, WIDTH) * 0.2
        state[head + ".bias"] = torch.randn(WIDTH) * 0.1
    for key in [k for k in state if k.startswith("vision_model.head.")]:
        state["dense_feature_head." + key.removeprefix("vision_model.head.")] = state[key] * 1.1
    for key in drop:
        state.pop(key)
    save_file(state, str(folder / "model.safetensors"))
    config = {
        "architectures": ["FG_CLIP2_Model"],
        "model_type": "fgclip2",
        "text_config": {**text, "model_type": "fgclip2_text_model", "keep_len": 20,
                        "longtext_len": 196, "projection_size": WIDTH},
        "vision_config": {**vision, "model_type": "fgclip2_vision_model"},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    tokenizer.save_pretrained(folder)
    processor = {"image_processor_type": "Fgclip2ImageProcessor", "do_resize": True,
                 "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
                 "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                 "image_std": [0.5, 0.5, 0.5], "patch_size": PATCH, "max_num_patches": 256,
                 "dynamic_max_patches": True}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return folder


def reference_long_text(s: dict[str, Any], ids: Any, mask: Any) -> Any:
    """get_text_features(walk_type="long") on ids padded to 196, normalised."""
    import torch
    import torch.nn.functional as F

    e = "text_model.embeddings."
    n = ids.shape[1]
    keep = (torch.arange(n) < 20).float()[:, None]
    pos = s[e + "position_embedding_ori.weight"][:n] * keep
    pos = pos + s[e + "position_embedding_res.weight"][:n] * (1 - keep)
    x = s[e + "token_embedding.weight"][ids] + pos
    blocked = (mask == 0)[:, None, None, :]  # padding keys

    def ln(t: Any, name: str) -> Any:
        return F.layer_norm(t, (WIDTH,), s[name + ".weight"], s[name + ".bias"], eps=1e-6)

    def lin(t: Any, name: str) -> Any:
        return t @ s[name + ".weight"].T + s[name + ".bias"]

    b = len(ids)
    for i in range(2):
        p = f"text_model.encoder.layers.{i}."
        h = ln(x, p + "layer_norm1")
        q, k, v = (lin(h, p + f"self_attn.{m}_proj").view(b, n, HEADS, -1).transpose(1, 2)
                   for m in "qkv")  # fmt: skip
        att = (q @ k.transpose(-1, -2)) / (WIDTH // HEADS) ** 0.5
        att = att.masked_fill(blocked, float("-inf")).softmax(-1)
        x = x + lin((att @ v).transpose(1, 2).reshape(b, n, WIDTH), p + "self_attn.out_proj")
        h = lin(ln(x, p + "layer_norm2"), p + "mlp.fc1")
        x = x + lin(F.gelu(h, approximate="tanh"), p + "mlp.fc2")
    pooled = ln(x, "text_model.final_layer_norm")[:, -1]
    return F.normalize(lin(pooled, "longtext_head"), dim=-1)
