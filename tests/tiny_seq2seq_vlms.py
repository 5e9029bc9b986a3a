"""Tiny encoder-decoder VLMs saved offline: CLIP-FlanT5 in its release layout.

`build_clip_t5` writes what ``zhiqiulin/clip-flant5-*`` holds, at toy size: a ``config.json``
with ``model_type="clip_t5"``, the T5 fields and t2v_metrics' ``mm_*`` settings; one safetensors
file with the keys its model class saves (``shared.weight``, ``encoder.*``, ``decoder.*``,
``lm_head.weight``, ``mm_projector.{0,2}.*``, ``vision_tower.vision_tower.vision_model.*``);
FlanT5's ``spiece.model`` (a sentencepiece unigram model trained here, T5's ids: pad 0, eos 1,
unk 2) and a ``tokenizer_config.json``. The CLIP tower named by ``mm_vision_tower`` is a second
folder with its own (different) weights and a PIL CLIP image processor. The builder returns the
in-memory modules too, so tests compute references with plain transformers calls.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiny_vlms import blip2_towers, save_folder

WORDS = (
    "Does this figure show a red cat Please answer yes or no Yes A chat between curious user and "
    "an artificial intelligence assistant The gives helpful detailed polite answers to the "
    "user's questions USER ASSISTANT two big dogs on left of tree sky man woman with blue car "
    "street There are people near house Describe image paragraph what shown in"
).split()
N_EXTRA = 4  # sentinel tokens (<extra_id_N>); FlanT5 has 100
EXTRA_ROWS = 8  # embedding rows beyond the tokenizer, as FlanT5's 32128 vs 32100


@dataclass
class ClipT5Release:
    folder: Path
    tower_folder: Path
    t5: Any  # T5ForConditionalGeneration with EXTRA_ROWS unused rows
    vision: Any  # the CLIPVisionModel whose weights the checkpoint holds
    tower_vision: Any  # the different one saved under mm_vision_tower
    projector: Any
    processor: Any
    spiece: Path


def train_spiece(path: Path) -> None:
    import sentencepiece as spm

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400)]
    corpus += ["Yes"] * 100
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=120,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        model_type="unigram",
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def _t5_fields(vocab_size: int) -> dict[str, Any]:
    """A tiny T5 (FlanT5's shape: gated-GELU, untied output rows; pad 0, eos 1)."""
    return {
        "vocab_size": vocab_size,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "decoder_start_token_id": 0,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "dropout_rate": 0.0,
    }


def _clip_vision(seed: int) -> Any:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=24,
        initializer_range=0.2,
    )
    return CLIPVisionModel(config).eval()


def build_clip_t5(
    out: Path,
    *,
    seed: int = 0,
    vision_level: bool = True,
    save_tower: bool = True,
    bin_weights: bool = False,
) -> ClipT5Release:
    """A CLIP-FlanT5 release folder (``out/clip_t5``) and its CLIP tower (``out/clip_tower``).

    ``vision_level=False`` saves the tower keys without ``vision_model.``; ``save_tower=False``
    leaves them out (the tower then loads from ``mm_vision_tower``); ``bin_weights=True`` writes
    ``pytorch_model.bin`` (torch.save) instead of safetensors, as 2023 LLaVA-style trainers did.
    """
    import sentencepiece as spm
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessorPil, T5Config, T5ForConditionalGeneration

    folder, tower_folder = out / "clip_t5", out / "clip_tower"
    folder.mkdir(parents=True, exist_ok=True)
    tower_folder.mkdir(parents=True, exist_ok=True)
    spiece = folder / "spiece.model"
    train_spiece(spiece)
    n_tokens = spm.SentencePieceProcessor(model_file=str(spiece)).get_piece_size() + N_EXTRA

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    vision = _clip_vision(seed + 1)
    tower_vision = _clip_vision(seed + 2)
    tower_vision.save_pretrained(tower_folder)
    processor.save_pretrained(tower_folder)

    torch.manual_seed(seed)
    t5_fields = {**_t5_fields(n_tokens + EXTRA_ROWS), "initializer_factor": 1.0}
    t5 = T5ForConditionalGeneration(T5Config(**t5_fields)).eval()
    with torch.no_grad():  # untied output rows, as FlanT5's
        t5.lm_head.weight = torch.nn.Parameter(torch.randn_like(t5.lm_head.weight) * 0.5)
    projector = torch.nn.Sequential(
        torch.nn.Linear(24, 32), torch.nn.GELU(), torch.nn.Linear(32, 32)
    ).eval()

    state: dict[str, Any] = {}
    for key, value in t5.state_dict().items():
        if not key.endswith("embed_tokens.weight"):  # tied to shared.weight
            state[key] = value
    for key, value in projector.state_dict().items():
        state[f"mm_projector.{key}"] = value
    if save_tower:
        level = "vision_model." if vision_level else ""
        for key, value in vision.state_dict().items():
            state[f"vision_tower.vision_tower.{level}{key}"] = value
    tensors = {k: v.contiguous().clone() for k, v in state.items()}
    if bin_weights:
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        save_file(tensors, str(folder / "model.safetensors"))

    config = {
        **t5_fields,
        "model_type": "clip_t5",
        "architectures": ["CLIPT5ForConditionalGeneration"],
        "mm_vision_tower": str(tower_folder),
        "mm_hidden_size": 24,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "use_mm_proj": True,
        "image_aspect_ratio": "pad",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({"extra_ids": N_EXTRA}))
    return ClipT5Release(
        folder=folder,
        tower_folder=tower_folder,
        t5=t5,
        vision=vision,
        tower_vision=tower_vision,
        projector=projector,
        processor=processor,
        spiece=spiece,
    )


