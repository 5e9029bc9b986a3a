"""CLIP-FlanT5 (VQAScore's own model) loaded from its released files into transformers' classes.

The release (``zhiqiulin/clip-flant5-xxl``, ``-xl``) ships weights and a ``config.json`` with
``model_type="clip_t5"`` but no modeling code; t2v_metrics' own class does not run on
transformers 5. So the weights go into transformers' `T5ForConditionalGeneration`, a
`CLIPVisionModel` and the ``mlp2x_gelu`` projector (Linear, GELU, Linear), all plain modules.

Key layout, derived from t2v_metrics' ``CLIPT5ForConditionalGeneration`` (a
`T5ForConditionalGeneration` subclass whose ``get_model()`` returns itself, so no ``model.``
level): it sets ``self.vision_tower`` (a wrapper whose ``vision_tower`` attribute is
transformers' `CLIPVisionModel`, whose 4.x weights sit under ``vision_model.``) and
``self.mm_projector`` (``nn.Sequential``: indices 0 and 2 hold weights) on itself, and aliases
``self.embed_tokens = self.encoder.embed_tokens``. ``save_pretrained`` therefore writes
``shared.weight``, ``encoder.*``, ``decoder.*``, ``lm_head.weight``, ``mm_projector.{0,2}.*``,
possibly ``embed_tokens.weight``, and ``vision_tower.vision_tower.vision_model.*`` when the tower
was saved. The hub's file listing of ``clip-flant5-xl`` shows one ``pytorch_model.bin`` (6.32 GB,
bf16 storage: about T5-XL plus a CLIP-L tower), ``spiece.model``, tokenizer files and a
``training_args.bin``; the key names inside could not be read here, so the loader also accepts a leading
``model.``, the tower without the ``vision_model.`` level (transformers 5 naming), and a release
without tower weights: the tower then comes from the config's ``mm_vision_tower`` (t2v_metrics
builds it from there too, then lets saved weights override it). The tower's architecture and image
processor always come from ``mm_vision_tower`` (the release's config holds only the T5 fields and
``mm_*`` settings).

Tokenizer: t2v_metrics loads FlanT5's slow tokenizer (``use_fast=False``: sentencepiece) from
``google/flan-t5-xxl`` / ``-xl``; here the same ``spiece.model`` is read with the sentencepiece
library, each chunk encoded and followed by ``</s>``, as the slow tokenizer does. Literal
special-token strings inside a caption (``</s>``, ``<extra_id_0>``) are encoded as text, where the
slow tokenizer would map them to their ids. t2v_metrics calls ``resize_token_embeddings(
len(tokenizer))`` at load (32100 rows for FlanT5's 32000 pieces + 100 sentinels): the embedding
and output rows beyond the tokenizer's length are dropped here too, so the softmax runs over the
same vocabulary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.hf_folder import read_json

if TYPE_CHECKING:
    import torch

# t2v_metrics' (LLaVA's) system message and its 't5_chat' prompt layout.
SYSTEM_MSG = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IMAGE_TOKEN = "<image>"
CONTEXT_LEN = 2048  # t2v_metrics' tokenizer model_max_length: input ids beyond it are cut
# Released checkpoints and the FlanT5 tokenizer t2v_metrics pairs with each.
TOKENIZER_REPOS = {
    "zhiqiulin/clip-flant5-xxl": "google/flan-t5-xxl",
    "zhiqiulin/clip-flant5-xl": "google/flan-t5-xl",
}
# What a hub download fetches (the release may hold .bin or .safetensors weights).
HUB_FILES = ("*.json", "*.safetensors", "*.bin", "*.model")


def chat_prompt(question: str) -> str:
    """t2v_metrics' 't5_chat' prompt: system message, user turn with the image, assistant cue."""
    return f"{SYSTEM_MSG} USER: {IMAGE_TOKEN}\n{question} ASSISTANT: "


