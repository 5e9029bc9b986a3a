"""Tiny random vision-language models saved to a folder, with processors built offline.

Nothing here downloads anything: each tokenizer is a `tokenizers` WordLevel model over a small
vocabulary (unknown words map to ``[UNK]``), wrapped as a `PreTrainedTokenizerFast`; image
processors are configured by hand for 32 x 32 inputs so a forward pass takes milliseconds.
Each builder returns the folder, which the tests load only through spec strings.

- `build_llava`: LlavaForConditionalGeneration (tiny CLIP vision tower + tiny Llama), 16 image
  tokens, a "USER: <image>\\n... ASSISTANT:" chat template.
- `build_qwen2vl`: Qwen2VLForConditionalGeneration (multimodal RoPE), 16 image tokens, a
  ChatML-style template.
- `build_blip_itm`: BlipForImageTextRetrieval with a BERT-style WordLevel tokenizer.
- `build_blip2_itm`: Blip2ForImageTextRetrieval (tiny vision tower + tiny Q-Former, 4 query
  tokens), the same kind of tokenizer; ``query_tokens_in_text=True`` sets ``image_token_index``
  as recent BLIP-2 checkpoints do (the processor then prepends one ``<image>`` per query token).
- `build_not_vlm`: a text-only Llama (for the "not an image-text-to-text model" error).
- `build_llava_sized`: a LLaVA with a chosen image size, width and depth (default LLaVA-1.5's
  576 image tokens, for benchmarks/vlm_throughput.py); `build_llava_image_last`: the tiny LLaVA
  with a chat template that puts the image after the user's text (no shareable image prefix).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

WORDS = (
    "yes no does this figure show please answer or a an the of is in on and with image picture "
    "photo caption write for red green blue cat dog tree sky house car man woman two three small "
    "big left right top bottom black white grey table window door street road water grass "
    "following can also be seen there are person people building wall floor"
)

LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {{ m['content'][0]['text'] }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _vocab(specials: list[str], *, cased: bool = True) -> dict[str, int]:
    tokens = list(specials)
    words = WORDS.split()
    if cased:
        words += [w.capitalize() for w in words]
    tokens += words + list(string.punctuation) + list(string.digits)
    out: dict[str, int] = {}
    for t in tokens:
        out.setdefault(t, len(out))
    return out


def _fast_tokenizer(
    specials: list[str], *, lowercase: bool = False, post_cls_sep: bool = False, **kwargs: str
) -> object:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = _vocab(specials, cased=not lowercase)
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    if post_cls_sep:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    tok.add_special_tokens([s for s in specials if s != "[UNK]"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", **kwargs)


def save_folder(out: Path, model: Any, processor: Any) -> Path:
    """Save a built model and its processor to ``out`` (made if missing) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def tiny_vision(**extra: Any) -> dict[str, Any]:
    """A ViT tower's config fields at toy size: 32 x 32 images in 8-pixel patches, width 32."""
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
        "initializer_range": 0.2,
        **extra,
    }


def blip2_towers(vocab_size: int, **qformer: Any) -> dict[str, Any]:
    """The ``vision_config`` and ``qformer_config`` of a tiny BLIP-2 (``qformer``: Q-Former fields
    that differ from these)."""
    return {
        "vision_config": tiny_vision(),
        "qformer_config": {
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "encoder_hidden_size": 32,
            "cross_attention_frequency": 1,
            "max_position_embeddings": 64,
            "pad_token_id": 0,
            "initializer_range": 0.2,
            **qformer,
        },
    }


def build_llava(out: Path, *, seed: int = 0) -> Path:
    """The tiny LLaVA: 32 x 32 images in 8-pixel patches (16 image tokens), width 32."""
    return build_llava_sized(
        out, seed=seed, image_size=32, patch_size=8, hidden_size=32, max_position_embeddings=128
    )


