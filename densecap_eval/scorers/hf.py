"""``hf:NAME_OR_LOCAL_DIR``: transformers CLIP, SigLIP and SigLIP 2 with their own processors.

Loaded with ``AutoModel`` / ``AutoProcessor`` from a local directory (``save_pretrained``
layout) or a hub name. Scores are the model's own logits: CLIP ``exp(logit_scale) * cosine``,
SigLIP / SigLIP 2 ``exp(logit_scale) * cosine + logit_bias``.

Text padding: CLIP's text tower is causal, masks padding and pools the end token, so padding
to the longest text in a batch gives the embeddings of padding to 77. SigLIP pools the last
position whatever the mask, so its embeddings depend on padding and it always pads to
``max_length`` (64), as its processor does.

SigLIP 2 NaFlex (model type ``siglip2``) takes patches, a patch mask and the patch grid size per
image; ``preprocess`` packs them into one tensor (row 0 holds the grid size) so images still
batch with ``torch.stack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.errors import ModelLoadError
from densecap_eval.scorers.base import Precision, TextPolicy
from densecap_eval.scorers.common import (
    TwoTowerScorer,
    hash_files,
    hub_weights_identity,
    provenance,
    short_hash,
    spec_loader,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

MODEL_TYPES = ("clip", "siglip", "siglip2")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# Config entries that say where or when a model was saved, not what it is.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "_commit_hash")


class HFImagePreprocess:
    """Picklable PIL -> pixel tensor with the model's own image processor."""

    def __init__(self, image_processor: Any, *, naflex: bool) -> None:
        self.image_processor = image_processor
        self.naflex = naflex

    def __call__(self, image: Image.Image) -> torch.Tensor:
        out = self.image_processor(images=image, return_tensors="pt")
        if not self.naflex:
            return out["pixel_values"][0]
        return pack_naflex(out["pixel_values"][0], out["spatial_shapes"][0])


def pack_naflex(patches: torch.Tensor, spatial_shape: torch.Tensor) -> torch.Tensor:
    """(max_patches, D) patches + (h, w) grid -> (max_patches + 1, D); row 0 = [h, w, 0 ...]."""
    import torch

    head = torch.zeros((1, patches.shape[1]), dtype=patches.dtype)
    head[0, 0], head[0, 1] = float(spatial_shape[0]), float(spatial_shape[1])
    return torch.cat([head, patches], dim=0)


def unpack_naflex(packed: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse of `pack_naflex` for a batch: the Siglip2 vision inputs."""
    import torch

    shapes = packed[:, 0, :2].round().long()
    patches = packed[:, 1:]
    valid = (shapes[:, 0] * shapes[:, 1]).unsqueeze(1)
    positions = torch.arange(patches.shape[1], device=packed.device).unsqueeze(0)
    mask = (positions < valid).long()
    return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}


def config_identity(config: Any) -> dict[str, Any]:
    data = config.to_dict()
    for key in _VOLATILE_CONFIG_KEYS:
        data.pop(key, None)
    return data


def load_hf_parts(source: str, *, spec: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, processor, identity) from a local directory or a hub name."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    if not source:
        raise ModelLoadError(f"malformed model spec {spec!r}: expected hf:NAME_OR_LOCAL_DIR")
    local = Path(source).expanduser()
    is_local = local.exists()
    if is_local and not local.is_dir():
        raise ModelLoadError(f"{spec}: {local} is a file; hf: needs a model directory")
    where = str(local) if is_local else source
    try:
        config = AutoConfig.from_pretrained(where)
    except Exception as exc:  # no config.json, no network, unknown repo ...
        kind = "local directory" if is_local else "hub model (and not a local directory)"
        raise ModelLoadError(f"{spec}: cannot load the config of {kind} {where}: {exc}") from exc
    if config.model_type not in MODEL_TYPES:
        raise ModelLoadError(
            f"{spec}: model type {config.model_type!r} is not supported by hf: "
            f"(supported: {', '.join(MODEL_TYPES)})"
        )
    try:
        model = AutoModel.from_pretrained(where)
        processor = AutoProcessor.from_pretrained(where)
    except Exception as exc:
        raise ModelLoadError(f"{spec}: cannot load model or processor from {where}: {exc}") from exc
    identity: dict[str, Any] = {"backend": "hf", "config": config_identity(config)}
    if is_local:
        weights = hash_files(local, WEIGHT_PATTERNS)
        if not weights:
            raise ModelLoadError(f"{spec}: no weight files (*.safetensors, *.bin) in {local}")
        identity["weights_sha256"] = weights
    else:
        commit = getattr(config, "_commit_hash", None)
        identity.update(hub_weights_identity(source, commit, WEIGHT_PATTERNS))
    return model, processor, identity


class HFScorer(TwoTowerScorer):
    """A transformers CLIP / SigLIP / SigLIP 2 model with its processor."""

    def __init__(
        self,
        *,
        model: Any,
        processor: Any,
        spec: str,
        device: torch.device,
        precision: Precision,
        text_policy: TextPolicy,
        identity: dict[str, Any],
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        # count_tokens tokenizes long texts untruncated on purpose: skip transformers' warning.
        flags = getattr(self.tokenizer, "deprecation_warnings", None)
        if isinstance(flags, dict):
            flags["sequence-length-is-longer-than-the-specified-maximum"] = True
        self.model_type: str = model.config.model_type
        self._pad_to_max = self.model_type != "clip"  # SigLIP pools the last position
        bias = getattr(model, "logit_bias", None)
        limit = int(model.config.text_config.max_position_embeddings)
        image_processor = processor.image_processor
        self.preprocess = HFImagePreprocess(image_processor, naflex=self.model_type == "siglip2")
        super().__init__(
            spec=spec,
            device=device,
            precision=precision,
            text_policy=text_policy,
            max_text_tokens=limit,
            logit_scale=float(model.logit_scale.detach().exp().item()),
            logit_bias=None if bias is None else float(bias.detach().item()),
            fingerprint=short_hash(identity),
            preprocess_id=short_hash(image_processor.to_dict()),
        )
        self.provenance = provenance(identity)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.model_type == "siglip2":
            return self.model.get_image_features(**unpack_naflex(pixels))
        return self.model.get_image_features(pixel_values=pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        inputs = self.tokenizer(
            texts,
            padding="max_length" if self._pad_to_max else True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        return self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})

    def _count(self, texts: Sequence[str]) -> list[int]:
        return [len(x) for x in self.tokenize_ids(texts)]

    def model_input_ids(self, pieces: Sequence[str]) -> list[list[int]] | None:
        """The exact ids `_text_features` feeds, before padding (the tokenizer's truncation)."""
        if type(self)._text_features is not HFScorer._text_features:
            # A subclass feeds its own ids: the base class's prefix rule is the safe key.
            return super().model_input_ids(pieces)
        if not len(pieces):
            return []
        out = self.tokenizer(list(pieces), truncation=True, max_length=self.max_text_tokens)
        return [list(x) for x in out["input_ids"]]

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Untruncated token ids, special tokens included (for first-difference positions)."""
        if not len(texts):
            return []
        return [list(x) for x in self.tokenizer(list(texts), truncation=False)["input_ids"]]


@spec_loader("hf")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> HFScorer:
    """Registry loader (via `spec_loader`) for the ``hf:`` prefix."""
    model, processor, identity = load_hf_parts(rest, spec=spec)
    return HFScorer(
        model=model,
        processor=processor,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity=identity,
    )