class SentencePieceT5:
    """FlanT5's slow tokenizer: sentencepiece pieces, ``</s>`` appended per encoded chunk.

    Offers what `TextBudget` calls: ``tokenizer(text, add_special_tokens=False,
    return_offsets_mapping=True)`` with character offsets.
    """

    def __init__(self, model_file: Path, n_extra: int) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.n_extra = n_extra
        self.eos_token_id = int(self.sp.eos_id())
        self.pad_token_id = int(self.sp.pad_id())
        self.unk_token_id = int(self.sp.unk_id())

    def __len__(self) -> int:
        return int(self.sp.get_piece_size()) + self.n_extra

    def encode(self, text: str, *, eos: bool = True) -> list[int]:
        ids = [int(i) for i in self.sp.encode(text)]
        return [*ids, self.eos_token_id] if eos else ids

    def __call__(
        self, text: str, *, add_special_tokens: bool = True, return_offsets_mapping: bool = False
    ) -> dict[str, Any]:
        proto = self.sp.encode(text, return_type="proto")
        ids = [int(p.id) for p in proto.pieces]
        out: dict[str, Any] = {
            "input_ids": ids + ([self.eos_token_id] if add_special_tokens else [])
        }
        if return_offsets_mapping:
            # sentencepiece reports byte offsets into the UTF-8 text; map them to characters.
            char_at = [0] * (len(text.encode("utf-8")) + 1)
            pos = 0
            for i, ch in enumerate(text):
                n = len(ch.encode("utf-8"))
                for b in range(pos, pos + n):
                    char_at[b] = i
                pos += n
                char_at[pos] = i + 1
            out["offset_mapping"] = [(char_at[p.begin], char_at[p.end]) for p in proto.pieces]
        return out


@dataclass
class ClipT5:
    """The loaded parts and where each came from (for the run card)."""

    t5: Any
    vision: Any
    projector: Any
    image_processor: Any
    tokenizer: SentencePieceT5
    select_layer: int
    select_feature: str
    sources: dict[str, Any] = field(default_factory=dict)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP hidden state ``select_layer`` (patches only unless ``cls_patch``), projected."""
        out = self.vision(pixel_values=pixels, output_hidden_states=True)
        hidden = out.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            hidden = hidden[:, 1:]
        return self.projector(hidden)


def is_clip_t5(config: dict[str, Any]) -> bool:
    return config.get("model_type") == "clip_t5"


def resolve_folder(spec: str, path: str, patterns: tuple[str, ...] = HUB_FILES) -> Path:
    """A local folder, or a hub id's snapshot (downloaded, or from the cache offline)."""
    local = Path(path).expanduser()
    if local.exists() or path.startswith((".", "/", "~")):
        if not local.is_dir():
            raise ModelLoadError(f"{spec}: model directory {local} does not exist")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=list(patterns)))
    except Exception as exc:  # offline and not cached, unknown repo ...
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise ModelLoadError(
            f"{spec}: {path} is neither a local folder nor a hub repo that can be fetched: {first}"
        ) from exc


def read_weights(spec: str, folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors or (if none) PyTorch ``.bin`` files, shards merged."""
    import torch
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    loader: Any = load_file
    if not files:
        files = sorted(p for p in folder.glob("*.bin") if p.name != "training_args.bin")

        def loader(p: str) -> Any:
            try:  # memory-mapped: an 11B checkpoint's shards are not read twice
                return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # a legacy (non-zip) .bin cannot be mapped
                return torch.load(p, map_location="cpu", weights_only=True)

    if not files:
        raise ModelLoadError(f"{spec}: no *.safetensors or *.bin weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            state.update(loader(str(path)))
        except Exception as exc:  # truncated or foreign file
            raise ModelLoadError(f"{spec}: cannot read weights {path}: {exc}") from exc
    return state


_VISION = re.compile(r"^vision_tower\.vision_tower\.(?:vision_model\.)?")


def split_release_keys(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(T5, CLIP vision without any ``vision_model.`` level, projector) state dicts."""
    t5: dict[str, torch.Tensor] = {}
    vision: dict[str, torch.Tensor] = {}
    projector: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("model.") :] if key.startswith("model.") else key
        if name.startswith("mm_projector."):
            projector[name[len("mm_projector.") :]] = value
        elif _VISION.match(name):
            vision[_VISION.sub("", name)] = value
        elif name == "embed_tokens.weight":  # t2v_metrics' alias of encoder.embed_tokens
            t5.setdefault("shared.weight", value)
        else:
            t5[name] = value
    if "shared.weight" not in t5 and "encoder.embed_tokens.weight" in t5:
        t5["shared.weight"] = t5["encoder.embed_tokens.weight"]
    return t5, vision, projector


