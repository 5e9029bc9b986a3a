"""``fgclip:DIR_OR_HUB_ID[?mode=short][&protocol=fgclip]``: FG-CLIP v1 as a stock transformers CLIP.

The released folder (``qihoo360/fg-clip-base`` / ``-large``: ``config.json``, safetensors,
tokenizer and ``preprocessor_config.json``) ships modeling code that cannot run on
transformers 5, so it is never executed: the config and weights are read here and converted,
strictly, to a stock `CLIPModel`:

- long mode (default, what FG-CLIP reports for long captions): 248 text positions, rows 0-19
  from ``position_embedding_ori`` and 20-247 from ``position_embedding_res``, and
  ``text_filip_projection`` as the text projection;
- ``mode=short``: the 77-row ``position_embedding`` and ``text_projection``.

End token = pad token = 49407 and pooling at the first end token (FG-CLIP's own rule). The extra
``logit_scale_finegraind`` / ``logit_scale_hardneg`` are training-only and dropped; the tables
and projection of the other mode are dropped too. Any other missing, extra or misshaped tensor
is refused (a position table is never cut or padded to fit).

``protocol=fgclip`` (alias ``resize=square``) adds the resize its own scripts do before the CLIP
processor: every image squashed to a square of the processor's crop size (224 in its DCI eval).
Off by default: the released processor is what every ``hf:``-style model gets here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import TwoTowerScorer, provenance, short_hash, spec_loader
from densecap_eval.scorers.hf import TokenizerIds, config_identity, quiet_length_warning
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

LONG_LEN, KEEP_LEN, EOS_ID, BOS_ID = 248, 20, 49407, 49406
MODES = ("long", "short")
_EMB = "text_model.embeddings."
_LONG_KEYS = (
    _EMB + "position_embedding_ori.weight",
    _EMB + "position_embedding_res.weight",
    "text_filip_projection.weight",
)
_TRAINING_ONLY = ("logit_scale_finegraind", "logit_scale_hardneg")


def parse_options(rest: str, *, spec: str) -> tuple[str, str, bool]:
    """(source, mode, square resize) from ``SOURCE?mode=...&protocol=fgclip``."""
    source, options = split_spec(rest, "fgclip", ("mode", "protocol", "resize"))
    if not source:
        raise ModelLoadError(f"{spec}: no folder or hub id after 'fgclip:'")
    mode = options.get("mode", "long")
    if mode not in MODES:
        raise ModelLoadError(f"{spec}: unknown mode {mode!r} (known: long, short)")
    protocol = options.get("protocol", "")
    if protocol not in ("", "fgclip"):
        raise ModelLoadError(f"{spec}: unknown protocol {protocol!r} (known: fgclip)")
    resize = options.get("resize", "")
    if resize not in ("", "square"):
        raise ModelLoadError(f"{spec}: unknown resize {resize!r} (known: square)")
    return source, mode, protocol == "fgclip" or resize == "square"


def convert_state(
    state: dict[str, torch.Tensor], *, mode: str, short_len: int, spec: str, where: Path
) -> dict[str, torch.Tensor]:
    """FG-CLIP keys -> stock CLIPModel keys for ``mode`` (refusing missing or misshaped tables)."""
    missing = [k for k in (_EMB + "position_embedding.weight", *_LONG_KEYS) if k not in state]
    if missing:
        raise ModelLoadError(
            f"{spec}: {where} is not an FG-CLIP checkpoint: missing {', '.join(missing)}"
        )
    out = dict(state)
    short = out.pop(_EMB + "position_embedding.weight")
    ori, res = out.pop(_LONG_KEYS[0]), out.pop(_LONG_KEYS[1])
    filip = out.pop("text_filip_projection.weight")
    for key in _TRAINING_ONLY:
        out.pop(key, None)
    drop_position_ids(out, spec=spec, where=where)
    out[_EMB + "position_embedding.weight"] = position_table(
        short, ori, res, mode=mode, lengths=(short_len, LONG_LEN), keep=KEEP_LEN, spec=spec,
        where=where,
    )  # fmt: skip
    if mode == "long":
        out["text_projection.weight"] = filip
    return out


def position_table(
    short: torch.Tensor,
    ori: torch.Tensor,
    res: torch.Tensor,
    *,
    mode: str,
    lengths: tuple[int, int],
    keep: int,
    spec: str,
    where: Path,
    hint: str = "",
) -> torch.Tensor:
    """The text position table ``mode`` runs with (FG-CLIP and FG-CLIP 2 alike), once the short,
    original-long and stretched-long tables have the rows ``lengths`` (short, long) say: the short
    table, or (long) the first ``keep`` original rows followed by the stretched ones."""
    import torch

    short_len, long_len = lengths
    for name, table, rows in (("position_embedding", short, short_len),
                              ("position_embedding_ori", ori, long_len),
                              ("position_embedding_res", res, long_len)):  # fmt: skip
        if table.ndim != 2 or table.shape[0] != rows:
            raise ModelLoadError(
                f"{spec}: {where}: {_EMB}{name}.weight has shape {tuple(table.shape)}, "
                f"expected {rows} rows{hint}"
            )
    return torch.cat([ori[:keep], res[keep:]]) if mode == "long" else short


def build_model(config_json: dict[str, Any], *, positions: int, spec: str, where: Path) -> Any:
    """A stock CLIPModel shaped by the folder's config, with ``positions`` text positions."""
    from transformers import CLIPConfig

    try:
        text = dict(config_json.get("text_config") or {})
        vision = dict(config_json.get("vision_config") or {})
        text.update(max_position_embeddings=positions, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
                    bos_token_id=BOS_ID)  # fmt: skip
        kwargs = {k: config_json[k] for k in ("projection_dim", "logit_scale_init_value")
                  if k in config_json}  # fmt: skip
        config = CLIPConfig(text_config=text, vision_config=vision, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"{spec}: {where}/config.json is not a CLIP config: {exc}") from exc
    from transformers import CLIPModel

    return CLIPModel(config), config


