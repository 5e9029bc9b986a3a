"""Pair scorers built on generative vision-language models: VQAScore and caption likelihood.

Both load any model transformers maps to ``AutoModelForImageTextToText`` (LLaVA, Qwen2-VL,
Qwen2.5-VL, PaliGemma, Idefics, ...) with its ``AutoProcessor``, and build each prompt with the
model's own chat template: one user turn holding the image and a text, then the generation prompt.

- ``vqascore:NAME_OR_DIR``: the question is the template with ``{text}`` replaced by the caption
  (default ``Does this figure show "{text}"? Please answer yes or no.``). The score is P(answer)
  at the first answer position: the full-vocabulary softmax of the next-token logits after the
  generation prompt, read at the first token of ``answer`` ("Yes" by default, tokenized alone
  without special tokens). For a one-token "Yes" this equals t2v_metrics' VQAScore, which takes
  exp(-loss) of the answer tokens under the same prompt.
- ``captionlik:NAME_OR_DIR``: the caption is the assistant's reply to ``prompt`` (default
  ``Describe this image.``); the score is the mean (``reduce=mean``, default) or the sum
  (``reduce=sum``) of the log-probabilities of the caption's tokens (tokenized alone, appended
  after the generation prompt; no end-of-turn token). An empty caption scores 0.

Batching: ``score_pairs`` scores the pairs it is given in one forward (the engine sizes that batch
with ``--batch-size`` and halves it on out-of-memory; ``batch_size`` here only chunks ``score``).
Prompts are left-padded (captions are appended before padding), so every sequence's
real tokens end at the last position. Positions are left to the model: rotary embeddings depend
on relative positions only, and multimodal RoPE (Qwen2-VL) derives positions from the attention
mask, so a pair's score does not depend on its batch-mates (tests check <= 1e-4 in fp32).
Distinct images of a batch are found by content (SCM plans every region x caption pair, so many
pairs share one crop). For processor families whose image-output layout is known (``LlavaProcessor``,
``Qwen2VLProcessor``, ``Qwen2_5_VLProcessor``; see `SHARED_IMAGE_LAYOUTS`) the image processor runs
once per distinct image, its outputs are repeated into the pairs' order, and the processor's own
``replace_image_token`` and text path expand each prompt's image token, so the encoding is the one
a per-pair call gives. Other families (PaliGemma, Idefics, ...) take the generic path: the processor
gets one image per pair.

Prefix sharing (default; ``?share_prefix=0`` turns it off): for those same processor families, a
batch whose pairs repeat an image runs each distinct image's prompt prefix (everything before the
caption: chat-template text and image tokens; for ``captionlik:`` the whole prompt) once, with the
KV cache kept, so the vision tower and the image tokens run once per distinct image; then all of
its pairs' continuations (the caption and the question's tail for VQAScore, the caption tokens for
caption likelihood) run in one forward over that cache, expanded to the pairs
(`Cache.batch_select_indices`), left-padded, with the attention mask ones over the prefix and
position ids continuing from the prefix's end (Qwen2-VL's multimodal RoPE: from the model's own
`get_rope_index` offset for that image's grid). Distinct images whose prefixes have one token count
share one prefix forward. Whole prompts are tokenized as without sharing; a pair whose first L
tokens are not its prefix's L tokens (a tokenizer merging across the boundary) takes the path
without sharing, counted in ``config["share_prefix_fallbacks"]``. A prompt whose caption comes
before the image turns sharing off (``config["share_prefix_off"]`` says why). Scores equal the
path without sharing within 1e-4 (fp32), so the fingerprint does not depend on the option.

Token budget: ``max_text_tokens`` is the model's context (``max_position_embeddings`` of the
language model) minus the prompt with an empty text, image tokens included, measured at load
time with a 336 x 336 grey probe image (models with dynamic resolution use more tokens for larger
images), minus one position for the answer. Policies: ``truncate`` keeps the longest prefix
within the budget, ``error`` raises, ``chunk-mean`` scores sentence-aligned chunks within the
budget and averages their scores (a pair scorer has no embeddings to average).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.batching import default_batch_size
from densecap_eval.errors import ModelLoadError
from densecap_eval.scorers import vlm_common as common

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.scorers.base import TextPolicy

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = 'Does this figure show "{text}"? Please answer yes or no.'
DEFAULT_ANSWER = "Yes"
DEFAULT_CAPTION_PROMPT = "Describe this image."
PROBE_SIZE = 336
# Stands in for the text when locating where it enters the prompt (`_prompt_before_text`).
TEXT_MARKER = "\u2063densecap-text\u2063"

# Processor class -> how its image processor's outputs are laid out, for processing each distinct
# image once: "rows" (one leading row per image in every output, e.g. LLaVA's pixel_values) or
# "grid" (Qwen2-VL: pixel_values are the images' patches concatenated, image_grid_thw one row per
# image). Only processors that use transformers' generic ProcessorMixin.__call__ and
# _process_images are listed; anything else takes the per-pair path.
SHARED_IMAGE_LAYOUTS = {
    "LlavaProcessor": "rows",
    "Qwen2VLProcessor": "grid",
    "Qwen2_5_VLProcessor": "grid",
}


def _load_generative(spec: str, path: str, device: str, dtype: Any) -> tuple[Any, Any, Any]:
    """(config, processor, model) of an image-text-to-text model, or a clear `ModelLoadError`."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    local = Path(path).expanduser()
    if (path.startswith((".", "/", "~")) or local.exists()) and not local.is_dir():
        raise ModelLoadError(f"{spec}: model directory {local} does not exist")
    source = str(local) if local.is_dir() else path
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{spec}: cannot read the model config: {exc}") from exc
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ModelLoadError(
            f"{spec}: model type {config.model_type!r} is not an image-text-to-text model "
            "(transformers' AutoModelForImageTextToText does not map it); vqascore: and "
            "captionlik: need a generative VLM such as LLaVA, Qwen2-VL, PaliGemma or Idefics"
        )
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{spec}: cannot load the model or its processor: {exc}") from exc
    if (
        getattr(processor, "tokenizer", None) is None
        or getattr(processor, "image_processor", None) is None
    ):
        raise ModelLoadError(f"{spec}: the processor has no tokenizer or no image processor")
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    model.to(device).eval()  # type: ignore[arg-type]
    return config, processor, model


