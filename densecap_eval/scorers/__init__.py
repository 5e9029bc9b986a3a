"""Scorers: turn a model spec string into a `Scorer`.

A spec is ``PREFIX:REST``. Each prefix maps, in the `SCORERS` registry, to a loader with
`load_scorer`'s own signature (`ScorerLoader`: ``load(spec, device=None, precision=None, *,
text_policy="truncate") -> Scorer``), given the whole spec, and to its scorer kind
(embedding / late-interaction / pair), declared once at registration. Backends are
registered as lazy ``"module:attr"`` strings so torch, open_clip and transformers are imported
only when a model is loaded; plugins add prefixes through the ``densecap_eval.scorers``
entry-point group (name = prefix, value = ``"module:loader"``).
"""

from __future__ import annotations

from densecap_eval.core.config import TextPolicy
from densecap_eval.core.errors import UnknownNameError
from densecap_eval.scorers.base import (
    SCORER_KINDS,
    EmbeddingScorer,
    LateInteractionScorer,
    PairScorer,
    Scorer,
    ScorerKind,
    ScorerLoader,
    TextEncoding,
)
from densecap_eval.scorers.catalog import KindOrUnknown, ModelCatalog, ModelFamily, ScorerRegistry

__all__ = [
    "MODELS",
    "SCORERS",
    "SCORER_KINDS",
    "EmbeddingScorer",
    "LateInteractionScorer",
    "ModelFamily",
    "PairScorer",
    "Scorer",
    "ScorerKind",
    "ScorerLoader",
    "TextEncoding",
    "list_models",
    "load_scorer",
    "scorer_kind",
]

SCORERS = ScorerRegistry()
SCORERS.register_prefix("open_clip", "densecap_eval.scorers.openclip:load", kind="embedding")
SCORERS.register_prefix("hf", "densecap_eval.scorers.hf:load", kind="embedding")
SCORERS.register_prefix("lora", "densecap_eval.scorers.lora:load", kind="embedding")
SCORERS.register_prefix("builtin", "densecap_eval.scorers.builtin:load", kind="embedding")
# vlm_route sends encoder-decoder configs (CLIP-FlanT5, ...) to vlm_seq2seq, the rest to vlm.
SCORERS.register_prefix("vqascore", "densecap_eval.scorers.vlm_route:load_vqascore", kind="pair")
SCORERS.register_prefix(
    "captionlik", "densecap_eval.scorers.vlm_route:load_captionlik", kind="pair"
)
SCORERS.register_prefix("itm", "densecap_eval.scorers.vlm_itm:load_itm", kind="pair")
SCORERS.register_prefix("longclip", "densecap_eval.scorers.longclip:load", kind="embedding")
SCORERS.register_prefix("tulip", "densecap_eval.scorers.tulip:load", kind="embedding")
SCORERS.register_prefix("lotlip", "densecap_eval.scorers.lotlip:load", kind="embedding")
SCORERS.register_prefix("fgclip", "densecap_eval.scorers.fgclip:load", kind="embedding")
SCORERS.register_prefix("fgclip2", "densecap_eval.scorers.fgclip2:load", kind="embedding")
SCORERS.register_prefix("flair", "densecap_eval.scorers.flair:load", kind="late-interaction")


