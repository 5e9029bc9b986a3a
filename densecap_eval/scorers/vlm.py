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
gets one image per pair. The vision tower runs per pair either way (the model's forward).

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
        self._fingerprint = common.weights_fingerprint(
            path, self.model_config, {"scorer": self.prefix, **self.config}
        )

    # -- the protocol ------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def config(self) -> dict[str, Any]:
        """What the run card records about this scorer besides the spec."""
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
        if not any(suffixes):
            return enc, [0] * len(texts)
        mask = enc["attention_mask"].bool()
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

    def _log_probs(self, enc: Any, keep: int) -> torch.Tensor:
        """log-softmax (float32) over the vocabulary of the last ``keep`` positions."""
        import torch

        inputs = {k: v.to(self.device) for k, v in enc.items() if k in self._forward_params}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        kwargs: dict[str, Any] = {}
        if "logits_to_keep" in self._forward_params:
            kwargs["logits_to_keep"] = keep
        device_type = self.device.split(":")[0]
        with (
            torch.inference_mode(),
            torch.autocast(device_type, dtype=self.dtype, enabled=self.dtype != torch.float32),
        ):
            logits = self.model(**inputs, **kwargs).logits
        return torch.log_softmax(logits[:, -keep:].float(), dim=-1)

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError


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
        enc, _ = self._encode(images, texts)
        logp = self._log_probs(enc, 1)[:, -1]
        return logp[:, self.answer_id].exp().cpu()


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

        enc, lengths = self._encode(images, texts)
        width = max(lengths)
        if width == 0:
            return torch.zeros(len(texts), dtype=torch.float32)
        # Positions -width-1 .. -2 predict the last `width` tokens.
        logp = self._log_probs(enc, width + 1)[:, :-1]
        targets = enc["input_ids"][:, -width:].to(logp.device)
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


load_vqascore = _factory(VQAScorer, ("template", "answer"))
load_captionlik = _factory(CaptionLikelihoodScorer, ("prompt", "reduce"))
