"""``builtin:tiny``: the small open_clip model shipped in data/models/ (trained offline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError, UnknownNameError
from densecap_eval.core.paths import bundled_models_dir
from densecap_eval.scorers.common import spec_loader
from densecap_eval.scorers.openclip import OpenClipScorer, load_open_clip

if TYPE_CHECKING:
    import torch

# name -> (model-config JSON, weights) inside the bundled models folder
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "tiny": ("tiny_clip.json", "tiny_clip.safetensors"),
}


@spec_loader("builtin")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> OpenClipScorer:
    """Registry loader (via `spec_loader`) for the ``builtin:`` prefix."""
    if rest not in BUILTIN_MODELS:
        raise UnknownNameError(
            f"unknown built-in model {spec!r} (known: "
            + ", ".join(f"builtin:{n}" for n in sorted(BUILTIN_MODELS))
            + ")"
        )
    folder = bundled_models_dir()
    config, weights = (folder / name for name in BUILTIN_MODELS[rest])
    missing = [p for p in (config, weights) if not p.is_file()]
    if missing:
        raise ModelLoadError(
            f"{spec}: bundled model files missing ({', '.join(str(p) for p in missing)}); "
            "make them with `python scripts/train_tiny_clip.py`"
        )
    return load_open_clip(
        str(config),
        pretrained=str(weights),
        checkpoint=weights,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
    )
