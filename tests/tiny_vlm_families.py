"""Tiny random image-text-to-text models of the VLM families people score with, built offline.

Each builder makes a model from its own transformers config class (tiny sizes), its own processor
class and a tokenizer built here with that family's special tokens, saves both to a folder and
returns it. Tokenizers are `tokenizers` models trained or written in place:

- ``word``: WordLevel over a small vocabulary (whitespace split; no spacing subtleties);
- ``bpe``: byte-level BPE trained on a few sentences (GPT-2 / Qwen / SmolLM style: a word after
  a space is its own token, "Ġyes" != "yes", so "Yes" after ``Assistant:`` is " Yes");
- ``metaspace``: BPE with a Metaspace pre-tokenizer (Llama / Gemma SentencePiece style, "▁Yes").

``add_bos=True`` adds the BOS token as a post-processor, as Llama 3, Gemma and Mistral tokenizers
do; with a chat template that starts with ``{{ bos_token }}`` the rendered-then-tokenized prompt
then starts with two BOS tokens unless special tokens are left out (the rule the scorer needs).

Images are 32 x 32 (or close) so a forward takes milliseconds. `FAMILIES` maps a family name to
its builder.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiny_vlms import QWEN_SPECIALS, QWEN_TEMPLATE, save_folder, tiny_vision

CORPUS = (
    "yes no does this figure show please answer yes or no a an the of is in on and with image "
    "picture photo red green blue cat dog tree sky house car man woman two three small big left "
    "right top bottom black white grey table window door street road water grass person people "
    "Yes No Does This Please A The user assistant model system Assistant User describe Describe"
)


def _sentences() -> list[str]:
    words = CORPUS.split()
    out = [CORPUS, CORPUS.lower()]
    for i in range(len(words)):
        out.append(" ".join(words[i : i + 6]))
        out.append(
            f'Does this figure show "{" ".join(words[i : i + 4])}"? Please answer yes or no.'
        )
        out.append(f"User: {words[i]}\nAssistant: Yes. Assistant: No. {words[i]}")
    return out


def tokenizer(
    kind: str,
    specials: list[str],
    *,
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    add_bos: bool = False,
    extra: dict[str, str] | None = None,
) -> Any:
    """A `PreTrainedTokenizerFast` of ``kind`` (word, bpe, metaspace) with ``specials`` added."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE, WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", *[s for s in specials if s != "[UNK]"]]
    if kind == "word":
        vocab: dict[str, int] = {}
        for t in specials + CORPUS.split() + list(string.punctuation) + list(string.digits):
            vocab.setdefault(t, len(vocab))
        tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    else:
        tok = Tokenizer(BPE(unk_token="[UNK]" if kind == "metaspace" else None))
        if kind == "bpe":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            alphabet = pre_tokenizers.ByteLevel.alphabet()
        else:
            tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
            tok.decoder = decoders.Metaspace(prepend_scheme="first")
            alphabet = list(string.printable)
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
        )
        tok.train_from_iterator(_sentences(), trainer)
    tok.add_special_tokens(specials[1:])
    if add_bos:
        assert bos is not None
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    kwargs = {k: v for k, v in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad)) if v}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", extra_special_tokens=extra or {}, **kwargs
    )


def _text(vocab_size: int, **extra: Any) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 1024,
        "initializer_range": 0.2,
        **extra,
    }


def _save(out: Path, config: Any, processor: Any, seed: int) -> Path:
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    return save_folder(out, model, processor)


def _ids(tok: Any, **names: str) -> dict[str, int]:
    return {k: int(tok.convert_tokens_to_ids(v)) for k, v in names.items()}


# -- LLaVA-1.5 (SentencePiece-style tokenizer that adds BOS; llava-hf's template) -------------

LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_llava15(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import AutoConfig, CLIPImageProcessor, LlavaProcessor

    tok = tokenizer(
        "metaspace", ["<unk>", "<s>", "</s>", "<image>"], bos="<s>", eos="</s>", add_bos=True
    )
    tok.pad_token = "<unk>"
    tok.padding_side = padding_side
    ids = _ids(tok, pad="<unk>", bos="<s>", eos="</s>", image="<image>")
    config = AutoConfig.for_model(
        "llava",
        text_config={"model_type": "llama", **_text(len(tok), pad_token_id=ids["pad"])},
        vision_config={"model_type": "clip_vision_model", **tiny_vision(projection_dim=32)},
        image_token_id=ids["image"],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return _save(out, config, processor, seed)


# -- LLaVA-OneVision (Qwen2 byte-level tokenizer; reply rendered "assistant \n", prompt "assistant\n")

OV_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' }}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ '\n' + c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_llava_onevision(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import (
        AutoConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tok = tokenizer("bpe", [*QWEN_SPECIALS, "<image>", "<video>"], eos="<|im_end|>")
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = padding_side
    ids = _ids(tok, image="<image>", video="<video>")
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    config = AutoConfig.for_model(
        "llava_onevision",
        text_config={"model_type": "qwen2", **_text(len(tok))},
        vision_config={"model_type": "siglip_vision_model", **tiny_vision()},
        image_token_index=ids["image"],
        video_token_index=ids["video"],
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    size = {"height": 32, "width": 32}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tok,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=OV_TEMPLATE,
    )
    return _save(out, config, processor, seed)


# -- Qwen2.5-VL and Qwen3-VL (ChatML; multimodal RoPE) -----------------------------------------


def _qwen_tok(padding_side: str) -> Any:
    tok = tokenizer("bpe", QWEN_SPECIALS, eos="<|im_end|>")
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = padding_side
    return tok


def _qwen_vl(
    out: Path,
    model_type: str,
    processor_class: Any,
    video_processor_class: Any,
    *,
    rope_scaling: dict[str, Any],
    vision: dict[str, Any],
    seed: int,
    padding_side: str,
) -> Path:
    """A Qwen2.5-VL or Qwen3-VL: the same tokenizer, special ids and processor sizes; the config
    type, the RoPE entry, the tower's own fields and the processor classes differ."""
    from transformers import AutoConfig, Qwen2VLImageProcessor

    tok = _qwen_tok(padding_side)
    ids = _ids(
        tok,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )
    config = AutoConfig.for_model(
        model_type,
        text_config=_text(len(tok), rope_scaling=rope_scaling),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            **vision,
        },
        **ids,
    )
    pixels = {"shortest_edge": 32 * 32, "longest_edge": 32 * 32}
    kw = {"size": pixels, "patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    processor = processor_class(
        image_processor=Qwen2VLImageProcessor(**kw),
        video_processor=video_processor_class(**kw),
        tokenizer=tok,
        chat_template=QWEN_TEMPLATE,
    )
    return _save(out, config, processor, seed)


def build_qwen2_5_vl(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    return _qwen_vl(
        out,
        "qwen2_5_vl",
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
        rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        vision={"window_size": 16, "fullatt_block_indexes": [1]},
        seed=seed,
        padding_side=padding_side,
    )


def build_qwen3_vl(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

    return _qwen_vl(
        out,
        "qwen3_vl",
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
        rope_scaling={"rope_type": "default", "mrope_section": [1, 1, 2]},
        vision={"num_position_embeddings": 16, "deepstack_visual_indexes": [1]},
        seed=seed,
        padding_side=padding_side,
    )


# -- InternVL3 (-hf layout: <img> + <IMG_CONTEXT> x N + </img>; the processor overrides __call__)

INTERNVL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_internvl(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import (
        AutoConfig,
        GotOcr2ImageProcessor,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    names = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = tokenizer("bpe", [*QWEN_SPECIALS, *names.values()], eos="<|im_end|>", extra=names)
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = padding_side
    config = AutoConfig.for_model(
        "internvl",
        text_config={"model_type": "qwen2", **_text(len(tok))},
        vision_config={
            "model_type": "internvl_vision",
            **tiny_vision(image_size=[32, 32], patch_size=[8, 8]),
        },
        image_token_id=_ids(tok, i="<IMG_CONTEXT>")["i"],
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    size = {"height": 32, "width": 32}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, max_patches=2),
        video_processor=InternVLVideoProcessor(size=size),
        tokenizer=tok,
        image_seq_length=4,
        chat_template=INTERNVL_TEMPLATE,
    )
    return _save(out, config, processor, seed)


# -- Gemma 3 (template starts with BOS; token_type_ids; bidirectional inside the image) -------

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma3(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import AutoConfig, Gemma3ImageProcessor, Gemma3Processor

    names = {
        "boi_token": "<start_of_image>",
        "image_token": "<image_soft_token>",
        "eoi_token": "<end_of_image>",
    }
    specials = ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", *names.values()]
    tok = tokenizer(
        "metaspace", specials, bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True, extra=names
    )
    tok.padding_side = padding_side
    ids = _ids(tok, boi="<start_of_image>", eoi="<end_of_image>", image="<image_soft_token>")
    config = AutoConfig.for_model(
        "gemma3",
        text_config={"model_type": "gemma3_text", **_text(len(tok), sliding_window=64)},
        vision_config={"model_type": "siglip_vision_model", **tiny_vision()},
        mm_tokens_per_image=4,
        boi_token_index=ids["boi"],
        eoi_token_index=ids["eoi"],
        image_token_index=ids["image"],
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tok,
        image_seq_length=4,
        chat_template=GEMMA3_TEMPLATE,
    )
    return _save(out, config, processor, seed)


# -- SmolVLM2 / Idefics3 (byte-level BPE; prompt ends "Assistant:"; Idefics3 starts with BOS) --

IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}"
    "{{ m['role'] | capitalize }}{% if m['content'][0]['type'] == 'image' %}{{ ':' }}"
    "{% else %}{{ ': ' }}{% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% elif c['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLVLM_TEMPLATE = IDEFICS3_TEMPLATE.replace("<|begin_of_text|>", "<|im_start|>")


def _idefics_tok(bos: str, padding_side: str, *, add_bos: bool) -> Any:
    specials = [
        bos,
        "<|endoftext|>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<end_of_utterance>",
    ]
    tok = tokenizer(
        "bpe", specials, bos=bos, eos="<end_of_utterance>", pad="<|endoftext|>", add_bos=add_bos
    )
    tok.padding_side = padding_side
    return tok


def build_idefics3(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import AutoConfig, Idefics3ImageProcessor, Idefics3Processor

    tok = _idefics_tok("<|begin_of_text|>", padding_side, add_bos=True)  # Llama 3 tokenizer
    config = AutoConfig.for_model(
        "idefics3",
        text_config={"model_type": "llama", **_text(len(tok))},
        vision_config={"model_type": "idefics3_vision", **tiny_vision()},
        image_token_id=_ids(tok, i="<image>")["i"],
        scale_factor=2,
    )
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": 32},
        max_image_size={"longest_edge": 32},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=4,
        chat_template=IDEFICS3_TEMPLATE,
    )
    return _save(out, config, processor, seed)


def build_smolvlm(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import (
        AutoConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    tok = _idefics_tok("<|im_start|>", padding_side, add_bos=False)
    config = AutoConfig.for_model(
        "smolvlm",
        text_config={"model_type": "llama", **_text(len(tok))},
        vision_config={"model_type": "smolvlm_vision", **tiny_vision()},
        image_token_id=_ids(tok, i="<image>")["i"],
        scale_factor=2,
    )
    kw = {"size": {"longest_edge": 32}, "max_image_size": {"longest_edge": 32}}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_image_splitting=False, **kw),
        video_processor=SmolVLMVideoProcessor(**kw),
        tokenizer=tok,
        image_seq_len=4,
        chat_template=SMOLVLM_TEMPLATE,
    )
    return _save(out, config, processor, seed)


# -- PaliGemma 2 (no chat template; prefix-LM over image and prompt) ---------------------------


def build_paligemma(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import AutoConfig, PaliGemmaProcessor, SiglipImageProcessor

    tok = tokenizer(
        "metaspace",
        ["<pad>", "<bos>", "<eos>", "<image>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        add_bos=True,
        extra={"image_token": "<image>"},
    )
    tok.padding_side = padding_side
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    config = AutoConfig.for_model(
        "paligemma",
        text_config={"model_type": "gemma2", **_text(len(tok), sliding_window=64)},
        vision_config={"model_type": "siglip_vision_model", **tiny_vision(projection_dim=32)},
        image_token_index=_ids(tok, i="<image>")["i"],
        projection_dim=32,
        hidden_size=32,
    )
    return _save(out, config, processor, seed)


# -- Llama 3.2 Vision (mllama: cross-attention to the image; template starts with BOS) --------

MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|image|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build_mllama(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import AutoConfig, MllamaImageProcessor, MllamaProcessor

    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|finetune_right_pad_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ]
    tok = tokenizer(
        "bpe",
        specials,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        add_bos=True,
    )
    tok.padding_side = padding_side
    config = AutoConfig.for_model(
        "mllama",
        text_config=_text(
            len(tok),
            cross_attention_layers=[1],
            rope_scaling=None,
            pad_token_id=_ids(tok, p="<|finetune_right_pad_id|>")["p"],
        ),
        vision_config=tiny_vision(
            num_global_layers=1,
            max_num_tiles=2,
            vision_output_dim=64,
            intermediate_layers_indices=[0],
            supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
        ),
        image_token_index=_ids(tok, i="<|image|>")["i"],
    )
    image_processor = MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=2)
    processor = MllamaProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=MLLAMA_TEMPLATE
    )
    return _save(out, config, processor, seed)


# -- Mistral 3 / Pixtral ([IMG] ... [IMG_BREAK] ... [IMG_END]; template starts with BOS) -------

MISTRAL3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST]"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}[IMG]"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}[/INST]"
    "{% else %}{{ m['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
)


def build_mistral3(out: Path, *, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import AutoConfig, PixtralImageProcessor, PixtralProcessor

    specials = ["<pad>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]
    tok = tokenizer("bpe", specials, bos="<s>", eos="</s>", pad="<pad>", add_bos=True)
    tok.padding_side = padding_side
    config = AutoConfig.for_model(
        "mistral3",
        text_config={"model_type": "mistral", **_text(len(tok), sliding_window=None)},
        vision_config={"model_type": "pixtral", **tiny_vision(head_dim=8)},
        image_token_index=_ids(tok, i="[IMG]")["i"],
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    image_processor = PixtralImageProcessor(size={"longest_edge": 32}, patch_size=8)
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        spatial_merge_size=2,
        chat_template=MISTRAL3_TEMPLATE,
    )
    return _save(out, config, processor, seed)


FAMILIES: dict[str, Callable[..., Path]] = {
    "llava15": build_llava15,
    "llava_onevision": build_llava_onevision,
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "internvl": build_internvl,
    "gemma3": build_gemma3,
    "idefics3": build_idefics3,
    "smolvlm": build_smolvlm,
    "paligemma": build_paligemma,
    "mllama": build_mllama,
    "mistral3": build_mistral3,
}
