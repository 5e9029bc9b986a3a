"""``tulip:FILE.pt``: TULIP (a CLIP ViT-L/14 whose text tower uses rotary positions, 248 tokens).

The released checkpoint is an open_clip training checkpoint: ``{'state_dict': {'module.' + key}}``
holding a whole CLIP whose text keys (``token_embedding``, ``transformer.resblocks.*``,
``ln_final``, ``text_projection``) belong to TULIP's rotary text tower and whose ``visual.*``
keys are an OpenAI-layout ViT. The text tower has no absolute position table: the
checkpoint's 77-row ``positional_embedding`` (left over from the CLIP it started from) and its
``logit_scale`` are not used by TULIP's own eval, and are ignored here too.

Text tower, as TULIP's ``TextTransformerRoPE``: pre-norm blocks with plain (erf) GELU, causal
attention where the query and key of each head are rotated by RoPE over consecutive
(interleaved) pairs, theta 10000, frequencies precomputed for 2 x 248 positions (the default
ones TULIP evaluates with, not the NTK-scaled ones of its fine-tuning); ``ln_final``, pooling at
the argmax (EOT) token, ``text_projection``. CLIP BPE, context 248 (247 tokens + EOT when cut).
Vision: the OpenAI ViT (QuickGELU) with OpenAI's preprocessing. Scores: 100 x cosine, the
fixed scale of TULIP's own eval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import (
    TwoTowerScorer,
    provenance,
    repr_id,
    short_hash,
    spec_loader,
)
from densecap_eval.scorers.hubfile import resolve_checkpoint
from densecap_eval.scorers.longclip import VISION_KEYS, count_blocks, openai_vision_cfg
from densecap_eval.scorers.openclip import load_state_dict_checked, read_state_dict
from densecap_eval.scorers.vlm_common import split_spec

if TYPE_CHECKING:
    from pathlib import Path

    import torch

CONTEXT = 248
ROPE_THETA = 10000.0
LOGIT_SCALE = 100.0  # TULIP's eval: fixed, not the checkpoint's logit_scale
_TEXT_KEYS = ("token_embedding.weight", "ln_final.weight", "text_projection")
_IGNORED = ("positional_embedding", "logit_scale")  # in the file, unused by TULIP's text tower


class TulipModel:
    """The two towers (a plain holder: each is an ``nn.Module`` loaded strictly)."""

    def __init__(self, visual: Any, text: Any) -> None:
        self.visual = visual
        self.text = text

    def to(self, device: torch.device) -> TulipModel:
        self.visual.to(device).eval()
        self.text.to(device).eval()
        return self


def build_model(state: dict[str, torch.Tensor], path: Path) -> TulipModel:
    """TULIP's towers shaped like the checkpoint; every tensor but the ignored two is used."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    missing = [k for k in (*_TEXT_KEYS, *VISION_KEYS) if k not in state]
    if missing:
        raise ModelLoadError(
            f"checkpoint {path} lacks {', '.join(missing)} (a truncated file, or not a TULIP "
            "checkpoint: its state_dict holds the rotary text tower and an OpenAI-layout ViT)"
        )
    for key in _IGNORED:
        state.pop(key, None)
    text_state = {k: v for k, v in state.items() if not k.startswith("visual.")}
    visual_state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    width = int(state["ln_final.weight"].shape[0])
    from densecap_eval.scorers.tulip_model import RotaryTextTower  # imports torch

    text = RotaryTextTower(
        context=CONTEXT,
        theta=ROPE_THETA,
        vocab=int(state["token_embedding.weight"].shape[0]),
        width=width,
        heads=max(1, width // 64),  # OpenAI's head width 64 (ViT-L/14's text: 12 heads)
        layers=count_blocks(state, "transformer.resblocks."),
        output_dim=int(state["text_projection"].shape[1]),
    )
    cfg = openai_vision_cfg(state)
    visual = VisionTransformer(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        width=cfg.width,
        layers=cfg.layers,
        heads=cfg.width // 64,
        mlp_ratio=4.0,
        output_dim=int(state["visual.proj"].shape[1]),
        act_layer=QuickGELU,
    )
    load_state_dict_checked(text, text_state, path)
    load_state_dict_checked(visual, visual_state, path)
    return TulipModel(visual, text)


class TulipScorer(TwoTowerScorer):
    """TULIP: 100 x cosine of the OpenAI ViT's and the rotary text tower's features."""

    def __init__(
        self,
        *,
        model: TulipModel,
        spec: str,
        device: torch.device,
        precision: Precision,
        text_policy: TextPolicy,
        identity: dict[str, Any],
    ) -> None:
        import open_clip

        self.model = model
        # OpenAI's: bicubic resize of the short side, center crop, RGB, OpenAI mean / std
        self.preprocess = open_clip.image_transform(model.visual.image_size[0], is_train=False)
        self.tokenizer = open_clip.SimpleTokenizer(context_length=CONTEXT)
        super().__init__(
            spec=spec,
            device=device,
            precision=precision,
            text_policy=text_policy,
            max_text_tokens=CONTEXT,
            logit_scale=LOGIT_SCALE,
            logit_bias=None,
            fingerprint=short_hash(identity),
            preprocess_id=repr_id(self.preprocess),
        )
        self.provenance = provenance(identity)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.visual(pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        # padded to the full context, as TULIP's encode_text does (causal, so only exactness)
        return self.model.text(self.tokenizer(texts).to(self.device))

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Untruncated CLIP BPE ids with start and end tokens."""
        tok = self.tokenizer
        return [[tok.sot_token_id, *tok.encode(t), tok.eot_token_id] for t in texts]


@spec_loader("tulip")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> TulipScorer:
    """Registry loader (via `spec_loader`) for the ``tulip:`` prefix."""
    name, _ = split_spec(rest, "tulip", ())
    path, identity = resolve_checkpoint(name, spec=spec, default_file=None)
    try:
        model = build_model(read_state_dict(path), path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec}: {exc}") from exc
    return TulipScorer(
        model=model.to(device),
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity={"backend": "tulip", **identity},
    )
