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

MetaCLIP 2 (model type ``metaclip_2``) loads natively, with its own (XLM-V) tokenizer; its text
tower is causal and pools the first end token (id 2), so it pads like CLIP. A stock CLIPModel is
not a substitute: with end token id 2 it falls back to argmax pooling.

``hf:DIR?trust_remote_code=1`` runs the modeling code a folder ships (jina-clip, LLM2CLIP, ...):
opt-in only, resolved from local files (``local_files_only``: the folder, or a hub snapshot and
the code repos its ``auto_map`` names, already in the hub cache), and recorded: the fingerprint
and the run card's provenance hold ``trust_remote_code`` and the sha256 of the folder's ``*.py``
files. A folder whose ``config.json`` has an ``auto_map`` for ``AutoModel`` is refused without the
opt-in (transformers would otherwise load a stock class for a known model type and silently skip
the folder's code). Remote models are encoded with ``get_text_features(input_ids=...,
attention_mask=...)`` and ``get_image_features(pixel_values=...)`` (the transformers convention:
token ids and pixel batches in, tensors out); ``encode_text`` / ``encode_image`` (strings and
PIL images in, the model's own tokenization and preprocessing) are not used, and a model
without ``get_*_features`` is refused. Their text is padded to the limit (their pooling is
unknown, so embeddings must not depend on the batch), the limit being the text config's
``max_position_embeddings`` or else the tokenizer's ``model_max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
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

MODEL_TYPES = ("clip", "siglip", "siglip2", "metaclip_2")
# Text towers that are causal and pool the end token: padding to the longest text is exact.
CAUSAL_TEXT = ("clip", "metaclip_2")
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


REMOTE_ENCODERS = ("get_text_features", "get_image_features")
# Model types that have their own prefix (read without their remote code).
OWN_PREFIX = {"fgclip2": "fgclip2"}


def load_processor(where: str, kwargs: dict[str, Any]) -> Any:
    """The folder's processor; else its tokenizer + image processor (some remote folders)."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        processor = AutoProcessor.from_pretrained(where, **kwargs)
    except Exception:
        processor = None
    if processor is not None and hasattr(processor, "tokenizer"):
        return processor
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(where, **kwargs)
    return SimpleNamespace(tokenizer=tokenizer, image_processor=image_processor)


def remote_code_identity(folder: Path, repo: str, commit: str | None) -> dict[str, str]:
    """sha256 of the modeling code that runs: the local folder's ``*.py`` or the snapshot's."""
    if folder.is_dir():
        return hash_files(folder, ("*.py",))
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json", revision=commit)
    except Exception:
        found = None
    return hash_files(Path(found).parent, ("*.py",)) if isinstance(found, str) else {}


def config_identity(config: Any) -> dict[str, Any]:
    data = config.to_dict()
    for key in _VOLATILE_CONFIG_KEYS:
        data.pop(key, None)
    return data


def split_hf_source(source: str, *, spec: str) -> tuple[str, bool]:
    """``NAME_OR_DIR[?trust_remote_code=1]`` -> (name or dir, remote code opted in)."""
    from densecap_eval.scorers.vlm_common import split_spec

    if not source.partition("?")[0]:
        raise ModelLoadError(f"malformed model spec {spec!r}: expected hf:NAME_OR_LOCAL_DIR")
    name, options = split_spec(source, "hf", ("trust_remote_code",))
    flag = options.get("trust_remote_code", "0")
    if flag not in ("0", "1", "true", "false"):
        raise ModelLoadError(f"{spec}: trust_remote_code must be 1 or 0, not {flag!r}")
    return name, flag in ("1", "true")


def _local_model_type(folder: Path) -> str:
    """``model_type`` of a folder's config.json ("" when unreadable: AutoConfig will say why)."""
    import json

    try:
        return str(json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_hf_parts(source: str, *, spec: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, processor, identity) from a local directory or a hub name."""
    source, remote = split_hf_source(source, spec=spec)
    local = Path(source).expanduser()
    is_local = local.exists()
    if is_local and not local.is_dir():
        raise ModelLoadError(f"{spec}: {local} is a file; hf: needs a model directory")
    where = str(local) if is_local else source
    # Remote code resolves from local files only: the folder, or the hub cache.
    kwargs: dict[str, Any] = {"trust_remote_code": True, "local_files_only": True} if remote else {}
    own = OWN_PREFIX.get(_local_model_type(local) if is_local else "")
    if own:
        raise ModelLoadError(f"{spec}: {where} is an FG-CLIP 2 folder: load it with {own}:{where}")
    config = _checked_config(where, kwargs, remote=remote, is_local=is_local, spec=spec)
    model, processor = _model_and_processor(where, kwargs, remote=remote, spec=spec)
    identity: dict[str, Any] = {"backend": "hf", "config": config_identity(config)}
    if remote:
        if not all(callable(getattr(model, n, None)) for n in REMOTE_ENCODERS):
            raise ModelLoadError(
                f"{spec}: the remote model {type(model).__name__} has no "
                f"{' / '.join(REMOTE_ENCODERS)} (encode_text / encode_image are not used)"
            )
        identity["trust_remote_code"] = True
        identity["remote_code_sha256"] = remote_code_identity(
            local, source, getattr(config, "_commit_hash", None)
        )
    if is_local:
        weights = hash_files(local, WEIGHT_PATTERNS)
        if not weights:
            raise ModelLoadError(f"{spec}: no weight files (*.safetensors, *.bin) in {local}")
        identity["weights_sha256"] = weights
    else:
        commit = getattr(config, "_commit_hash", None)
        identity.update(hub_weights_identity(source, commit, WEIGHT_PATTERNS))
    return model, processor, identity


def _checked_config(
    where: str, kwargs: dict[str, Any], *, remote: bool, is_local: bool, spec: str
) -> Any:
    """The folder's or repo's config, refused with the opt-in when it needs code we would run."""
    from transformers import AutoConfig

    opt_in = f"hf:{where}?trust_remote_code=1"
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except Exception as exc:  # no config.json, no network, unknown repo, needs remote code ...
        if not remote and "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{spec}: {where} needs the modeling code it ships; run it only if you trust it, "
                f"with the opt-in {opt_in}"
            ) from exc
        kind = "local directory" if is_local else "hub model (and not a local directory)"
        raise ModelLoadError(f"{spec}: cannot load the config of {kind} {where}: {exc}") from exc
    auto_map = getattr(config, "auto_map", None) or {}
    if not remote and "AutoModel" in auto_map:
        raise ModelLoadError(
            f"{spec}: {where} ships its own modeling code (config.json auto_map: "
            f"{auto_map['AutoModel']}); run it only if you trust it, with the opt-in {opt_in}"
        )
    if not remote and config.model_type not in MODEL_TYPES:
        raise ModelLoadError(
            f"{spec}: model type {config.model_type!r} is not supported by hf: "
            f"(supported: {', '.join(MODEL_TYPES)}; a folder with its own modeling code: "
            f"{opt_in})"
        )
    return config


def _model_and_processor(
    where: str, kwargs: dict[str, Any], *, remote: bool, spec: str
) -> tuple[Any, Any]:
    """The model (refused if it would drop FG-CLIP's long tables) and its processor."""
    from transformers import AutoModel

    try:
        model, info = AutoModel.from_pretrained(where, output_loading_info=True, **kwargs)
        processor = load_processor(where, kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"{spec}: cannot load model or processor from {where}"
            f"{' (remote code, local files only)' if remote else ''}: {_one_line(exc)}"
        ) from exc
    if any("position_embedding_res" in k for k in info.get("unexpected_keys", ())):
        # FG-CLIP v1 saves a "clip" config: a stock CLIPModel would silently drop its long tables.
        raise ModelLoadError(
            f"{spec}: {where} holds FG-CLIP long-text tables (position_embedding_res) that "
            f"hf: would drop: load it with fgclip:{where}"
        )
    return model, processor


def text_limit(config: Any, tokenizer: Any, *, spec: str) -> int:
    """The text config's ``max_position_embeddings``, else the tokenizer's ``model_max_length``."""
    text_config = getattr(config, "text_config", None)
    limit = getattr(text_config, "max_position_embeddings", None)
    if limit is None:
        limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or not 0 < limit < 1_000_000:  # "no limit" is a huge int
        raise ModelLoadError(f"{spec}: cannot tell the text length limit of this model")
    return limit


def quiet_length_warning(tokenizer: Any) -> None:
    """Silence transformers' warning for texts over ``model_max_length``: token counts tokenize
    long texts untruncated on purpose."""
    flags = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(flags, dict):
        flags["sequence-length-is-longer-than-the-specified-maximum"] = True


class TokenizerIds:
    """`TwoTowerScorer`'s token ids and counts from a transformers tokenizer (``self.tokenizer``).

    ``model_input_ids`` are the ids the tokenizer's own truncation to ``max_text_tokens`` gives
    (which keeps the end token); `tokenizer_texts` is the text as the model's tokenizer is given
    it (a backend that lower-cases overrides it). Mixed in before `TwoTowerScorer`.
    """

    tokenizer: Any
    max_text_tokens: int

    def tokenizer_texts(self, texts: Sequence[str]) -> list[str]:
        return list(texts)

    def model_input_ids(self, pieces: Sequence[str]) -> list[list[int]] | None:
        """The exact ids the text tower is fed (the tokenizer's truncation), unpadded."""
        if not len(pieces):
            return []
        out = self.tokenizer(
            self.tokenizer_texts(pieces), truncation=True, max_length=self.max_text_tokens
        )
        return [list(x) for x in out["input_ids"]]

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Untruncated token ids, special tokens included (for first-difference positions)."""
        if not len(texts):
            return []
        out = self.tokenizer(self.tokenizer_texts(texts), truncation=False)
        return [list(x) for x in out["input_ids"]]


class HFScorer(TokenizerIds, TwoTowerScorer):
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
        quiet_length_warning(self.tokenizer)
        self.model_type: str = model.config.model_type
        remote = bool(identity.get("trust_remote_code"))
        # SigLIP pools the last position; remote code pools in ways we cannot see.
        self._pad_to_max = remote or self.model_type not in CAUSAL_TEXT
        bias = getattr(model, "logit_bias", None)
        limit = text_limit(model.config, self.tokenizer, spec=spec)
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

    def model_input_ids(self, pieces: Sequence[str]) -> list[list[int]] | None:
        """The exact ids `_text_features` feeds, before padding (the tokenizer's truncation)."""
        if type(self)._text_features is not HFScorer._text_features:
            # A subclass feeds its own ids: the base class's prefix rule is the safe key.
            return TwoTowerScorer.model_input_ids(self, pieces)
        return super().model_input_ids(pieces)


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
