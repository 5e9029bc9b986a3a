"""``longclip:FILE.pt`` / ``longclip:BeichenZhang/LongCLIP-L``: Long-CLIP (and LongCLIP-GmP).

A released file is a plain state dict with OpenAI CLIP key names (maybe ``module.``-prefixed,
maybe fp16) plus ``positional_embedding_res``: Long-CLIP adds ``positional_embedding`` to
positions 0-19 and ``positional_embedding_res`` to positions 20-247, which is one table
``cat(pe[:20], pe_res[20:])``. The model is an open_clip ``CLIP`` (QuickGELU, argmax pooling,
248-token causal text tower) built from the checkpoint's shapes, loaded strictly with the
merged table, with OpenAI's preprocessing and the CLIP BPE tokenizer at context 248 (a longer
text keeps 247 tokens + EOT, as Long-CLIP's ``tokenize(truncate=True)``).

``?protocol=longclip`` rounds the weights Long-CLIP's ``build_model`` casts to fp16 (linear,
conv and attention weights, the projections) through fp16, as its own loader does; its
published GPU numbers also compute in fp16 (add ``--precision fp16`` on a GPU for that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import spec_loader
from densecap_eval.scorers.hubfile import resolve_checkpoint
from densecap_eval.scorers.openclip import OpenClipScorer, load_state_dict_checked, read_state_dict
from densecap_eval.scorers.vlm_common import split_spec

if TYPE_CHECKING:
    from pathlib import Path

    import torch

CONTEXT = 248  # Long-CLIP's text positions (4 * 77 - 3 * 20)
KEEP = 20  # positions taken from ``positional_embedding``; the rest from ``_res``
PROTOCOLS = ("ours", "longclip")
HUB_FILES = {"BeichenZhang/LongCLIP-L": "longclip-L.pt", "BeichenZhang/LongCLIP-B": "longclip-B.pt"}
# Keys whose shapes give the architecture (as OpenAI's ``build_model`` reads them).
VISION_KEYS = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj")
_SHAPE_KEYS = (
    *VISION_KEYS,
    "text_projection",
    "token_embedding.weight",
    "ln_final.weight",
)


class LongClipScorer(OpenClipScorer):
    """Long-CLIP as an open_clip CLIP with the merged 248-row position table."""


def merge_position_tables(state: dict[str, torch.Tensor], path: Path) -> None:
    """Replace the two tables by the one Long-CLIP effectively adds (in place); refuse others."""
    import torch

    if "positional_embedding_res" not in state:
        raise ModelLoadError(
            f"checkpoint {path} has no positional_embedding_res: not a Long-CLIP checkpoint "
            "(a plain OpenAI CLIP one? load it with open_clip: instead)"
        )
    if "positional_embedding" not in state:
        raise ModelLoadError(f"checkpoint {path} has no positional_embedding")
    pe, res = state.pop("positional_embedding"), state.pop("positional_embedding_res")
    for name, table in (("positional_embedding", pe), ("positional_embedding_res", res)):
        if table.ndim != 2 or table.shape[0] != CONTEXT:
            raise ModelLoadError(
                f"checkpoint {path}: {name} has shape {tuple(table.shape)}, Long-CLIP's text "
                f"tower has {CONTEXT} positions (a table is never cut or padded to fit)"
            )
    if pe.shape != res.shape:
        raise ModelLoadError(
            f"checkpoint {path}: positional_embedding {tuple(pe.shape)} and "
            f"positional_embedding_res {tuple(res.shape)} differ in width"
        )
    state["positional_embedding"] = torch.cat([pe[:KEEP], res[KEEP:]])


def build_model(state: dict[str, torch.Tensor], path: Path) -> Any:
    """An open_clip CLIP shaped like the checkpoint (OpenAI's shape rules), loaded strictly."""
    import open_clip

    missing = [k for k in _SHAPE_KEYS if k not in state]
    if missing:
        raise ModelLoadError(
            f"checkpoint {path} lacks {', '.join(missing)} (a truncated file, or not an OpenAI-"
            "layout ViT CLIP: Long-CLIP releases ViT-B/16 and ViT-L/14)"
        )
    for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI JIT leftovers
        state.pop(key, None)
    merge_position_tables(state, path)
    text_width = int(state["ln_final.weight"].shape[0])
    text_cfg = open_clip.CLIPTextCfg(
        context_length=CONTEXT,
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        width=text_width,
        heads=max(1, text_width // 64),  # OpenAI's head width 64
        layers=count_blocks(state, "transformer.resblocks."),
    )
    model = open_clip.CLIP(
        int(state["text_projection"].shape[1]),
        vision_cfg=openai_vision_cfg(state),
        text_cfg=text_cfg,
        quick_gelu=True,
    )
    load_state_dict_checked(model, state, path)
    return model


def openai_vision_cfg(state: dict[str, torch.Tensor]) -> Any:
    """open_clip ``CLIPVisionCfg`` of an OpenAI-layout ViT under ``visual.`` (head width 64)."""
    import open_clip

    conv = state["visual.conv1.weight"]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return open_clip.CLIPVisionCfg(
        layers=count_blocks(state, "visual.transformer.resblocks."),
        width=int(conv.shape[0]),
        patch_size=int(conv.shape[-1]),
        image_size=int(conv.shape[-1]) * grid,
    )


def count_blocks(state: dict[str, Any], head: str) -> int:
    """Number of residual blocks ``head<i>.*`` in a state dict."""
    return len({k[len(head) :].split(".")[0] for k in state if k.startswith(head)})


def round_through_fp16(model: Any) -> None:
    """What Long-CLIP's ``build_model`` + ``float()`` do to the weights (in place).

    Its ``convert_weights`` casts conv / linear weights and biases, the attention input
    projections and ``text_projection`` / ``proj`` to fp16; embeddings and norms stay fp32.
    """
    import torch
    from torch import nn

    def rounded(t: torch.Tensor) -> None:
        t.data = t.data.half().float()

    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            rounded(module.weight)
            if module.bias is not None:
                rounded(module.bias)
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if getattr(module, name, None) is not None:
                    rounded(getattr(module, name))
            for name in ("in_proj_bias", "bias_k", "bias_v"):
                if getattr(module, name, None) is not None:
                    rounded(getattr(module, name))
        for name in ("text_projection", "proj"):
            value = getattr(module, name, None)
            if isinstance(value, torch.Tensor):
                rounded(value)


def parse_options(rest: str, *, spec: str) -> tuple[str, str]:
    """``FILE?protocol=...`` -> (file, protocol)."""
    name, options = split_spec(rest, "longclip", ("protocol",))
    protocol = options.get("protocol", "ours")
    if protocol not in PROTOCOLS:
        raise ModelLoadError(
            f"{spec}: unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})"
        )
    return name, protocol


@spec_loader("longclip")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> LongClipScorer:
    """Registry loader (via `spec_loader`) for the ``longclip:`` prefix."""
    import open_clip

    name, protocol = parse_options(rest, spec=spec)
    path, identity = resolve_checkpoint(name, spec=spec, default_file=HUB_FILES.get(name))
    try:
        model = build_model(read_state_dict(path), path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec}: {exc}") from exc
    if protocol == "longclip":
        round_through_fp16(model)
    model = model.to(device).eval()
    # OpenAI's: bicubic resize of the short side, center crop, RGB, OpenAI mean / std
    transform = open_clip.image_transform(model.visual.image_size[0], is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=CONTEXT)
    return LongClipScorer(
        model=model,
        transform=transform,
        tokenizer=tokenizer,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity={
            "backend": "longclip",
            **identity,
            "protocol": protocol,
        },
    )