class _LayoutMismatch(ValueError):
    """Image-processor outputs that do not follow the layout `SHARED_IMAGE_LAYOUTS` names."""


def shared_image_layout(processor: Any) -> str | None:
    """The `SHARED_IMAGE_LAYOUTS` entry of a processor that uses the generic call path, else None."""
    from transformers.processing_utils import ProcessorMixin

    cls = type(processor)
    layout = SHARED_IMAGE_LAYOUTS.get(cls.__name__)
    generic = (
        cls.__call__ is ProcessorMixin.__call__
        and cls._process_images is ProcessorMixin._process_images
    )
    return layout if generic else None


def expand_image_inputs(processed: Any, inverse: Sequence[int], layout: str) -> Any:
    """Image-processor outputs for distinct images, repeated into the order ``inverse`` gives."""
    import torch

    n = int(max(inverse)) + 1
    idx = torch.as_tensor(list(inverse), dtype=torch.long)
    out = processed.__class__(dict(processed))  # a copy of the BatchFeature
    if layout == "grid":
        grid = processed["image_grid_thw"]
        sizes = [int(x) for x in grid.prod(dim=-1)]
        patches = torch.split(processed["pixel_values"], sizes, dim=0)
        out["pixel_values"] = torch.cat([patches[i] for i in inverse], dim=0)
        out["image_grid_thw"] = grid[idx]
        return out
    for key, value in processed.items():
        if isinstance(value, torch.Tensor) and value.shape[:1] == (n,):
            out[key] = value[idx]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in inverse]
        else:
            raise _LayoutMismatch(f"image-processor output {key!r} has no row per image")
    return out


