"""``lotlip:FILE.pt?bert=DIR``: LoTLIP (timm ViT + BERT text tower with two corner tokens).

The released ``model.pt`` is an open_clip ``CustomTextCLIP`` checkpoint,
``{'state_dict': {'module.' + key}}``: ``visual.trunk.*`` a timm ViT (``token`` pooling, no
head: ViT-B/16 or B/32 augreg), ``text.transformer.*`` a BERT with its pooler, whose word
embeddings hold two extra rows for ``[Corner0]`` ``[Corner1]``, ``text.proj`` a linear
projection. BERT's config and tokenizer come from a local folder (``?bert=DIR``, a
``bert-base-uncased`` download); nothing is fetched.

LoTLIP's tokenizer rule: ``". "`` becomes ``[SEP]`` (the period is dropped), the corner tokens
are prepended with no space, then BERT tokenizes with [CLS] ... [SEP], 128 tokens at most.
Its attention mask is 2-D per text: no token attends to the corner tokens (each corner only
to itself), [CLS] does not attend to them either, every token attends to [CLS]; the corner
tokens still shift the position ids. The feature is the BERT pooler (dense + tanh) of [CLS],
then the projection. transformers 5's BERT rejects the 3-D mask LoTLIP's code passes, so the
mask is handed over as the equivalent 4-D additive mask. Images: timm's eval transform for
the ViT with mean and std 0.5 (crop_pct 1); LoTLIP does not convert to RGB, we do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import (
    TwoTowerScorer,
    hash_files,
    provenance,
    repr_id,
    short_hash,
    spec_loader,
)
from densecap_eval.scorers.hubfile import resolve_checkpoint
from densecap_eval.scorers.openclip import load_state_dict_checked, read_state_dict
from densecap_eval.scorers.vlm_common import split_spec

if TYPE_CHECKING:
    import torch
    from PIL import Image

CONTEXT = 128
CORNERS = ("[Corner0]", "[Corner1]")
HUB_FILE = "model.pt"  # weiwu-ww/LoTLIP-ViT-B-{16,32}-100M
_BERT_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json")
# Buffers older transformers saved with BERT; not weights (LoTLIP's open_clip drops them too).
_BUFFERS = ("text.transformer.embeddings.position_ids",)


def to_rgb(image: Image.Image) -> Image.Image:
    """Module-level (picklable) RGB conversion in front of timm's transform."""
    return image.convert("RGB")


def lotlip_text(text: str) -> str:
    """LoTLIP's string rule before BERT: ``". "`` -> ``[SEP]``, corners prepended, cleaned."""
    from open_clip.tokenizer import basic_clean

    text = "[SEP]".join(text.split(". "))
    return " ".join(basic_clean(" ".join(CORNERS) + text).split())


def corner_mask(ids: torch.Tensor, pad_id: int, dtype: torch.dtype) -> torch.Tensor:
    """LoTLIP's per-text 2-D mask as a 4-D additive one, (n, 1, L, L): 0 = attend."""
    import torch

    n, length = ids.shape
    first_text = len(CORNERS) + 1  # [CLS], then the corners
    allowed = (ids != pad_id)[:, None, :].expand(n, length, length).clone()
    allowed[:, :, :first_text] = False  # nobody attends to [CLS] or the corners ...
    allowed[:, first_text:, 0] = True  # ... except text tokens to [CLS]
    diag = torch.arange(first_text, device=ids.device)
    allowed[:, diag, diag] = True  # and [CLS] / each corner to itself
    zero = torch.zeros((), dtype=dtype, device=ids.device)
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=ids.device)
    return torch.where(allowed, zero, blocked)[:, None]


def _modules(bert_config: Any, vit: dict[str, Any], embed_dim: int) -> Any:
    """(text tower, vision tower) modules; parameter names are the checkpoint's keys."""
    import torch
    from timm.models.vision_transformer import VisionTransformer
    from torch import nn
    from transformers import BertModel

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = BertModel(bert_config, add_pooling_layer=True)
            self.proj = nn.Linear(bert_config.hidden_size, embed_dim, bias=False)
            self.pad_id = int(bert_config.pad_token_id or 0)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            dtype = self.transformer.embeddings.word_embeddings.weight.dtype
            if torch.is_autocast_enabled(ids.device.type):
                dtype = torch.get_autocast_dtype(ids.device.type)
            out = self.transformer(
                input_ids=ids, attention_mask=corner_mask(ids, self.pad_id, dtype)
            )
            return self.proj(out.pooler_output)  # pooler: dense + tanh of [CLS]

    class Visual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = VisionTransformer(num_classes=0, global_pool="token", **vit)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.trunk(pixels)

    return Text(), Visual()


