"""Which scorer a ``vqascore:`` / ``captionlik:`` spec loads: decoder-only or encoder-decoder.

The model's ``config.json`` decides (read without building a config class, so a model type that
transformers does not know, such as CLIP-FlanT5's ``clip_t5``, is still recognised).
Encoder-decoder families go to `densecap_eval.scorers.vlm_seq2seq`; everything else, unreadable
configs included, goes to the decoder-only scorers of `densecap_eval.scorers.vlm`, whose errors
then speak for the spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from densecap_eval.core.config import TextPolicy
    from densecap_eval.scorers.base import Scorer, ScorerLoader

# Released CLIP-FlanT5 checkpoints, recognised by name when their config cannot be read.
CLIP_T5_REPOS = ("zhiqiulin/clip-flant5-xxl", "zhiqiulin/clip-flant5-xl")
# Language models that make a BLIP-2 / InstructBLIP checkpoint encoder-decoder.
T5_TYPES = ("t5", "mt5", "umt5")


def read_config_dict(path: str) -> dict[str, Any] | None:
    """A model folder's or hub repo's ``config.json`` as a dict, or None when it cannot be read."""
    local = Path(path).expanduser()
    try:
        if local.is_dir():
            data = json.loads((local / "config.json").read_text(encoding="utf-8"))
        else:
            from transformers import PretrainedConfig

            data, _ = PretrainedConfig.get_config_dict(path)
    except Exception:  # missing, offline, not JSON: the decoder-only loader reports it
        return None
    return data if isinstance(data, dict) else None


def seq2seq_family(path: str) -> str | None:
    """``"clip_t5"`` or ``"hf"`` (an encoder-decoder transformers VLM), else None."""
    config = read_config_dict(path)
    if config is None:
        return "clip_t5" if path.rstrip("/") in CLIP_T5_REPOS else None
    if config.get("model_type") == "clip_t5":
        return "clip_t5"
    text = config.get("text_config")
    if config.get("model_type") == "florence2" or (
        isinstance(text, dict)
        and (text.get("is_encoder_decoder") is True or text.get("model_type") in T5_TYPES)
    ):
        return "hf"
    return None


def _route(prefix: str) -> ScorerLoader:
    def load(
        spec: str,
        device: str | None = None,
        precision: str | None = None,
        *,
        text_policy: TextPolicy = "truncate",
        batch_size: int | None = None,
    ) -> Scorer:
        from densecap_eval.scorers import vlm, vlm_seq2seq

        body = spec[len(prefix) + 1 :] if spec.startswith(prefix + ":") else spec
        family = seq2seq_family(body.partition("?")[0])
        if family is None:
            loader = vlm.load_vqascore if prefix == "vqascore" else vlm.load_captionlik
        else:
            loader = vlm_seq2seq.loader(prefix, family)
        return loader(spec, device, precision, text_policy=text_policy, batch_size=batch_size)

    load.__doc__ = f"Load ``{prefix}:NAME_OR_DIR[?opt=value]`` with the scorer its config needs."
    return load


load_vqascore = _route("vqascore")
load_captionlik = _route("captionlik")
