"""``flair:FILE.pt``: FLAIR (text-conditioned attention pooling over a CLIP ViT's patch tokens).

A released FLAIR checkpoint is open_clip-style (``{"state_dict": {"module." + key: ...}}``):
a ViT whose output is every token after ``ln_post`` (no ``visual.proj``), a CLIP text tower
stored at the top level (``transformer.*``, ``token_embedding``, ``positional_embedding``,
``ln_final``), separate projections ``image_post.proj`` and ``text_post.proj`` into the joint
space, and ``visual_proj``: an 8-head attention pooling block (``ln_q``/``ln_k``/``ln_v`` and a
``MultiheadAttention`` with ``add_zero_attn``). The towers are open_clip's own ``Transformer``
blocks (GELU, as FLAIR's config has no QuickGELU), loaded strictly.

Modes (``?mode=``, in the fingerprint and so in the cache key):

- ``late`` (default, what the paper reports): for each (image, text) the pooling block is
  queried with the text's global embedding over that image's projected patch tokens, and the
  score is ``exp(logit_scale) * cosine(pooled image, text)``. A late-interaction scorer: each
  image's tokens and each text's embedding are encoded once; only the small head runs per pair.
  FLAIR's retrieval omits ``logit_bias`` (a constant: rankings are the same), and so do we.
- ``global``: plain CLIP scoring, the class token through ``image_post.proj`` against the
  text's global embedding (FLAIR's ``--direct-global-matching``); an ordinary embedding scorer.

Text: CLIP BPE, 77 tokens, truncated as open_clip's tokenizer does (end token kept).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.base import TextEncoding
from densecap_eval.scorers.common import spec_loader
from densecap_eval.scorers.hubfile import resolve_checkpoint
from densecap_eval.scorers.openclip import OpenClipScorer, load_state_dict_checked, read_state_dict
from densecap_eval.scorers.text_policy import pool_pieces
from densecap_eval.scorers.vlm_common import split_spec

if TYPE_CHECKING:
    import torch
    from PIL import Image

MODES: tuple[str, ...] = ("late", "global")
# The hub repo's checkpoints; a bare repo id means the largest-data one.
HUB_REPO = "xiaorui638/flair"
HUB_FILES = {HUB_REPO: "flair-merged30m.pt"}
# Fixed by FLAIR's model config / code, not by the weights' shapes.
VISION_HEAD_WIDTH = 64  # open_clip's CLIPVisionCfg.head_width
TEXT_HEADS = 8  # ViT-B-16-FLAIR.json text_cfg.heads
POOL_HEADS = 8  # PureAttentionPoolingBlock's n_head
CONTEXT = 77  # text_cfg.context_length

_REQUIRED = (
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.ln_post.weight",
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "image_post.proj",
    "text_post.proj",
    "visual_proj.attn.in_proj_weight",
    "logit_scale",
)


# -- the model --------------------------------------------------------------------------------


def _layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)}
    return len(found)


def check_layout(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a checkpoint that is not FLAIR's, saying what it lacks or what it is instead."""
    if "visual.proj" in state or "text_projection" in state:
        raise ModelLoadError(
            f"checkpoint {path} has visual.proj / text_projection: a plain CLIP checkpoint, not "
            "FLAIR's (load it with open_clip: instead)"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ModelLoadError(
            f"checkpoint {path} is not a FLAIR checkpoint: missing {', '.join(missing[:3])}"
            + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        )


def architecture(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """FLAIR's dimensions, read from the weights' shapes (the released files carry no config)."""
    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    n_pos = int(state["visual.positional_embedding"].shape[0])
    grid = math.isqrt(n_pos - 1)
    if grid * grid != n_pos - 1:
        raise ModelLoadError(
            f"checkpoint {path}: visual.positional_embedding has {n_pos} rows, not 1 + a square "
            "grid of patches"
        )
    context = int(state["positional_embedding"].shape[0])
    if context != CONTEXT:  # never cut or padded: FLAIR's text tower is 77 tokens long
        raise ModelLoadError(
            f"checkpoint {path}: positional_embedding has {context} rows, FLAIR's text context is "
            f"{CONTEXT}"
        )
    text_width = int(state["ln_final.weight"].shape[0])
    embed_dim = int(state["image_post.proj"].shape[1])
    arch = {
        "embed_dim": embed_dim,
        "vision_width": width,
        "vision_layers": _layers(state, "visual.transformer.resblocks."),
        "vision_mlp": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
        if "visual.transformer.resblocks.0.mlp.c_fc.weight" in state
        else 4 * width,
        "patch_size": patch,
        "image_size": patch * grid,
        "text_width": text_width,
        "text_layers": _layers(state, "transformer.resblocks."),
        "text_mlp": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
        if "transformer.resblocks.0.mlp.c_fc.weight" in state
        else 4 * text_width,
        "context_length": context,
        "vocab_size": int(state["token_embedding.weight"].shape[0]),
    }
    bad = [
        f"{name} {value} is not divisible by {heads} heads"
        for name, value, heads in (
            ("text width", text_width, TEXT_HEADS),
            ("embed dim", embed_dim, POOL_HEADS),
        )
        if value % heads
    ]
    if width % VISION_HEAD_WIDTH:
        bad.append(f"vision width {width} is not a multiple of the head width {VISION_HEAD_WIDTH}")
    if bad:
        raise ModelLoadError(f"checkpoint {path}: {'; '.join(bad)}")
    return arch


def build_model(state: dict[str, torch.Tensor], path: Path) -> tuple[Any, dict[str, Any]]:
    """(FLAIR module, its dimensions) for ``state``, loaded strictly (ModelLoadError if not)."""
    check_layout(state, path)
    arch = architecture(state, path)
    model = _flair_module(arch)
    state = dict(state)
    # FLAIR's own loader fills a missing bias the same way (it is unused by its retrieval).
    state.setdefault("logit_bias", state["logit_scale"].new_zeros(()))
    load_state_dict_checked(model, state, path)
    return model, arch


def _flair_module(arch: dict[str, Any]) -> Any:
    from densecap_eval.scorers.flair_model import FlairModule  # imports torch, open_clip

    return FlairModule(
        arch, vision_head_width=VISION_HEAD_WIDTH, text_heads=TEXT_HEADS, pool_heads=POOL_HEADS
    )


# -- the scorers ------------------------------------------------------------------------------


class FlairGlobalScorer(OpenClipScorer):
    """``?mode=global``: CLIP-style cosine of the two global embeddings, times the scale."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.logit_bias = None  # FLAIR's retrieval leaves it out (a constant shift)


class FlairScorer(FlairGlobalScorer):
    """Faithful FLAIR scoring: a `LateInteractionScorer`.

    ``encode_image_tokens`` gives each image's projected patch tokens, ``encode_texts`` each
    text's global embedding (unnormalised: it is the pooling block's query, and its layer norm
    is not exactly scale-free; under ``chunk-mean`` a multi-chunk text gets the normalised mean
    of its chunks' directions), and ``score_tokens`` runs only the pooling head.
    """

    kind: Literal["late-interaction"] = "late-interaction"  # type: ignore[assignment]

    def encode_pixel_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) pixels -> (n, tokens, dim) float32 CPU image tokens."""
        with self._running():
            out = self.model.encode_image_tokens(pixels.to(self.device, non_blocking=True))
        return out.float().cpu()

    def encode_image_tokens(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch

        if not images:
            return torch.zeros((0, 0, 0), dtype=torch.float32)
        return self.encode_pixel_tokens(torch.stack([self.preprocess(im) for im in images]))

    def encode_texts(
        self, texts: Sequence[str], *, policy: TextPolicy | None = None
    ) -> TextEncoding:
        import torch
        import torch.nn.functional as F

        plan = self._plan(texts, policy)
        if not plan.pieces:
            empty = torch.zeros((0, self._embed_dim()), dtype=torch.float32)
            return TextEncoding(embeddings=empty, n_tokens=[], cut=[])
        with self._running():
            raw = self._text_features(plan.pieces).float().cpu()
        if len(plan.pieces) == len(plan.n_tokens):  # one piece per text: the raw query
            embeddings = raw
        else:
            embeddings = pool_pieces(F.normalize(raw, dim=-1), plan.owners, len(plan.n_tokens))
            pieces_of: dict[int, list[int]] = {}
            for j, owner in enumerate(plan.owners):
                pieces_of.setdefault(owner, []).append(j)
            for i, js in pieces_of.items():
                if len(js) == 1:  # within the limit: the raw query, as under truncate
                    embeddings[i] = raw[js[0]]
        return TextEncoding(embeddings=embeddings, n_tokens=plan.n_tokens, cut=plan.cut)

    def score_tokens(
        self, image_tokens: torch.Tensor, text_embeddings: torch.Tensor
    ) -> torch.Tensor:
        """(R, tokens, dim) x (C, dim) -> (R, C) float32 CPU scores: every image with every text."""
        import torch

        r, c = image_tokens.shape[0], text_embeddings.shape[0]
        if not r or not c:
            return torch.zeros((r, c), dtype=torch.float32)
        with self._running():
            tokens = image_tokens.to(self.device, non_blocking=True)
            query = text_embeddings.to(self.device, non_blocking=True)
            pooled = self.model.visual_proj.forward_shared(query, tokens)
            out = self._cosine(pooled, query.unsqueeze(0))
        return out.float().cpu()

    def score_token_pairs(
        self, image_tokens: torch.Tensor, text_embeddings: torch.Tensor
    ) -> torch.Tensor:
        """(P, tokens, dim) x (P, dim) -> (P,) scores of pair i = (image i, text i)."""
        import torch

        if not image_tokens.shape[0]:
            return torch.zeros(0, dtype=torch.float32)
        with self._running():
            tokens = image_tokens.to(self.device, non_blocking=True)
            query = text_embeddings.to(self.device, non_blocking=True).unsqueeze(1)
            out = self._cosine(self.model.visual_proj(query, tokens), query)
        return out.reshape(-1).float().cpu()

    def _cosine(self, pooled: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        pooled = F.normalize(pooled.float(), dim=-1)
        return self.logit_scale * (pooled * F.normalize(query.float(), dim=-1)).sum(-1)

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        return self.score_tokens(
            self.encode_image_tokens(images), self.encode_texts(texts).embeddings
        )


# -- the loader -------------------------------------------------------------------------------


def parse_options(rest: str, *, spec: str) -> tuple[str, str]:
    """``FILE?mode=...`` -> (file, mode)."""
    name, options = split_spec(rest, "flair", ("mode",))
    mode = options.get("mode", "late")
    if mode not in MODES:
        raise ModelLoadError(f"{spec}: unknown mode {mode!r} (known: {', '.join(MODES)})")
    return name, mode


@spec_loader("flair")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> FlairGlobalScorer:
    """Registry loader (via `spec_loader`) for the ``flair:`` prefix."""
    import open_clip

    name, mode = parse_options(rest, spec=spec)
    path, identity = resolve_checkpoint(name, spec=spec, default_file=HUB_FILES.get(name))
    try:
        model, arch = build_model(read_state_dict(path), path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec}: {exc}") from exc
    model = model.to(device).eval()
    # open_clip's defaults, as FLAIR's factory uses them: bicubic resize, center crop, OpenAI
    # mean / std.
    transform = open_clip.image_transform(arch["image_size"], is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=arch["context_length"])
    cls = FlairScorer if mode == "late" else FlairGlobalScorer
    return cls(
        model=model,
        transform=transform,
        tokenizer=tokenizer,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity={"backend": "flair", **identity, "mode": mode, "config": arch},
    )
