"""``fgclip2:DIR_OR_HUB_ID[?mode=short]``: FG-CLIP 2 as a stock transformers SigLIP 2 (NaFlex).

The released folder (``qihoo360/fg-clip2-base`` / ``-large`` / ``-so400m``: ``config.json`` of
model type ``fgclip2``, safetensors, tokenizer, ``preprocessor_config.json``) ships modeling code
whose ``from_pretrained`` leaves the 196-row ``position_ids`` buffer uninitialised on
transformers 5; it is never run. The weights convert exactly, and strictly, to a `Siglip2Model`:

- long mode (default; FG-CLIP 2's long-caption and DCI protocol, ``walk_type="long"``): text
  positions ``position_embedding_ori[:keep_len]`` + ``position_embedding_res[keep_len:]``
  (``longtext_len`` = 196 rows) and ``longtext_head`` as the text head;
- ``mode=short``: the ``max_position_embeddings`` (64) table and the text tower's own head.

``boxtext_head`` and ``dense_feature_head`` (region and dense features) are not for retrieval
and are dropped. The text tower pools the last position, so text is always padded to the limit,
as its own eval pads to 196. Text is lower-cased first, as its own eval and README do (whatever
the folder's tokenizer does by itself; recorded in the fingerprint).

Images: the family's ``Fgclip2ImageProcessor`` (``dynamic_max_patches``) gives each image
128 / 256 / 576 / 784 / 1024 patches by its own size (its 16 px patch count: > 784 -> 1024,
> 576 -> 784, > 256 -> 576, > 128 -> 256, else 128), then resizes and patchifies as SigLIP 2's
processor does (transformers' PIL `Siglip2ImageProcessorPil` with that ``max_num_patches``).
Each image's patches are padded to the largest count so images batch; the padding is masked
(and trimmed per batch), so an image's embedding is what the family's processor gives it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import TwoTowerScorer, provenance, short_hash, spec_loader
from densecap_eval.scorers.fgclip import position_table
from densecap_eval.scorers.hf import (
    TokenizerIds,
    config_identity,
    pack_naflex,
    quiet_length_warning,
    unpack_naflex,
)
from densecap_eval.scorers.hf_folder import (
    drop_position_ids,
    read_json,
    read_safetensors,
    resolve_folder,
)
from densecap_eval.scorers.openclip import load_state_dict_checked
from densecap_eval.scorers.vlm_common import split_spec

if TYPE_CHECKING:
    import torch
    from PIL import Image

MODES = ("long", "short")
PATCH_BUDGETS = (128, 256, 576, 784, 1024)
_EMB = "text_model.embeddings."
_LONG_KEYS = (
    _EMB + "position_embedding_ori.weight",
    _EMB + "position_embedding_res.weight",
    "longtext_head.weight",
    "longtext_head.bias",
)
_NOT_FOR_RETRIEVAL = ("boxtext_head.", "dense_feature_head.")
# SigLIP 2 image processor settings a folder's preprocessor_config.json may set.
_PROCESSOR_KEYS = ("do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize",
                   "image_mean", "image_std", "do_convert_rgb", "patch_size")  # fmt: skip


def patch_budget(width: int, height: int, patch_size: int) -> int:
    """FG-CLIP 2's per-image ``max_num_patches`` from the image's own size."""
    n = (width // patch_size) * (height // patch_size)
    for low, budget in zip((784, 576, 256, 128), (1024, 784, 576, 256), strict=True):
        if n > low:
            return budget
    return 128


class DynamicPatches:
    """Picklable PIL -> packed NaFlex patches (row 0 = grid size) at the image's patch budget."""

    def __init__(self, settings: dict[str, Any], *, dynamic: bool, fixed: int) -> None:
        from transformers import Siglip2ImageProcessorPil

        self.processor = Siglip2ImageProcessorPil(**settings, max_num_patches=fixed)
        self.patch_size = int(self.processor.patch_size)
        self.dynamic = dynamic
        self.fixed = fixed
        self.rows = max(PATCH_BUDGETS) if dynamic else fixed

    def budget(self, image: Image.Image) -> int:
        return patch_budget(*image.size, self.patch_size) if self.dynamic else self.fixed

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import torch

        out = self.processor(
            images=image, max_num_patches=self.budget(image), return_tensors="pt"
        )  # fmt: skip
        patches = out["pixel_values"][0]
        pad = torch.zeros((self.rows - patches.shape[0], patches.shape[1]), dtype=patches.dtype)
        return pack_naflex(torch.cat([patches, pad]), out["spatial_shapes"][0])

    def identity(self) -> dict[str, Any]:
        return {"processor": self.processor.to_dict(), "dynamic": self.dynamic, "fixed": self.fixed}


def parse_options(rest: str, *, spec: str) -> tuple[str, str]:
    source, options = split_spec(rest, "fgclip2", ("mode",))
    mode = options.get("mode", "long")
    if mode not in MODES:
        raise ModelLoadError(f"{spec}: unknown mode {mode!r} (known: long, short)")
    return source, mode