def vit_shape(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """timm ViT arguments from ``visual.trunk.*`` shapes (head width 64, as ViT-B)."""
    head = "visual.trunk."
    needed = [f"{head}{k}" for k in ("patch_embed.proj.weight", "pos_embed", "cls_token")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ModelLoadError(
            f"checkpoint {path} lacks {', '.join(missing)} (a truncated file, or not LoTLIP's "
            "open_clip CustomTextCLIP with a timm ViT)"
        )
    patch = state[f"{head}patch_embed.proj.weight"]
    width, size = int(patch.shape[0]), int(patch.shape[-1])
    grid = round((state[f"{head}pos_embed"].shape[1] - 1) ** 0.5)
    depth = len({k.split(".")[3] for k in state if k.startswith(f"{head}blocks.")})
    fc1 = state.get(f"{head}blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / width if fc1 is not None else 4.0
    return {
        "img_size": grid * size,
        "patch_size": size,
        "embed_dim": width,
        "depth": depth,
        "num_heads": max(1, width // 64),
        "mlp_ratio": mlp_ratio,
    }


def load_bert_folder(folder: Path, spec: str) -> tuple[Any, Any]:
    """(BertConfig, tokenizer with the corner tokens added) from a local folder."""
    from transformers import AutoTokenizer, BertConfig

    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{spec}: ?bert={folder} has no config.json (give a local bert-base-uncased folder: "
            "config.json and vocab.txt or tokenizer.json)"
        )
    try:
        config = BertConfig.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a broken folder: one line naming it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{spec}: cannot read BERT from {folder}: {first}") from exc
    tokenizer.add_tokens(list(CORNERS), special_tokens=True)
    return config, tokenizer


def build_model(
    state: dict[str, torch.Tensor], path: Path, bert_config: Any, tokenizer: Any
) -> tuple[Any, Any]:
    """(text, visual) loaded strictly from the checkpoint; corner rows checked."""
    key = "text.transformer.embeddings.word_embeddings.weight"
    for needed in (key, "text.proj.weight", "logit_scale"):
        if needed not in state:
            raise ModelLoadError(f"checkpoint {path} lacks {needed} (not a LoTLIP checkpoint?)")
    rows = int(state[key].shape[0])
    if rows != len(tokenizer) or rows != bert_config.vocab_size + len(CORNERS):
        raise ModelLoadError(
            f"checkpoint {path}: {key} has {rows} rows; the BERT folder's vocabulary + "
            f"{len(CORNERS)} corner tokens gives {len(tokenizer)} (a checkpoint without the "
            "corner tokens, or another BERT)"
        )
    for buffer in _BUFFERS:
        state.pop(buffer, None)
    bert_config.vocab_size = rows
    vit = vit_shape(state, path)
    embed_dim = int(state["text.proj.weight"].shape[0])
    if embed_dim != vit["embed_dim"]:  # the ViT has no projection: widths must agree
        raise ModelLoadError(
            f"checkpoint {path}: text.proj gives {embed_dim} features, the ViT {vit['embed_dim']}"
        )
    text, visual = _modules(bert_config, vit, embed_dim)
    text_state = {k[len("text.") :]: v for k, v in state.items() if k.startswith("text.")}
    visual_state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    other = [k for k in state if not k.startswith(("text.", "visual.")) and k != "logit_scale"]
    if other:
        raise ModelLoadError(f"checkpoint {path}: unexpected keys: {', '.join(other[:3])}")
    load_state_dict_checked(text, text_state, path)
    load_state_dict_checked(visual, visual_state, path)
    return text.eval(), visual.eval()


class LotlipScorer(TwoTowerScorer):
    """LoTLIP; logits = exp(logit_scale) x cosine (its own retrieval ranks by the cosine)."""

    def __init__(
        self,
        *,
        text: Any,
        visual: Any,
        tokenizer: Any,
        spec: str,
        device: torch.device,
        precision: Precision,
        text_policy: TextPolicy,
        logit_scale: float,
        identity: dict[str, Any],
    ) -> None:
        from timm.data import create_transform
        from torchvision.transforms import Compose

        self.text = text.to(device)
        self.visual = visual.to(device)
        self.tokenizer = tokenizer
        size = visual.trunk.patch_embed.img_size
        # LoTLIP's eval transform: timm's, mean / std 0.5, bicubic, crop_pct 1 (+ our RGB)
        timm_transform = create_transform(
            (3, *size), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic", crop_pct=1.0
        )
        self.preprocess = Compose([to_rgb, timm_transform])
        super().__init__(
            spec=spec,
            device=device,
            precision=precision,
            text_policy=text_policy,
            max_text_tokens=CONTEXT,
            logit_scale=logit_scale,
            logit_bias=None,
            fingerprint=short_hash(identity),
            preprocess_id=repr_id(self.preprocess),
        )
        self.provenance = provenance(identity)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            [lotlip_text(t) for t in texts],
            return_tensors="pt",
            max_length=CONTEXT,
            padding="max_length",
            truncation=True,
        ).input_ids
        return self.text(ids.to(self.device))

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Untruncated ids as the model sees them: [CLS], corners, text, [SEP]."""
        encoded = self.tokenizer([lotlip_text(t) for t in texts], truncation=False)
        return [list(ids) for ids in encoded["input_ids"]]


@spec_loader("lotlip")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> LotlipScorer:
    """Registry loader (via `spec_loader`) for the ``lotlip:`` prefix."""
    name, options = split_spec(rest, "lotlip", ("bert",))
    if not options.get("bert"):
        raise ModelLoadError(
            f"{spec}: LoTLIP needs its BERT folder: add ?bert=DIR (a local bert-base-uncased "
            "download: config.json, vocab.txt or tokenizer.json)"
        )
    folder = Path(options["bert"]).expanduser()
    path, identity = resolve_checkpoint(name, spec=spec, default_file=HUB_FILE)
    bert_config, tokenizer = load_bert_folder(folder, spec)
    state = read_state_dict(path)
    try:
        text, visual = build_model(state, path, bert_config, tokenizer)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec}: {exc}") from exc
    identity = {
        "backend": "lotlip",
        **identity,
        "bert_files_sha256": hash_files(folder, _BERT_FILES),
    }
    return LotlipScorer(
        text=text,
        visual=visual,
        tokenizer=tokenizer,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        logit_scale=float(state["logit_scale"].float().exp()),
        identity=identity,
    )
