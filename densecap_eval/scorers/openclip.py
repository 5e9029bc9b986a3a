"""``open_clip:ARCH/PRETRAINED``: an open_clip model with its own transform and tokenizer.

ARCH is a built-in architecture name (``ViT-B-32``) or a path to a model-config JSON in
open_clip's format (``{"embed_dim", "vision_cfg", "text_cfg"}``, or an ``open_clip_config.json``
with ``model_cfg`` and ``preprocess_cfg``). PRETRAINED is a pretrained tag (open_clip downloads
it) or a local checkpoint (``.safetensors``, or ``.pt`` / ``.pth`` / ``.bin`` read with
``torch.load(weights_only=True)``; never unrestricted pickle).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.core.paths import default_cache_dir
from densecap_eval.scorers.common import (
    TwoTowerScorer,
    hash_file,
    provenance,
    repr_id,
    short_hash,
    spec_loader,
)

if TYPE_CHECKING:
    import torch

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
_SCHEMAS = ("hf-hub:", "local-dir:")


def parse_spec(rest: str, *, spec: str) -> tuple[str, str | None]:
    """``ARCH/PRETRAINED`` -> (arch, pretrained). ARCH may be a JSON path containing slashes."""
    if rest.startswith(_SCHEMAS):  # open_clip's own schemas carry config and weights
        return rest, None
    json_arch = re.match(r"^(.+?\.json)/(.+)$", rest)
    if json_arch:
        return json_arch.group(1), json_arch.group(2)
    arch, sep, pretrained = rest.partition("/")
    if not sep or not arch or not pretrained:
        raise ModelLoadError(
            f"malformed model spec {spec!r}: expected open_clip:ARCH/PRETRAINED "
            "(e.g. open_clip:ViT-B-32/laion2b_s34b_b79k or "
            "open_clip:path/to/config.json/path/to/weights.safetensors)"
        )
    return arch, pretrained


def is_checkpoint_path(pretrained: str) -> bool:
    """Pretrained tags never contain a slash or end like a weights file; paths do."""
    return (
        "/" in pretrained
        or "\\" in pretrained
        or pretrained.endswith(CHECKPOINT_SUFFIXES)
        or Path(pretrained).expanduser().exists()
    )


def register_config(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Register a model-config JSON with open_clip; returns (name, model_cfg, preprocess_cfg).

    open_clip names a config by its file stem, so two files called ``config.json`` would
    collide: a copy is registered under a content-hashed name in the cache directory.
    """
    import open_clip

    if not path.is_file():
        raise ModelLoadError(f"model config not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model config {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"model config {path} is not a JSON object")
    model_cfg = raw.get("model_cfg", raw)
    preprocess_cfg = raw.get("preprocess_cfg", {}) if "model_cfg" in raw else {}
    missing = [k for k in _CONFIG_KEYS if k not in model_cfg]
    if missing:
        raise ModelLoadError(
            f"model config {path} lacks {', '.join(missing)} (open_clip's format has "
            "embed_dim, vision_cfg and text_cfg)"
        )
    name = f"densecap-{path.stem}-{short_hash(model_cfg)}"
    if name not in open_clip.list_models():
        folder = default_cache_dir() / "open_clip_configs"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(model_cfg, indent=1), encoding="utf-8")
        tmp.replace(target)
        open_clip.add_model_config(target)
    return name, model_cfg, preprocess_cfg


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors or plain torch file; refuses anything needing full pickle."""
    import pickle

    import torch

    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"checkpoint {path} holds more than plain weights and is refused (it would need "
            f"unrestricted pickle): {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # corrupt or foreign file: say which one
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"checkpoint {path} is not a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load ``state`` strictly, or raise ModelLoadError naming the first mismatching keys."""
    expected = model.state_dict()
    state = dict(state)
    for key in ("logit_scale", "logit_bias"):  # scalar vs 1-element, as open_clip allows
        if key in state and key in expected and state[key].numel() == expected[key].numel():
            state[key] = state[key].reshape(expected[key].shape)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches (checkpoint vs model): {_first(wrong)}")
    if problems:
        raise ModelLoadError(
            f"checkpoint {path} does not fit the architecture: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _quiet_random_init(active: bool) -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning when local weights load right after."""
    root = logging.getLogger()
    flt = _DropRandomInitWarning()
    if active:
        root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def tokenizer_error(spec: str, model_cfg: dict[str, Any], exc: Exception) -> ModelLoadError:
    """One line; a hub tokenizer (``*-worldwide``: facebook/xlm-v-base) missing offline says so."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hf_name = (model_cfg.get("text_cfg") or {}).get("hf_tokenizer_name")
    if not hf_name:
        return ModelLoadError(f"{spec}: open_clip could not build the tokenizer: {first}")
    return ModelLoadError(
        f"{spec}: this architecture's text tokenizer is the hub tokenizer {hf_name!r}, which is "
        f"not in the local hub cache and could not be fetched ({first}); fetch it once with "
        f"`hf download {hf_name}` or point HF_HUB_CACHE at a cache that holds it"
    )


def _first(items: Sequence[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


class OpenClipScorer(TwoTowerScorer):
    """An open_clip model; logits = exp(logit_scale) * cosine (+ logit_bias when it has one)."""

    def __init__(
        self,
        *,
        model: Any,
        transform: Any,
        tokenizer: Any,
        spec: str,
        device: torch.device,
        precision: Precision,
        text_policy: TextPolicy,
        identity: dict[str, Any],
    ) -> None:
        self.model = model
        self.transform = transform
        self.preprocess = transform
        self.tokenizer = tokenizer
        context = getattr(model, "context_length", None) or tokenizer.context_length
        bias = getattr(model, "logit_bias", None)
        super().__init__(
            spec=spec,
            device=device,
            precision=precision,
            text_policy=text_policy,
            max_text_tokens=int(context),
            logit_scale=float(model.logit_scale.detach().exp().item()),
            logit_bias=None if bias is None else float(bias.detach().item()),
            fingerprint=short_hash(identity),
            preprocess_id=repr_id(transform),
        )
        self.provenance = provenance(identity)
        self._ids = _token_ids(tokenizer, spec)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        # open_clip's text tower needs the full context (fixed positional embedding and mask),
        # so texts are padded to context_length as the library does.
        tokens = self.tokenizer(texts, context_length=self.max_text_tokens)
        return self.model.encode_text(tokens.to(self.device))

    def model_input_ids(self, pieces: Sequence[str]) -> list[list[int]] | None:
        """The exact ids `_text_features` feeds (open_clip's own truncation, end token kept)."""
        if type(self)._text_features is not OpenClipScorer._text_features:
            # A subclass feeds its own ids: the base class's prefix rule is the safe key.
            return super().model_input_ids(pieces)
        tokens = self.tokenizer(list(pieces), context_length=self.max_text_tokens)
        return [list(row) for row in tokens.tolist()]

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Untruncated token ids, special tokens included (for first-difference positions)."""
        return self._ids(list(texts)) if len(texts) else []


def _token_ids(tokenizer: Any, spec: str) -> Any:
    """Untruncated token ids (special tokens included) for the tokenizer kinds open_clip uses."""
    from open_clip import tokenizer as octok

    if isinstance(tokenizer, octok.SimpleTokenizer):
        encode, sot, eot = tokenizer.encode, tokenizer.sot_token_id, tokenizer.eot_token_id
        return lambda texts: [[sot, *encode(t), eot] for t in texts]
    if isinstance(tokenizer, octok.HFTokenizer):
        hf, clean = tokenizer.tokenizer, tokenizer.clean_fn
        # "clips" mode appends a class token the HF tokenizer does not produce (-1 stands for it)
        extra = [-1] if getattr(tokenizer, "tokenizer_mode", "") == "clips" else []
        return lambda texts: [
            [*ids, *extra] for ids in hf([clean(t) for t in texts], truncation=False)["input_ids"]
        ]
    if isinstance(tokenizer, octok.SigLipTokenizer):
        hf = tokenizer.tokenizer
        return lambda texts: [
            list(ids)
            for ids in hf(
                [octok.canonicalize_text(octok.basic_clean(t)) for t in texts], truncation=False
            )["input_ids"]
        ]
    raise ModelLoadError(
        f"{spec}: cannot count tokens exactly with open_clip tokenizer {type(tokenizer).__name__}"
    )


@spec_loader("open_clip")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> OpenClipScorer:
    """Registry loader (via `spec_loader`) for the ``open_clip:`` prefix."""
    arch, pretrained = parse_spec(rest, spec=spec)
    checkpoint = (
        Path(pretrained).expanduser()
        if pretrained is not None and is_checkpoint_path(pretrained)
        else None
    )
    return load_open_clip(
        arch,
        pretrained=pretrained,
        checkpoint=checkpoint,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
    )


def pretrained_file_sha256(arch: str, tag: str) -> str | None:
    """sha256 of the file open_clip loaded for a pretrained tag, from its download cache.

    ``create_model_and_transforms`` has just fetched it, so this finds it in the cache. None when
    open_clip cannot say where the file is (the tag and open_clip's version then stand for it).
    """
    import open_clip.pretrained as ocp

    try:
        cfg = ocp.get_pretrained_cfg(arch, tag)
        path = ocp.download_pretrained(cfg) if cfg else None
    except Exception:  # no such tag config, or the cache moved: fall back to the tag
        return None
    return hash_file(path) if path else None


def _model_config(arch: str, *, spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(name open_clip knows it by, its model config, preprocessing overrides) for ``arch``."""
    import open_clip

    preprocess_cfg: dict[str, Any] = {}
    if arch.endswith(".json"):
        name, model_cfg, preprocess_cfg = register_config(Path(arch).expanduser())
    elif arch.startswith(_SCHEMAS):
        name, model_cfg = arch, {"schema": arch}
    else:
        name = arch
        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise ModelLoadError(
                f"{spec}: unknown open_clip architecture {arch!r} (see open_clip.list_models(), "
                "or give the path of a model-config JSON)"
            )
    return name, model_cfg, preprocess_cfg


def _create_model(
    name: str, preprocess_cfg: dict[str, Any], *, tag: str | None, local_weights: bool, spec: str
) -> tuple[Any, Any]:
    """(model on the CPU, image transform) from open_clip, with the tag's weights if any."""
    import open_clip

    overrides = {
        f"image_{k}": preprocess_cfg[k]
        for k in ("mean", "std", "interpolation", "resize_mode")
        if k in preprocess_cfg
    }
    try:
        with _quiet_random_init(local_weights):
            model, _, transform = open_clip.create_model_and_transforms(
                name,
                pretrained=tag,
                pretrained_text=tag is not None,  # no base-tower download when weights are local
                device="cpu",
                weights_only=True,
                **overrides,
            )
    except Exception as exc:  # unknown tag, failed download, bad config values ...
        raise ModelLoadError(f"{spec}: open_clip could not build the model: {exc}") from exc
    return model, transform


def load_open_clip(
    arch: str,
    *,
    pretrained: str | None,
    checkpoint: Path | None,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> OpenClipScorer:
    """Build the model from ``arch`` (name or config JSON) and load a tag or local checkpoint."""
    import open_clip

    name, model_cfg, preprocess_cfg = _model_config(arch, spec=spec)
    if checkpoint is not None and not checkpoint.is_file():
        raise ModelLoadError(f"{spec}: checkpoint not found: {checkpoint}")
    tag = None if checkpoint is not None else pretrained
    model, transform = _create_model(
        name, preprocess_cfg, tag=tag, local_weights=checkpoint is not None, spec=spec
    )

    identity: dict[str, Any] = {"backend": "open_clip", "arch": name, "config": model_cfg}
    if preprocess_cfg:
        identity["preprocess_cfg"] = preprocess_cfg
    if checkpoint is not None:
        load_state_dict_checked(model, read_state_dict(checkpoint), checkpoint)
        identity["weights_sha256"] = hash_file(checkpoint)
    elif pretrained is not None:
        identity["pretrained"] = pretrained
        identity["weights_sha256"] = pretrained_file_sha256(name, pretrained)
    model = model.to(device).eval()
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:
        raise tokenizer_error(spec, model_cfg, exc) from exc
    return OpenClipScorer(
        model=model,
        transform=transform,
        tokenizer=tokenizer,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity=identity,
    )