def select_prefix_rows(enc: Any, rows: Sequence[int], layout: str) -> dict[str, Any]:
    """Processor outputs of the prompts ``rows`` (equal real lengths), padding columns dropped."""
    import torch

    mask = enc["attention_mask"]
    n = int(mask.shape[0])
    idx = torch.as_tensor(list(rows), dtype=torch.long)
    real = mask[rows[0]].bool()
    if int(real.sum()) != int(mask[idx].sum(dim=1).min()):
        raise ValueError("prefix rows of different lengths in one group")
    out: dict[str, Any] = {}
    if layout == "grid":
        grid = enc["image_grid_thw"]
        patches = torch.split(enc["pixel_values"], [int(x) for x in grid.prod(dim=-1)], dim=0)
        out["pixel_values"] = torch.cat([patches[i] for i in rows], dim=0)
        out["image_grid_thw"] = grid[idx]
    for key, value in enc.items():
        if key in out:
            continue
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == mask.shape:
            out[key] = value[idx][:, real]
        elif isinstance(value, torch.Tensor) and value.shape[:1] == (n,):
            out[key] = value[idx]
        else:
            raise _LayoutMismatch(f"processor output {key!r} has no row per prompt")
    return out


def _context_length(config: Any, tokenizer: Any) -> int:
    text_config = getattr(config, "text_config", None) or config
    n = getattr(text_config, "max_position_embeddings", None) or getattr(
        config, "max_position_embeddings", None
    )
    limit = getattr(tokenizer, "model_max_length", None)
    candidates = [int(x) for x in (n, limit) if isinstance(x, int) and 0 < x < 10**7]
    return min(candidates) if candidates else 2048


