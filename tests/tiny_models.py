"""Tiny real models saved to disk, for loading through spec strings (no network, seconds to build).

Each builder writes into the given directory and returns the model spec:

- `make_tiny_open_clip(dir)`: an open_clip model-config JSON (ViT 32 px, patch 16, width 32,
  one layer; text transformer with the real 77-token context and 49408-token vocabulary, width
  32, one layer) and seeded random weights as safetensors ->
  ``open_clip:DIR/tiny_open_clip.json/DIR/tiny_open_clip.safetensors``.
- `make_tiny_hf_clip(dir)`: a transformers CLIPModel + CLIPProcessor. The tokenizer is the
  real OpenAI CLIP BPE, rebuilt offline from the BPE file open_clip ships (vocab.json and
  merges.txt), so its token ids equal open_clip's.
- `make_tiny_hf_siglip(dir)`: a SiglipModel + SiglipProcessor (64-token context). SigLIP's own
  tokenizer needs sentencepiece, which is not installed; the fixture uses the tokenizers-backed
  Gemma-style `Siglip2Tokenizer` with a character vocabulary, which is also what the
  fixed-resolution SigLIP 2 checkpoints pair with SiglipModel. logit_scale and logit_bias are
  set to non-trivial values so the bias shows in the scores.
- `make_tiny_hf_siglip2(dir)`: a NaFlex Siglip2Model + Siglip2Processor (variable patch grid).
- `make_tiny_lora(dir, base_spec)`: a peft LoRA adapter (rank 4 on q_proj / v_proj of both
  towers, non-zero init so it changes the scores) for an ``hf:`` base ->
  ``lora:DIR@BASE_SPEC``.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path

SEED = 0
CHAR_VOCAB = "▁abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
_TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}


def one_thread() -> Iterator[None]:
    """Fixture body: one torch thread while tiny models run (the shared CPUs are busy)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_tiny_open_clip(directory: Path, *, seed: int = SEED) -> str:
    import open_clip
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tiny_open_clip.json"
    weights = directory / "tiny_open_clip.safetensors"
    config.write_text(json.dumps(OPEN_CLIP_CONFIG), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.CLIP(**OPEN_CLIP_CONFIG)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    return f"open_clip:{config}/{weights}"


def write_clip_bpe(directory: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt of the OpenAI CLIP BPE, from open_clip's bundled merges."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice OpenAI CLIP (and open_clip) uses
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps({v: i for i, v in enumerate(vocab)}), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def make_tiny_hf_clip(directory: Path, *, seed: int = SEED) -> str:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = write_clip_bpe(directory)
    tokenizer = CLIPTokenizer(str(vocab), str(merges))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "max_position_embeddings": 77, **_TOWER},
        vision_config={"image_size": 32, "patch_size": 16, **_TOWER},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return f"hf:{directory}"


def _char_tokenizer(max_length: int):
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for ch in CHAR_VOCAB:
        vocab[ch] = len(vocab)
    return Siglip2Tokenizer(
        vocab=vocab,
        merges=[],
        add_bos_token=False,
        add_eos_token=True,
        padding_side="right",
        model_max_length=max_length,
    )


def _siglip_text_config() -> dict:
    n_vocab = 5 + len(CHAR_VOCAB)
    return {
        "vocab_size": n_vocab,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        **_TOWER,
    }


def _set_logit_params(model) -> None:
    import torch

    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.5)


def make_tiny_hf_siglip(directory: Path, *, seed: int = SEED) -> str:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    directory.mkdir(parents=True, exist_ok=True)
    config = SiglipConfig(
        text_config=_siglip_text_config(),
        vision_config={"image_size": 32, "patch_size": 16, **_TOWER},
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    _set_logit_params(model)
    model.save_pretrained(directory)
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=_char_tokenizer(64),
    )
    processor.save_pretrained(directory)
    return f"hf:{directory}"


def make_tiny_hf_siglip2(directory: Path, *, seed: int = SEED) -> str:
    import torch
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    directory.mkdir(parents=True, exist_ok=True)
    config = Siglip2Config(
        text_config=_siglip_text_config(),
        # the processor's own defaults (patch 16, at most 256 patches), as real checkpoints use
        vision_config={"patch_size": 16, "num_patches": 256, **_TOWER},
    )
    torch.manual_seed(seed)
    model = Siglip2Model(config).eval()
    _set_logit_params(model)
    model.save_pretrained(directory)
    processor = Siglip2Processor(
        image_processor=Siglip2ImageProcessor(patch_size=16, max_num_patches=256),
        tokenizer=_char_tokenizer(64),
    )
    processor.save_pretrained(directory)
    return f"hf:{directory}"


def make_tiny_lora(directory: Path, base_spec: str, *, seed: int = SEED) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    if not base_spec.startswith("hf:"):
        raise ValueError(f"LoRA fixtures need an hf: base, got {base_spec!r}")
    base = AutoModel.from_pretrained(base_spec[len("hf:") :])
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base, config).save_pretrained(directory)
    return f"lora:{directory}@{base_spec}"