# -- transformers' own encoder-decoder VLMs ---------------------------------------------------


def _word_tokenizer(
    specials: list[str], *, unk: str, append: str | None, prepend: str | None = None, **kwargs: Any
) -> Any:
    """A WordLevel tokenizer over WORDS (+ lower case); ``prepend`` / ``append`` go around each
    text."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for t in [*specials, *WORDS, *(w.lower() for w in WORDS), *"?\"'.,:"]:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    around = [t for t in (prepend, append) if t]
    if around:
        single = " ".join([*([prepend] if prepend else []), "$A", *([append] if append else [])])
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, vocab[t]) for t in around]
        )
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def build_blip_t5(out: Path, *, instruct: bool, seed: int = 0) -> Path:
    """BLIP-2 (``instruct=False``) or InstructBLIP with a tiny T5, 4 query tokens spliced in at
    ``<image>`` tokens the processor prepends, a T5-style tokenizer appending ``</s>``."""
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    specials = ["<pad>", "</s>", "<unk>", "<image>"]
    tokenizer = _word_tokenizer(
        specials, unk="<unk>", append="</s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    n_query = 4
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    torch.manual_seed(seed)
    common = {
        **blip2_towers(len(tokenizer)),
        "text_config": {"model_type": "t5", **_t5_fields(len(tokenizer))},
        "num_query_tokens": n_query,
        "image_token_index": image_token,
        "initializer_range": 0.2,
    }
    if instruct:
        qformer_tok = _word_tokenizer(
            ["[PAD]", "[SEP]", "[UNK]", "[CLS]"],
            unk="[UNK]",
            prepend="[CLS]",
            append="[SEP]",
            pad_token="[PAD]",
            unk_token="[UNK]",
            sep_token="[SEP]",
            cls_token="[CLS]",
        )
        qformer_tok.model_input_names = ["input_ids", "attention_mask"]
        common["qformer_config"]["vocab_size"] = len(qformer_tok)
        model: Any = InstructBlipForConditionalGeneration(InstructBlipConfig(**common))
        processor: Any = InstructBlipProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            qformer_tokenizer=qformer_tok,
            num_query_tokens=n_query,
        )
    else:
        model = Blip2ForConditionalGeneration(Blip2Config(**common))
        processor = Blip2Processor(
            image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=n_query
        )
    with torch.no_grad():  # random query tokens (they start at zero) and output rows
        model.query_tokens.normal_(0.0, 1.0)
        lm_head = model.language_model.lm_head
        lm_head.weight.copy_(torch.randn_like(lm_head.weight) * 0.5)
    return save_folder(out, model.eval(), processor)


def build_florence2(out: Path, *, seed: int = 0) -> Path:
    """Florence-2 with a tiny DaViT tower (64 x 64 images: 5 image tokens) and a tiny BART; a
    BART-style tokenizer (``<s> text </s>``) with an ``<image>`` token."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    tokenizer = _word_tokenizer(
        specials,
        unk="<unk>",
        prepend="<s>",
        append="</s>",
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    vision = {
        "depths": [1, 1, 1, 1],
        "patch_size": [7, 3, 3, 3],
        "patch_stride": [4, 2, 2, 2],
        "patch_padding": [3, 1, 1, 1],
        "patch_prenorm": [False, True, True, True],
        "embed_dim": [8, 16, 16, 32],
        "num_heads": [2, 2, 2, 4],
        "num_groups": [2, 2, 2, 4],
        "window_size": 2,
        "drop_path_rate": 0.0,
        "projection_dim": 32,
        "max_temporal_embeddings": 4,
        "max_position_embeddings": 8,
    }
    text = {
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 256,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "dropout": 0.0,
    }
    config = Florence2Config(
        vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id
    )
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        size={"height": 64, "width": 64},
        crop_size={"height": 64, "width": 64},
        do_center_crop=False,
        image_seq_length=5,
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return save_folder(out, model, processor)