# The model table (`densecap-eval models`, `list_models()`): one row per family a prefix reads;
# each row's kind is its prefix's, declared above.
MODELS = ModelCatalog(SCORERS.kind_of)
MODELS.add(
    "builtin",
    family="bundled tiny CLIP",
    text_limit="77",
    conversion="none (ships with the package)",
    example="builtin:tiny",
)
MODELS.add(
    "open_clip",
    family="open_clip architectures (CLIP, SigLIP, EVA, PE-Core, ...)",
    text_limit="the config's context_length",
    conversion="none: open_clip's own model, transform and tokenizer",
    example="open_clip:ViT-B-32/laion2b_s34b_b79k",
)
MODELS.add(
    "hf",
    family="transformers CLIP / SigLIP / SigLIP 2",
    text_limit="the config's max_position_embeddings",
    conversion="none: transformers' model and processor",
    example="hf:openai/clip-vit-base-patch32",
)
MODELS.add(
    "hf",
    family="MetaCLIP 2 (model type metaclip_2; first-end-token pooling, XLM-V tokenizer)",
    text_limit="the config's max_position_embeddings (77)",
    conversion="none: transformers' MetaClip2Model and processor",
    example="hf:facebook/metaclip-2-worldwide-huge-quickgelu",
)
MODELS.add(
    "hf",
    family="folders with their own modeling code (jina-clip, LLM2CLIP, ...): opt-in",
    text_limit="max_position_embeddings, else the tokenizer's model_max_length",
    conversion="none: the folder's code via get_text_features / get_image_features, "
    "local files only; code hashed into the fingerprint",
    example="hf:path/to/folder?trust_remote_code=1",
)
MODELS.add(
    "lora",
    family="peft LoRA adapter on an embedding spec (DCI's dci_pick1, ...)",
    text_limit="the base model's",
    conversion="adapter merged into the base weights",
    example="lora:path/to/dci_pick1@hf:openai/clip-vit-base-patch32",
)
MODELS.add(
    "vqascore",
    family="decoder VLM P(first answer token): LLaVA-1.5/OneVision, Qwen2/2.5/3-VL, "
    "InternVL3 -hf, Gemma 3, SmolVLM2/Idefics3, PaliGemma 2, Llama 3.2 Vision, Mistral 3; "
    "?parity=t2v_metrics (LLaVA-1.5)",
    text_limit="the context left after the image tokens",
    conversion="none: transformers' model and processor (docs/models.md, VLM families)",
    example="vqascore:llava-hf/llava-1.5-7b-hf",
)
MODELS.add(
    "captionlik",
    family="decoder VLM caption log-likelihood (the vqascore: decoder families)",
    text_limit="the context left after the image tokens",
    conversion="none: transformers' model and processor",
    example="captionlik:Qwen/Qwen2.5-VL-7B-Instruct",
)
MODELS.add(
    "vqascore",
    family="CLIP-FlanT5 (VQAScore's own model; exp(-mean CE) of Yes + </s>; ?parity=t2v_metrics)",
    text_limit="2048 input ids minus the prompt's (t2v_metrics' cut)",
    conversion="released weights into transformers' T5 + CLIPVisionModel + mlp2x_gelu "
    "projector (no remote code); vocabulary cut to the tokenizer's length",
    example="vqascore:zhiqiulin/clip-flant5-xxl",
)
MODELS.add(
    "vqascore",
    family="BLIP-2 / InstructBLIP with a T5 language model (P(first answer token))",
    text_limit="the tokenizer's model_max_length minus the prompt and query tokens",
    conversion="none: transformers' model and processor",
    example="vqascore:Salesforce/instructblip-flan-t5-xl",
)
MODELS.add(
    "captionlik",
    family="encoder-decoder VLMs: CLIP-FlanT5, BLIP-2 / InstructBLIP (T5), Florence-2",
    text_limit="the decoder's positions (T5: the tokenizer's model_max_length)",
    conversion="CLIP-FlanT5 as for vqascore; the others none",
    example="captionlik:microsoft/Florence-2-large",
)
MODELS.add(
    "itm",
    family="BLIP / BLIP-2 image-text matching head",
    text_limit="the config's max_position_embeddings",
    conversion="none: transformers' model and processor",
    example="itm:Salesforce/blip-itm-base-coco",
)
MODELS.add(
    "longclip",
    family="Long-CLIP B/L, LongCLIP-GmP",
    text_limit="248",
    conversion="positional_embedding[:20] + positional_embedding_res[20:] merged into one table",
    example="longclip:BeichenZhang/LongCLIP-L",
)
MODELS.add(
    "tulip",
    family="TULIP (rotary 248-token text tower on CLIP ViT-L/14)",
    text_limit="248",
    conversion="text keys into our RoPE text tower, visual.* into open_clip's ViT; "
    "the unused 77-row positional_embedding ignored",
    example="tulip:path/to/tulip.pt",
)
MODELS.add(
    "lotlip",
    family="LoTLIP (timm ViT + BERT with corner tokens)",
    text_limit="128",
    conversion="open_clip CustomTextCLIP keys into timm's ViT and transformers' BERT; "
    "corner-token mask as a 4-D additive mask",
    example="lotlip:weiwu-ww/LoTLIP-ViT-B-16-100M?bert=path/to/bert-base-uncased",
)
MODELS.add(
    "fgclip",
    family="FG-CLIP v1 (qihoo360/fg-clip-base, -large)",
    text_limit="248 (mode=short: 77)",
    conversion="stock CLIPModel: _ori[:20] + _res[20:] as the 248-row table, "
    "text_filip_projection as text_projection; no remote code",
    example="fgclip:qihoo360/fg-clip-base",
)
MODELS.add(
    "fgclip2",
    family="FG-CLIP 2 (qihoo360/fg-clip2-base, -large, -so400m)",
    text_limit="196 (mode=short: 64)",
    conversion="stock Siglip2Model: _ori[:20] + _res[20:] as the 196-row table, "
    "longtext_head as the text head; per-image 128-1024 patches; no remote code",
    example="fgclip2:qihoo360/fg-clip2-base",
)
MODELS.add(
    "flair",
    family="FLAIR (text-conditioned attention pooling; mode=global: CLIP-style)",
    text_limit="77",
    conversion="open_clip-style checkpoint ('module.' stripped) into our FLAIR module: "
    "open_clip Transformer towers, image_post / text_post projections, visual_proj pooling",
    example="flair:xiaorui638/flair/flair-merged30m.pt",
)


def load_scorer(
    spec: str,
    device: str | None = None,
    precision: str | None = None,
    *,
    text_policy: TextPolicy = "truncate",
) -> Scorer:
    """Load the model a spec names, in eval mode, on ``device`` (auto: cuda, mps, cpu).

    ``precision`` defaults to fp32 on every device; fp16 / bf16 are opt-in (autocast).
    ``text_policy`` is the default policy for over-long texts (``truncate``, ``chunk-mean``,
    ``error``). Raises UnknownNameError for an unknown prefix, ModelLoadError for anything else.
    """
    from densecap_eval.scorers.text_policy import check_policy

    prefix, sep, _ = spec.partition(":")
    if not sep:
        raise UnknownNameError(
            f"model spec {spec!r} has no PREFIX: (known prefixes: {', '.join(SCORERS.names())}; "
            f"e.g. {MODELS.example('open_clip')}; see `densecap-eval models`)"
        )
    loader = SCORERS.get(prefix)
    check_policy(text_policy)
    return loader(spec, device, precision, text_policy=text_policy)


def list_models() -> list[ModelFamily]:
    """The model table: one row per (prefix, family), plugins included, sorted by prefix.

    The same rows `densecap-eval models` prints; ``row.example`` is a spec to start from.
    """
    return MODELS.rows(SCORERS.names())


def scorer_kind(spec: str) -> KindOrUnknown:
    """``embedding``, ``late-interaction`` or ``pair`` for a spec's prefix (``unknown``: a
    plugin), without loading anything."""
    return SCORERS.kind_of(spec.partition(":")[0])