class _GenerativePairScorer(common.PairScorerBase):
    """Shared loading, prompting and batching of `VQAScorer` and `CaptionLikelihoodScorer`."""

    prefix = ""

    def __init__(
        self,
        spec: str,
        path: str,
        *,
        device: str | None,
        precision: str | None,
        text_policy: TextPolicy,
        batch_size: int | None,
        options: dict[str, Any],
    ) -> None:
        self.spec = spec
        self.path = path
        self.device = common.resolve_device(device)
        self.precision, self.dtype = common.resolve_dtype(precision, self.device, spec)
        self.text_policy: TextPolicy = text_policy
        self.batch_size = batch_size or default_batch_size(self.device, "pair")
        share = common.flag_option(
            spec, "share_prefix", options.pop("share_prefix", None), default=True
        )
        self.options = options
        self.model_config, self.processor, self.model = _load_generative(
            spec, path, self.device, self.dtype
        )
        self.tokenizer = self.processor.tokenizer
        self._share_images = True  # off after a layout mismatch (see `_process`)
        self.has_chat_template = bool(getattr(self.processor, "chat_template", None))
        self._forward_params = set(inspect.signature(self.model.forward).parameters)
        self._check_options()
        overhead = self._prompt_overhead(spec)
        self.context_length = _context_length(self.model_config, self.tokenizer)
        self.max_text_tokens = self.context_length - overhead - self._reserved_tokens()
        if self.max_text_tokens < 1:
            raise ModelLoadError(
                f"{spec}: the prompt and image take {overhead} of the model's "
                f"{self.context_length} positions, leaving no room for text"
            )
        self.budget = common.TextBudget(self.tokenizer, self.max_text_tokens, spec=spec)
        # Prefix sharing changes how scores are computed, not what they are (equal within 1e-4),
        # so it is not part of the fingerprint: both paths share cached scores.
        self._fingerprint = common.weights_fingerprint(
            path, self.model_config, {"scorer": self.prefix, **self._score_options()}
        )
        self.sharing = common.PrefixSharing(on=share)
        self._prefix_text = self._shared_prefix_text() if share else None
        if not share:
            self.sharing.turn_off("asked off (?share_prefix=0)")

    # -- the protocol ------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def config(self) -> dict[str, Any]:
        """What the run card records about this scorer besides the spec."""
        return {**self._score_options(), **self.sharing.as_config()}

    def _score_options(self) -> dict[str, Any]:
        """The options that define the scores (precision, template, answer, prompt, reduce)."""
        return {"precision": self.precision, **self.options}

    # -- prompting ---------------------------------------------------------------------------

    def _check_options(self) -> None:
        """Subclasses validate their options (template, answer, reduce)."""

    def _reserved_tokens(self) -> int:
        return 1

    def _user_text(self, text: str) -> str:
        raise NotImplementedError

    def _suffix_ids(self, text: str) -> list[int]:
        return []

    def prompt(self, text: str) -> str:
        """The full prompt string (before image-token expansion) for one text."""
        question = self._user_text(text)
        if not self.has_chat_template:
            # PaliGemma-style processors place the image tokens themselves.
            return question
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": question}],
            }
        ]
        return str(
            self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def _prompt_before_text(self) -> str:
        """The prompt string up to where the text enters it (all of it when the text does not)."""
        rendered = self.prompt(TEXT_MARKER)
        at = rendered.find(TEXT_MARKER)
        return rendered if at < 0 else rendered[:at]

    def _shared_prefix_text(self) -> str | None:
        """The prompt prefix that pairs of one image share (image tokens included), or None.

        None (prefix sharing off, recorded in `sharing`) for processors outside
        `SHARED_IMAGE_LAYOUTS`, a model whose forward takes no KV cache, or a prompt where the
        text comes before the image (the prefix would then hold no image).
        """
        if shared_image_layout(self.processor) is None or not self.has_chat_template:
            self.sharing.turn_off(
                f"processor {type(self.processor).__name__} is not one of "
                f"{', '.join(sorted(SHARED_IMAGE_LAYOUTS))}"
            )
            return None
        if self._cache_arg is None:
            self.sharing.turn_off("the model's forward takes no KV cache")
            return None
        prefix = self._prompt_before_text()
        image_token = getattr(self.processor, "image_token", None)
        if not image_token or image_token not in prefix:
            self.sharing.turn_off("the caption comes before the image in the prompt")
            return None
        return prefix

    @property
    def _cache_arg(self) -> str | None:
        for name in ("cache", "past_key_values"):  # transformers 5.x renames it to `cache`
            if name in self._forward_params:
                return name
        return None

    def _prompt_overhead(self, spec: str) -> int:
        from PIL import Image

        probe = Image.new("RGB", (PROBE_SIZE, PROBE_SIZE), (128, 128, 128))
        try:
            enc = self.processor(text=[self.prompt("")], images=[probe], return_tensors="pt")
        except Exception as exc:  # any processor failure here means the prompt cannot be built
            raise ModelLoadError(
                f"{spec}: cannot build a prompt with an image for this model "
                f"(chat template {'present' if self.has_chat_template else 'missing'}): {exc}"
            ) from exc
        return int(enc["attention_mask"].sum())

    # -- batched forward ---------------------------------------------------------------------

    def _encode(self, images: Sequence[Image.Image], texts: Sequence[str]) -> tuple[Any, list[int]]:
        """Processor outputs for a batch, left-padded, with each text's suffix appended."""
        import torch

        prompts = [self.prompt(t) for t in texts]
        enc = self._process(prompts, images)
        suffixes = [self._suffix_ids(t) for t in texts]
        mask = enc["attention_mask"].bool()
        if not any(suffixes) and bool(mask[:, -1].all()):  # left-padded already, nothing to add
            return enc, [0] * len(texts)
        seq_keys = [
            k
            for k, v in enc.items()
            if isinstance(v, torch.Tensor) and v.shape[:2] == mask.shape and k != "pixel_values"
        ]
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in seq_keys}
        for i, suffix in enumerate(suffixes):
            extra = torch.as_tensor(suffix, dtype=torch.long)
            for k in seq_keys:
                real = enc[k][i][mask[i]]
                rows[k].append(torch.cat([real, self._suffix_fill(k, extra).to(real.dtype)]))
        width = max(len(r) for r in rows["input_ids"])
        pad_id = int(self.tokenizer.pad_token_id)
        for k in seq_keys:
            pad = pad_id if k == "input_ids" else 0
            out = torch.full((len(texts), width), pad, dtype=enc[k].dtype)
            for i, r in enumerate(rows[k]):
                out[i, width - len(r) :] = r
            enc[k] = out
        return enc, [len(s) for s in suffixes]

    def _process(self, prompts: list[str], images: Sequence[Image.Image]) -> Any:
        """The processor's encoding of the batch; each distinct image processed once if we can."""
        uniq, inverse = common.unique_images(images)
        pair_images = [uniq[i] for i in inverse]
        layout = shared_image_layout(self.processor) if self._share_images else None
        if layout is None or len(uniq) == len(images):
            return self.processor(
                text=prompts, images=pair_images, return_tensors="pt", padding=True
            )
        processor = self.processor

        def process_once(_: Any, **kwargs: Any) -> tuple[Any, list[str]]:
            # Stands in for ProcessorMixin._process_images: same outputs, one image per pair.
            processed = processor.image_processor(uniq, **kwargs)
            tokens = [
                processor.replace_image_token(processed, image_idx=j, **kwargs)
                for j in range(len(uniq))
            ]
            return expand_image_inputs(processed, inverse, layout), [tokens[i] for i in inverse]

        processor._process_images = process_once
        try:
            return processor(text=prompts, images=pair_images, return_tensors="pt", padding=True)
        except _LayoutMismatch as exc:
            log.warning("%s: %s; processing one image per pair", self.spec, exc)
            self._share_images = False
        finally:
            del processor._process_images
        return processor(text=prompts, images=pair_images, return_tensors="pt", padding=True)

    def _suffix_fill(self, key: str, suffix: torch.Tensor) -> torch.Tensor:
        import torch

        if key == "input_ids":
            return suffix
        if key == "attention_mask":
            return torch.ones_like(suffix)
        if key == "token_type_ids" and self.model_config.model_type == "paligemma":
            return torch.ones_like(suffix)  # PaliGemma: 1 marks the causal suffix
        return torch.zeros_like(suffix)

    def _forward(self, enc: Any, keep: int, **kwargs: Any) -> Any:
        """The model's output on ``enc`` (its forward's keys), logits of the last ``keep`` positions."""
        import torch

        inputs = {k: v.to(self.device) for k, v in enc.items() if k in self._forward_params}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if "logits_to_keep" in self._forward_params:
            kwargs["logits_to_keep"] = keep
        device_type = self.device.split(":")[0]
        with (
            torch.inference_mode(),
            torch.autocast(device_type, dtype=self.dtype, enabled=self.dtype != torch.float32),
        ):
            return self.model(**inputs, **kwargs)

    def _log_probs(self, enc: Any, keep: int) -> torch.Tensor:
        """log-softmax (float32) over the vocabulary of the last ``keep`` positions."""
        import torch

        logits = self._forward(enc, keep).logits
        return torch.log_softmax(logits[:, -keep:].float(), dim=-1)

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    # -- each pair's last positions, with or without prefix sharing ---------------------------

    def _tail(
        self, images: Sequence[Image.Image], texts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Each pair's last ``keep`` positions: log-probs (n, keep, V), token ids (n, keep), and
        each text's suffix length; ``keep`` is the longest suffix + 1 (the position before it).

        Row i's positions are those of pair i's whole sequence (prompt, then suffix), right-aligned;
        positions before the sequence's last ``len(suffix) + 1`` are unspecified when its prompt
        continuation is shorter than the batch's longest (the scorers never read them).
        """
        suffixes = [self._suffix_ids(t) for t in texts]
        lengths = [len(x) for x in suffixes]
        keep = max(lengths) + 1
        if self._prefix_text is not None and self.sharing.on:
            # Looked up per call, as `_process` does: the table is what says a layout is known.
            layout = shared_image_layout(self.processor)
            if layout is None:
                self.sharing.fall_back("processor image layout not known", len(texts))
                return (*self._tail_unshared(images, texts, keep), lengths)
            try:
                return (*self._tail_shared(images, texts, suffixes, keep, layout), lengths)
            except _LayoutMismatch as exc:  # then no later batch can share either
                log.warning("%s: %s; prefix sharing off", self.spec, exc)
                self.sharing.turn_off(str(exc))
        return (*self._tail_unshared(images, texts, keep), lengths)

    def _tail_unshared(
        self, images: Sequence[Image.Image], texts: Sequence[str], keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Today's path: whole prompts, left-padded, one forward."""
        enc, _ = self._encode(images, texts)
        return self._log_probs(enc, keep), enc["input_ids"][:, -keep:]

    def _tail_shared(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        suffixes: Sequence[list[int]],
        keep: int,
        layout: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix sharing: each distinct image's prefix once, then all its pairs' continuations.

        The whole prompts are tokenized exactly as `_tail_unshared` does (same processor call,
        same image-token expansion); a pair shares its image's prefix only when its first L
        tokens are the prefix's L tokens, else it takes `_tail_unshared` (counted by reason).
        """
        import torch

        uniq, inverse = common.unique_images(images)
        if len(uniq) == len(images):  # nothing to share: the one-forward path costs less
            return self._tail_unshared(images, texts, keep)
        prefix_enc, full_enc = self._encode_split(uniq, inverse, texts)
        pmask = prefix_enc["attention_mask"].bool()
        prefix_ids = [prefix_enc["input_ids"][u][pmask[u]].tolist() for u in range(len(uniq))]
        fmask = full_enc["attention_mask"].bool()
        image_id = self._image_token_id()
        conts: list[list[int] | None] = []
        for i, suffix in enumerate(suffixes):
            ids = full_enc["input_ids"][i][fmask[i]].tolist()
            prefix = prefix_ids[inverse[i]]
            if ids[: len(prefix)] != prefix:
                self.sharing.fall_back("prompt tokens differ from the prefix's at the boundary")
                conts.append(None)
            elif image_id is not None and image_id in ids[len(prefix) :]:
                self.sharing.fall_back("an image token after the prefix")
                conts.append(None)
            else:
                conts.append(ids[len(prefix) :] + list(suffix))

        pad_id = int(self.tokenizer.pad_token_id)
        out: torch.Tensor | None = None
        tail_ids = torch.full((len(texts), keep), pad_id, dtype=torch.long)

        def place(rows: list[int], logp: torch.Tensor, ids: torch.Tensor) -> None:
            nonlocal out
            if out is None:
                out = logp.new_zeros((len(texts), keep, logp.shape[-1]))
            index = torch.as_tensor(rows, dtype=torch.long)
            out[index.to(out.device)] = logp
            tail_ids[index] = ids.cpu()

        by_length: dict[int, list[int]] = {}
        for u in sorted({inverse[i] for i, c in enumerate(conts) if c is not None}):
            by_length.setdefault(len(prefix_ids[u]), []).append(u)
        for group in by_length.values():
            members = set(group)
            rows = [i for i, c in enumerate(conts) if c is not None and inverse[i] in members]
            logp, ids = self._tail_group(
                prefix_enc,
                group,
                [group.index(inverse[i]) for i in rows],
                [c for i in rows if (c := conts[i]) is not None],
                prefix_ids[group[0]][-1],
                keep,
                layout,
            )
            place(rows, logp, ids)
        rest = [i for i, c in enumerate(conts) if c is None]
        if rest:
            logp, ids = self._tail_unshared(
                [images[i] for i in rest], [texts[i] for i in rest], keep
            )
            place(rest, logp, ids)
        assert out is not None  # every pair is in a group or in `rest`
        return out, tail_ids

    def _tail_group(
        self,
        prefix_enc: Any,
        group: list[int],
        rows: list[int],
        conts: list[list[int]],
        last_prefix_id: int,
        keep: int,
        layout: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One prefix forward for the distinct images ``group`` (prefixes of one length L), then
        one forward of the pairs' continuations (pair j continues prefix row ``rows[j]``) over the
        prefix KV cache expanded to the pairs: continuations left-padded, attention mask ones for
        the prefix and the continuation's mask, positions continuing from each prefix's end."""
        import torch

        enc = select_prefix_rows(prefix_enc, group, layout)
        length = int(enc["input_ids"].shape[1])
        assert self._cache_arg is not None  # `_shared_prefix_text` checked it
        first = self._forward(enc, 1, use_cache=True)
        cache = first.cache if getattr(first, "cache", None) is not None else first.past_key_values
        last = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # (k, V)
        deltas, mrope = self._position_deltas(enc)
        row_index = torch.as_tensor(rows, dtype=torch.long)
        n = len(conts)
        logp = last.new_zeros((n, keep, last.shape[-1]))
        width = max(len(c) for c in conts)
        if width:
            common.select_cache_rows(cache, row_index.to(last.device))
            ids = torch.full((n, width), int(self.tokenizer.pad_token_id), dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            positions = torch.zeros((n, width), dtype=torch.long)
            for j, c in enumerate(conts):
                if c:
                    start = length + int(deltas[rows[j]])
                    ids[j, width - len(c) :] = torch.as_tensor(c, dtype=torch.long)
                    mask[j, width - len(c) :] = 1
                    positions[j, width - len(c) :] = torch.arange(start, start + len(c))
            cont = {
                "input_ids": ids,
                "attention_mask": torch.cat([torch.ones((n, length), dtype=torch.long), mask], 1),
                "position_ids": positions.unsqueeze(0).expand(3, -1, -1) if mrope else positions,
            }
            k = min(keep, width)
            logits = self._forward(cont, k, use_cache=True, **{self._cache_arg: cache}).logits
            logp[:, keep - k :] = torch.log_softmax(logits[:, -k:].float(), dim=-1)
        tail_ids = torch.full((n, keep), int(self.tokenizer.pad_token_id), dtype=torch.long)
        for j, c in enumerate(conts):
            m = min(len(c), keep)
            if m:
                tail_ids[j, keep - m :] = torch.as_tensor(c[-m:], dtype=torch.long)
            if len(c) < keep:  # the prefix's last position predicts the continuation's first
                logp[j, keep - 1 - len(c)] = last[rows[j]]
                tail_ids[j, keep - 1 - len(c)] = last_prefix_id
        return logp, tail_ids

    def _position_deltas(self, enc: Any) -> tuple[torch.Tensor, bool]:
        """Per prefix row, (next text position - prefix length), and whether RoPE is multimodal.

        1-D RoPE: 0. Multimodal RoPE (Qwen2-VL, Qwen2.5-VL): the image's grid, not its token
        count, advances positions; the model's own `get_rope_index` gives the offset.
        """
        import torch

        inner = getattr(self.model, "model", None)
        get_rope_index = getattr(inner, "get_rope_index", None)
        if get_rope_index is None:
            return torch.zeros(int(enc["input_ids"].shape[0]), dtype=torch.long), False
        params = inspect.signature(get_rope_index).parameters
        names = ("input_ids", "mm_token_type_ids", "image_grid_thw", "attention_mask")
        kwargs = {k: enc[k] for k in names if k in enc and k in params}
        _, deltas = get_rope_index(**kwargs)
        return deltas.reshape(-1).long().cpu(), True

    def _image_token_id(self) -> int | None:
        value = getattr(self.processor, "image_token_id", None)
        return int(value) if isinstance(value, int) else None

    def _encode_split(
        self, uniq: Sequence[Image.Image], inverse: Sequence[int], texts: Sequence[str]
    ) -> tuple[Any, Any]:
        """(processor outputs of the shared prefix with each distinct image, the whole prompts'
        tokens): images processed once; the prompts tokenized by the processor's own text path
        with the same image-token expansion as today's (`_process`), without image outputs."""
        processor = self.processor
        original = type(processor)._process_images
        replacements: list[Any] = []

        def capture(images: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
            processed, tokens = original(processor, images, **kwargs)
            replacements.extend(tokens)
            return processed, tokens

        def replace_only(_: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
            return {}, [replacements[i] for i in inverse]

        prefix_prompts = [self._prefix_text] * len(uniq)
        processor._process_images = capture
        try:
            prefix_enc = processor(
                text=prefix_prompts, images=list(uniq), return_tensors="pt", padding=True
            )
        finally:
            del processor._process_images
        if len(replacements) != len(uniq):
            raise _LayoutMismatch("the processor gives no image-token text per image")
        processor._process_images = replace_only
        try:
            full_enc = processor(
                text=[self.prompt(t) for t in texts],
                images=[uniq[i] for i in inverse],
                return_tensors="pt",
                padding=True,
            )
        finally:
            del processor._process_images
        return prefix_enc, full_enc


class VQAScorer(_GenerativePairScorer):
    """P("Yes") to "Does this figure show "{text}"?" under a generative VLM."""

    prefix = "vqascore"

    def _check_options(self) -> None:
        template = self.options.setdefault("template", DEFAULT_TEMPLATE)
        answer = self.options.setdefault("answer", DEFAULT_ANSWER)
        if "{text}" not in template:
            raise ModelLoadError(
                f"{self.spec}: question template {template!r} has no '{{text}}' placeholder"
            )
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        if not ids or (unk is not None and ids[0] == unk):
            raise ModelLoadError(
                f"{self.spec}: the tokenizer has no token for the answer {answer!r} "
                f"(it encodes to {ids})"
            )
        self.answer_id = int(ids[0])

    def _user_text(self, text: str) -> str:
        return str(self.options["template"]).replace("{text}", text)

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        logp, _, _ = self._tail(images, texts)
        return logp[:, -1, self.answer_id].exp().cpu()


class CaptionLikelihoodScorer(_GenerativePairScorer):
    """Mean (or total) log-probability of the caption as the model's reply about the image."""

    prefix = "captionlik"

    def _check_options(self) -> None:
        self.options.setdefault("prompt", DEFAULT_CAPTION_PROMPT)
        reduce = self.options.setdefault("reduce", "mean")
        if reduce not in ("mean", "sum"):
            raise ModelLoadError(f"{self.spec}: reduce must be 'mean' or 'sum', got {reduce!r}")

    def _reserved_tokens(self) -> int:
        return 0

    def _user_text(self, text: str) -> str:
        return str(self.options["prompt"])

    def _suffix_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        import torch

        if not any(self._suffix_ids(t) for t in texts):
            return torch.zeros(len(texts), dtype=torch.float32)
        logp, ids, lengths = self._tail(images, texts)
        width = max(lengths)
        # Positions -width-1 .. -2 predict the last `width` tokens.
        logp = logp[:, :-1]
        targets = ids[:, -width:].to(logp.device)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double()
        out = torch.zeros(len(texts), dtype=torch.float64)
        for i, n in enumerate(lengths):
            if n:
                total = token_logp[i, width - n :].sum().cpu()
                out[i] = total / n if self.options["reduce"] == "mean" else total
        return out.float()


def _factory(cls: type[_GenerativePairScorer], allowed: tuple[str, ...]) -> Any:
    def load(
        spec: str,
        device: str | None = None,
        precision: str | None = None,
        *,
        text_policy: TextPolicy = "truncate",
        batch_size: int | None = None,
    ) -> _GenerativePairScorer:
        path, options = common.split_spec(spec, cls.prefix, allowed)
        return cls(
            spec,
            path,
            device=device,
            precision=precision,
            text_policy=text_policy,
            batch_size=batch_size,
            options=options,
        )

    load.__doc__ = f"Load ``{cls.prefix}:NAME_OR_DIR[?opt=value]`` (options: {', '.join(allowed)})."
    return load


load_vqascore = _factory(VQAScorer, ("template", "answer", "share_prefix"))
load_captionlik = _factory(CaptionLikelihoodScorer, ("prompt", "reduce", "share_prefix"))
