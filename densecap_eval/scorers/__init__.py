"""Scorers: turn a model spec string into a `Scorer`.

A spec is ``PREFIX:REST``. Each prefix maps, in the `SCORERS` registry, to a loader with
`load_scorer`'s own signature, ``load(spec, device=None, precision=None, *,
text_policy="truncate") -> Scorer``, given the whole spec. Backends are
registered as lazy ``"module:attr"`` strings so torch, open_clip and transformers are imported
only when a model is loaded; plugins add prefixes through the ``densecap_eval.scorers``
entry-point group (name = prefix, value = ``"module:loader"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from densecap_eval.errors import UnknownNameError
from densecap_eval.registry import Registry
from densecap_eval.scorers.base import (
    EmbeddingScorer,
    PairScorer,
    Scorer,
    TextEncoding,
    TextPolicy,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "SCORERS",
    "EmbeddingScorer",
    "PairScorer",
    "Scorer",
    "TextEncoding",
    "list_models",
    "load_scorer",
]

SCORERS: Registry[Callable[..., Any]] = Registry(
    "model spec prefix", entry_point_group="densecap_eval.scorers"
)
SCORERS.register("open_clip", "densecap_eval.scorers.openclip:load")
SCORERS.register("hf", "densecap_eval.scorers.hf:load")
SCORERS.register("lora", "densecap_eval.scorers.lora:load")
SCORERS.register("builtin", "densecap_eval.scorers.builtin:load")
SCORERS.register("vqascore", "densecap_eval.scorers.vlm:load_vqascore")
SCORERS.register("captionlik", "densecap_eval.scorers.vlm:load_captionlik")
SCORERS.register("itm", "densecap_eval.scorers.vlm_itm:load_itm")

# One example spec per prefix, for `list_models()` and error messages.
EXAMPLES: dict[str, str] = {
    "builtin": "builtin:tiny",
    "captionlik": "captionlik:llava-hf/llava-1.5-7b-hf",
    "itm": "itm:Salesforce/blip-itm-base-coco",
    "hf": "hf:openai/clip-vit-base-patch32",
    "lora": "lora:path/to/dci_pick1@hf:openai/clip-vit-base-patch32",
    "open_clip": "open_clip:ViT-B-32/laion2b_s34b_b79k",
    "vqascore": "vqascore:llava-hf/llava-1.5-7b-hf",
}


def load_scorer(
    spec: str,
    device: str | None = None,
    precision: str | None = None,
    *,
    text_policy: TextPolicy = "truncate",
) -> Scorer:
    """Load the model a spec names, in eval mode, on ``device`` (auto: cuda, mps, cpu).

    ``precision`` defaults to fp32 on every device; fp16 / bf16 are opt-in (autocast).
    ``text_policy`` is the default policy for over-long texts (``truncate``, ``chunk-mean``,
    ``error``). Raises UnknownNameError for an unknown prefix, ModelLoadError for anything else.
    """
    from densecap_eval.scorers.text_policy import check_policy

    prefix, sep, _ = spec.partition(":")
    if not sep:
        raise UnknownNameError(
            f"model spec {spec!r} has no PREFIX: (known prefixes: {', '.join(SCORERS.names())}; "
            f"e.g. {EXAMPLES['open_clip']})"
        )
    loader = SCORERS.get(prefix)
    check_policy(text_policy)
    return loader(spec, device, precision, text_policy=text_policy)


def list_models() -> list[str]:
    """One example spec for each known prefix (plugins included), sorted."""
    return sorted(EXAMPLES.get(prefix, f"{prefix}:...") for prefix in SCORERS.names())