def _tokenizer(spec: str, path: str, folder: Path, option: str | None) -> tuple[Path, str]:
    """(folder holding ``spiece.model``, where it came from): option, release, known pairing."""
    if option:
        where = resolve_folder(spec, option, ("*.model", "*.json"))
        source = option
    elif (folder / "spiece.model").is_file():
        where, source = folder, str(path)
    elif path.rstrip("/") in TOKENIZER_REPOS:
        source = TOKENIZER_REPOS[path.rstrip("/")]
        where = resolve_folder(spec, source, ("spiece.model", "*.json"))
    else:
        raise ModelLoadError(
            f"{spec}: no spiece.model in {folder}; name FlanT5's tokenizer with "
            "?tokenizer=DIR_OR_REPO (t2v_metrics uses google/flan-t5-xxl for clip-flant5-xxl)"
        )
    if not (where / "spiece.model").is_file():
        raise ModelLoadError(f"{spec}: tokenizer folder {where} has no spiece.model")
    return where, source


def _n_extra_ids(folder: Path) -> int:
    """T5's sentinel count (``extra_ids``, 100 unless the tokenizer config says otherwise)."""
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 100
    return int(cfg.get("extra_ids", 100)) if isinstance(cfg, dict) else 100


def _projector(spec: str, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> Any:
    """t2v_metrics' ``build_vision_projector``: ``linear`` or ``mlp{N}x_gelu``."""
    import torch

    kind = str(config.get("mm_projector_type", "linear"))
    n_in, n_out = int(config["mm_hidden_size"]), int(config["d_model"])
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if kind == "linear":
        module: Any = torch.nn.Sequential(torch.nn.Linear(n_in, n_out))
    elif match:
        layers: list[torch.nn.Module] = [torch.nn.Linear(n_in, n_out)]
        for _ in range(1, int(match.group(1))):
            layers += [torch.nn.GELU(), torch.nn.Linear(n_out, n_out)]
        module = torch.nn.Sequential(*layers)
    else:
        raise ModelLoadError(f"{spec}: unsupported mm_projector_type {kind!r}")
    if kind == "linear":  # saved as a bare nn.Linear: keys weight/bias
        weights = {f"0.{k}": v for k, v in weights.items()}
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelLoadError(f"{spec}: projector weights do not fit {kind}: {exc}") from exc
    return module


def _vision(
    spec: str, source: str, weights: dict[str, torch.Tensor], dtype: Any
) -> tuple[Any, Any]:
    """(CLIPVisionModel, PIL CLIP image processor) from ``mm_vision_tower`` and saved weights."""
    import torch
    import transformers
    from transformers import CLIPVisionConfig, CLIPVisionModel

    # The PIL processor is the one t2v_metrics ran (transformers 4's CLIPImageProcessor).
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    try:
        config = CLIPVisionConfig.from_pretrained(source)
        processor = processor_cls.from_pretrained(source)
        if not weights:
            return CLIPVisionModel.from_pretrained(source, dtype=dtype), processor
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"{spec}: cannot load the CLIP vision tower {source!r} (mm_vision_tower; "
            f"override with ?vision_tower=DIR): {exc}"
        ) from exc
    with torch.device("meta"):
        expected = set(CLIPVisionModel(config).state_dict())
    if any(k.startswith("vision_model.") for k in expected):  # transformers 4 naming
        weights = {f"vision_model.{k}": v for k, v in weights.items()}
    weights = {k: v for k, v in weights.items() if not k.endswith("position_ids")}
    missing = sorted(k for k in expected - set(weights) if not k.endswith("position_ids"))
    if missing:
        raise ModelLoadError(f"{spec}: saved vision tower lacks {', '.join(missing[:3])}")
    model = CLIPVisionModel.from_pretrained(None, config=config, state_dict=weights, dtype=dtype)
    return model, processor