class SquareResize:
    """Squash an image to ``size`` x ``size`` (PIL's default bicubic), as FG-CLIP's scripts do."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        from PIL import Image as PILImage

        return image.resize((self.size, self.size), PILImage.Resampling.BICUBIC)


class ClipPixels:
    """Picklable PIL -> pixel tensor: optional square resize, then the CLIP image processor."""

    def __init__(self, image_processor: Any, square: SquareResize | None) -> None:
        self.image_processor = image_processor
        self.square = square

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.square is not None:
            image = self.square(image.convert("RGB"))
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


class FGClipScorer(TokenizerIds, TwoTowerScorer):
    """FG-CLIP v1 converted to a transformers CLIPModel (long or short mode)."""

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        square: SquareResize | None,
        spec: str,
        device: torch.device,
        precision: Precision,
        text_policy: TextPolicy,
        identity: dict[str, Any],
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        quiet_length_warning(tokenizer)
        self.preprocess = ClipPixels(image_processor, square)
        preprocess = {"processor": image_processor.to_dict(), "square": square and square.size}
        super().__init__(
            spec=spec,
            device=device,
            precision=precision,
            text_policy=text_policy,
            max_text_tokens=int(model.config.text_config.max_position_embeddings),
            logit_scale=float(model.logit_scale.detach().exp().item()),
            logit_bias=None,
            fingerprint=short_hash(identity),
            preprocess_id=short_hash(preprocess),
        )
        self.provenance = provenance(identity)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        # Causal attention + pooling at the first end token: padding to the longest text gives
        # what FG-CLIP's padding to max_length gives. Its eval passes no attention mask either.
        ids = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_text_tokens,
            return_tensors="pt",
        )["input_ids"]  # fmt: skip
        return self.model.get_text_features(input_ids=ids.to(self.device))


def load_fgclip(
    rest: str, *, spec: str
) -> tuple[Any, Any, Any, SquareResize | None, dict[str, Any]]:
    """(model, tokenizer, image processor, square resize, identity) for an ``fgclip:`` spec."""
    from transformers import AutoTokenizer, CLIPImageProcessor

    source, mode, square = parse_options(rest, spec=spec)
    folder, identity = resolve_folder(source, spec=spec)
    config_json = read_json(folder / "config.json", spec=spec)
    short_len = int((config_json.get("text_config") or {}).get("max_position_embeddings", 77))
    positions = LONG_LEN if mode == "long" else short_len
    model, config = build_model(config_json, positions=positions, spec=spec, where=folder)
    state = convert_state(
        read_safetensors(folder, spec=spec), mode=mode, short_len=short_len, spec=spec,
        where=folder,
    )  # fmt: skip
    load_state_dict_checked(model, state, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        image_processor = CLIPImageProcessor.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(
            f"{spec}: cannot load tokenizer or processor from {folder}: {exc}"
        ) from exc
    if tokenizer.convert_tokens_to_ids(tokenizer.eos_token) != EOS_ID:
        raise ModelLoadError(f"{spec}: {folder}: the tokenizer's end token is not id {EOS_ID}")
    crop = image_processor.crop_size or {}
    resize = SquareResize(int(crop.get("height", 224))) if square else None
    identity = {"backend": "fgclip", "mode": mode, "config": config_identity(config), **identity}
    return model, tokenizer, image_processor, resize, identity


@spec_loader("fgclip")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> FGClipScorer:
    """Registry loader (via `spec_loader`) for the ``fgclip:`` prefix."""
    model, tokenizer, image_processor, square, identity = load_fgclip(rest, spec=spec)
    return FGClipScorer(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        square=square,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity=identity,
    )