def build_qwen2vl(out: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    specials = ["[UNK]", *QWEN_SPECIALS, "user", "assistant", "system"]
    tokenizer = _fast_tokenizer(specials, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "pad_token_id": vocab["<|endoftext|>"],
            "bos_token_id": vocab["<|endoftext|>"],
            "eos_token_id": vocab["<|im_end|>"],
            "initializer_range": 0.2,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    pixels = {"shortest_edge": 32 * 32, "longest_edge": 32 * 32}
    image_processor = Qwen2VLImageProcessor(
        size=pixels, patch_size=4, merge_size=2, temporal_patch_size=2
    )
    video_processor = Qwen2VLVideoProcessor(
        size=pixels, patch_size=4, merge_size=2, temporal_patch_size=2
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_TEMPLATE,
    )
    return save_folder(out, model, processor)


def build_blip_itm(out: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import (
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    specials = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = _fast_tokenizer(
        specials,
        lowercase=True,
        post_cls_sep=True,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # type: ignore[attr-defined]
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    config = BlipConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "encoder_hidden_size": 32,
            "max_position_embeddings": 64,
            "pad_token_id": vocab["[PAD]"],
            "bos_token_id": vocab["[CLS]"],
            "sep_token_id": vocab["[SEP]"],
            "initializer_range": 0.2,
        },
        projection_dim=16,
        image_text_hidden_size=16,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = BlipForImageTextRetrieval(config).eval()
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_folder(out, model, processor)


def build_blip2_itm(out: Path, *, seed: int = 0, query_tokens_in_text: bool = False) -> Path:
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForImageTextRetrieval,
        Blip2Processor,
        BlipImageProcessor,
    )

    specials = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "<image>"]
    tokenizer = _fast_tokenizer(
        specials,
        lowercase=True,
        post_cls_sep=True,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # type: ignore[attr-defined]
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    n_query = 4
    config = Blip2Config(
        **blip2_towers(
            len(vocab),
            max_position_embeddings=48,
            pad_token_id=vocab["[PAD]"],
            use_qformer_text_input=True,
        ),
        num_query_tokens=n_query,
        image_text_hidden_size=16,
        image_token_index=vocab["<image>"] if query_tokens_in_text else None,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config).eval()
    with torch.no_grad():  # random query tokens (they start at zero), so pairs differ
        model.query_tokens.normal_(0.0, 1.0)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = Blip2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_query_tokens=n_query if query_tokens_in_text else None,
    )
    return save_folder(out, model, processor)


def build_not_vlm(out: Path) -> Path:
    """A text-only causal LM with a tokenizer: loads, but is no image-text-to-text model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _fast_tokenizer(["[UNK]", "<pad>"], pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(tokenizer.get_vocab()),  # type: ignore[attr-defined]
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return save_folder(out, LlamaForCausalLM(config), tokenizer)


# The image after the user's text: a caption placed in the question comes before the image, so
# no image prefix can be shared (`vqascore:` falls back); a reply still follows the image.
LLAVA_IMAGE_LAST_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {{ m['content'][0]['text'] }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_llava_sized(
    out: Path,
    *,
    seed: int = 0,
    image_size: int = 336,
    patch_size: int = 14,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 1024,
    chat_template: str = LLAVA_TEMPLATE,
) -> Path:
    """A LLaVA like `build_llava` with a chosen image size, width, depth and chat template.

    The defaults are LLaVA-1.5-shaped: a 336 x 336 image in 14-pixel patches gives
    (336 / 14)^2 = 576 image tokens (the CLS feature dropped, ``vision_feature_select_strategy``
    "default"), on a narrow 2-layer tower and language model.
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _fast_tokenizer(
        ["[UNK]", "<pad>", "<s>", "</s>", "<image>"],
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=hidden_size,
            initializer_range=0.2,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_position_embeddings,
            pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<s>"],
            eos_token_id=vocab["</s>"],
            initializer_range=0.2,
        ),
        image_token_id=vocab["<image>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    return save_folder(out, model, processor)


def build_llava_image_last(out: Path, *, seed: int = 0) -> Path:
    """`build_llava`'s shape (32 x 32 images, 16 image tokens) with the image after the text."""
    return build_llava_sized(
        out,
        seed=seed,
        image_size=32,
        patch_size=8,
        hidden_size=32,
        max_position_embeddings=128,
        chat_template=LLAVA_IMAGE_LAST_TEMPLATE,
    )