def _release_config(spec: str, folder: Path) -> dict[str, Any]:
    """The release's config.json, checked to be a CLIP-FlanT5 one."""
    config = read_json(folder / "config.json", spec=spec)
    if not is_clip_t5(config):
        raise ModelLoadError(
            f"{spec}: {folder / 'config.json'} has model_type {config.get('model_type')!r}, "
            "not 'clip_t5'"
        )
    for key in ("mm_hidden_size", "d_model", "vocab_size"):
        if key not in config:
            raise ModelLoadError(f"{spec}: {folder / 'config.json'} has no {key!r}")
    return config


def _t5(
    spec: str,
    folder: Path,
    config: dict[str, Any],
    t5_state: dict[str, Any],
    *,
    tok: SentencePieceT5,
    tok_source: str,
    dtype: Any,
) -> tuple[Any, Any]:
    """(T5ForConditionalGeneration, its T5Config) from the release's T5 keys, the vocabulary
    cut to the tokenizer's length as t2v_metrics does."""
    from transformers import T5Config, T5ForConditionalGeneration

    t5_fields = {
        k: v
        for k, v in config.items()
        if not k.startswith(("mm_", "tune_mm", "freeze_mm", "pretrain_mm"))
        and k not in ("model_type", "architectures", "transformers_version", "auto_map")
    }
    t5_fields.setdefault("decoder_start_token_id", t5_fields.get("pad_token_id", 0))
    vocab = int(config["vocab_size"])
    if len(tok) > vocab:
        raise ModelLoadError(
            f"{spec}: the tokenizer ({tok_source}) has {len(tok)} tokens, the model {vocab} rows"
        )
    if len(tok) < vocab:  # t2v_metrics' resize_token_embeddings(len(tokenizer))
        for key in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if key in t5_state:
                t5_state[key] = t5_state[key][: len(tok)]
        if "lm_head.weight" in t5_state:
            t5_state["lm_head.weight"] = t5_state["lm_head.weight"][: len(tok)]
        t5_fields["vocab_size"] = len(tok)
    try:
        t5_config = T5Config.from_dict(t5_fields)
        loaded: Any = T5ForConditionalGeneration.from_pretrained(
            None, config=t5_config, state_dict=t5_state, dtype=dtype, output_loading_info=True
        )
        t5, info = loaded
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(f"{spec}: cannot build T5 from {folder}: {exc}") from exc
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    missing = sorted(set(info.get("missing_keys", ())) - tied)
    if missing:
        raise ModelLoadError(f"{spec}: T5 weights missing in {folder}: {', '.join(missing[:3])}")
    return t5, t5_config


def load_clip_t5(
    spec: str,
    path: str,
    *,
    dtype: Any,
    tokenizer: str | None = None,
    vision_tower: str | None = None,
) -> ClipT5:
    """Load a CLIP-FlanT5 release (folder or hub id) on the CPU in ``dtype``."""
    folder = resolve_folder(spec, path)
    config = _release_config(spec, folder)
    t5_state, vision_state, proj_state = split_release_keys(read_weights(spec, folder))
    if not proj_state:
        raise ModelLoadError(f"{spec}: no mm_projector.* weights in {folder}")
    tok_folder, tok_source = _tokenizer(spec, path, folder, tokenizer)
    tok = SentencePieceT5(tok_folder / "spiece.model", _n_extra_ids(tok_folder))
    t5, t5_config = _t5(spec, folder, config, t5_state, tok=tok, tok_source=tok_source, dtype=dtype)

    vision_source = vision_tower or config.get("mm_vision_tower")
    if not vision_source:
        raise ModelLoadError(f"{spec}: config has no mm_vision_tower; pass ?vision_tower=DIR")
    vision, processor = _vision(spec, str(vision_source), vision_state, dtype)
    projector = _projector(spec, config, proj_state).to(dtype)
    return ClipT5(
        t5=t5.eval(),
        vision=vision.eval(),
        projector=projector.eval(),
        image_processor=processor,
        tokenizer=tok,
        select_layer=int(config.get("mm_vision_select_layer", -2)),
        select_feature=str(config.get("mm_vision_select_feature", "patch")),
        sources={
            "folder": str(folder),
            "tokenizer": tok_source,
            "tokenizer_dir": str(tok_folder),
            "vision_tower": str(vision_source),
            "vision_weights": "checkpoint" if vision_state else "mm_vision_tower",
            "vocab_rows": len(tok),
            "t5_config": t5_config,
        },
    )