def convert_state(
    state: dict[str, torch.Tensor], *, mode: str, text: dict[str, Any], spec: str, where: Path
) -> dict[str, torch.Tensor]:
    """FG-CLIP 2 keys -> stock Siglip2Model keys for ``mode`` (strict about the long tables)."""
    missing = [k for k in (_EMB + "position_embedding.weight", *_LONG_KEYS) if k not in state]
    if missing:
        raise ModelLoadError(
            f"{spec}: {where} is not an FG-CLIP 2 checkpoint: missing {', '.join(missing)}"
        )
    out = {k: v for k, v in state.items() if not k.startswith(_NOT_FOR_RETRIEVAL)}
    short = out.pop(_EMB + "position_embedding.weight")
    ori, res, head_w, head_b = (out.pop(k) for k in _LONG_KEYS)
    drop_position_ids(out, spec=spec, where=where)
    keep, long_len = int(text.get("keep_len", 20)), int(text.get("longtext_len", 196))
    short_len = int(text.get("max_position_embeddings", 64))
    out[_EMB + "position_embedding.weight"] = position_table(
        short, ori, res, mode=mode, lengths=(short_len, long_len), keep=keep, spec=spec,
        where=where, hint=" (config.json text_config)",
    )  # fmt: skip
    if mode == "long":
        out["text_model.head.weight"], out["text_model.head.bias"] = head_w, head_b
    return out


def build_model(config_json: dict[str, Any], *, mode: str, spec: str, where: Path) -> Any:
    """A stock Siglip2Model shaped by the folder's config (text positions per ``mode``)."""
    from transformers import Siglip2Config, Siglip2Model

    text = dict(config_json.get("text_config") or {})
    vision = dict(config_json.get("vision_config") or {})
    for key in ("model_type", "architectures", "auto_map", "keep_len", "longtext_len"):
        text.pop(key, None)
        vision.pop(key, None)
    if mode == "long":
        raw = config_json.get("text_config") or {}
        text["max_position_embeddings"] = int(raw.get("longtext_len", 196))
        text["projection_size"] = text.get("hidden_size")  # longtext_head: width -> width
    try:
        config = Siglip2Config(text_config=text, vision_config=vision)
        return Siglip2Model(config), config
    except Exception as exc:
        raise ModelLoadError(
            f"{spec}: {where}/config.json is not a SigLIP 2 config: {exc}"
        ) from exc


class FGClip2Scorer(TokenizerIds, TwoTowerScorer):
    """FG-CLIP 2 converted to a transformers Siglip2Model (long or short mode)."""

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        patches: DynamicPatches,
        spec: str,
        device: torch.device,
        precision: Precision,
        text_policy: TextPolicy,
        identity: dict[str, Any],
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        quiet_length_warning(tokenizer)
        self.preprocess = patches
        super().__init__(
            spec=spec,
            device=device,
            precision=precision,
            text_policy=text_policy,
            max_text_tokens=int(model.config.text_config.max_position_embeddings),
            logit_scale=float(model.logit_scale.detach().exp().item()),
            logit_bias=float(model.logit_bias.detach().item()),
            fingerprint=short_hash(identity),
            preprocess_id=short_hash(patches.identity()),
        )
        self.provenance = provenance(identity)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        valid = int((pixels[:, 0, 0] * pixels[:, 0, 1]).round().max().item())
        return self.model.get_image_features(**unpack_naflex(pixels[:, : 1 + valid]))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        # Pooling at the last position: always pad to the limit, as FG-CLIP 2's eval does.
        inputs = self.tokenizer(
            self.tokenizer_texts(texts), padding="max_length", truncation=True,
            max_length=self.max_text_tokens, return_tensors="pt",
        )  # fmt: skip
        return self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})

    def tokenizer_texts(self, texts: Sequence[str]) -> list[str]:
        """FG-CLIP 2 lower-cases every text before its tokenizer."""
        return [t.lower() for t in texts]


def load_fgclip2(rest: str, *, spec: str) -> tuple[Any, Any, DynamicPatches, dict[str, Any]]:
    """(model, tokenizer, image transform, identity) for an ``fgclip2:`` spec."""
    from transformers import AutoTokenizer

    source, mode = parse_options(rest, spec=spec)
    folder, identity = resolve_folder(source, spec=spec)
    config_json = read_json(folder / "config.json", spec=spec)
    text = config_json.get("text_config") or {}
    model, config = build_model(config_json, mode=mode, spec=spec, where=folder)
    state = read_safetensors(folder, spec=spec)
    load_state_dict_checked(
        model, convert_state(state, mode=mode, text=text, spec=spec, where=folder), folder
    )
    pre = read_json(folder / "preprocessor_config.json", spec=spec)
    settings = {k: pre[k] for k in _PROCESSOR_KEYS if k in pre}
    patches = DynamicPatches(
        settings,
        dynamic=bool(pre.get("dynamic_max_patches", True)),
        fixed=int(pre.get("max_num_patches", 256)),
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"{spec}: cannot load the tokenizer from {folder}: {exc}") from exc
    identity = {
        "backend": "fgclip2",
        "mode": mode,
        "lowercase": True,
        "config": config_identity(config),
        **identity,
    }
    return model, tokenizer, patches, identity


@spec_loader("fgclip2")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> FGClip2Scorer:
    """Registry loader (via `spec_loader`) for the ``fgclip2:`` prefix."""
    model, tokenizer, patches, identity = load_fgclip2(rest, spec=spec)
    return FGClip2Scorer(
        model=model,
        tokenizer=tokenizer,
        patches=patches,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity=identity,
    )
