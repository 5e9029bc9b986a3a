"""Pair scorers built on decoder-only vision-language models: VQAScore and caption likelihood.

One generic scorer for every family transformers maps to ``AutoModelForImageTextToText``
(LLaVA-1.5, LLaVA-OneVision, Qwen2/2.5/3-VL, InternVL3 ``-hf``, Gemma 3, SmolVLM2 / Idefics3,
PaliGemma 2, Llama 3.2 Vision, Mistral 3 / Pixtral), loaded with its ``AutoProcessor``; what
differs between families is data in `densecap_eval.scorers.vlm_families` (encoder-decoder models
go to `densecap_eval.scorers.vlm_seq2seq`). Each prompt is the model's own chat template over one
user turn (the image, then a text) and the generation prompt, tokenized by the processor with one
image list per prompt; when the rendered prompt already starts with the tokenizer's BOS, no
special tokens are added (else Gemma 3, Idefics3, Llama 3.2 Vision and Mistral 3 would read two
BOS tokens). A processor without a chat template (PaliGemma) gets the text alone and builds the
prompt itself. Training ``labels`` a processor returns are dropped.

- ``vqascore:NAME_OR_DIR``: the question is ``template`` with ``{text}`` replaced by the caption
  (default ``Does this figure show "{text}"? Please answer yes or no.``). The score is
  P(first answer token): the full-vocabulary softmax of the next-token logits after the
  generation prompt, read at the token the model would emit first for ``answer`` ("Yes"): the
  token covering the answer's first character when the assistant turn is rendered with the
  answer (byte-level BPE after ``Assistant:``: " Yes"; SentencePiece: "▁Yes").
  ``?parity=t2v_metrics`` (LLaVA-1.5 only) computes what t2v_metrics' VQAScore computes instead:
  its system message and ``USER: <image>\\n... ASSISTANT: `` prompt (not the model's chat
  template), its question template, images padded to square with the image processor's mean
  colour, text chunks around the image tokenized separately, and the score
  exp(-mean cross-entropy) over the answer "Yes" followed by the end token, i.e.
  sqrt(P(Yes) * P(</s> | Yes)). The default is not equal to t2v_metrics' score.
- ``captionlik:NAME_OR_DIR``: the caption is the assistant's reply to ``prompt`` (default
  ``Describe this image.``); the score is the mean (``reduce=mean``, default) or the sum
  (``reduce=sum``) of the log-probabilities of the caption's tokens (tokenized alone, appended
  after the generation prompt; no end-of-turn token). An empty caption scores 0.

Batching: ``score_pairs`` scores the pairs it is given (the engine sizes that batch with
``--batch-size`` and halves it on out-of-memory; ``batch_size`` here only chunks ``score``).
Sequences are left-padded whatever the tokenizer's padding side (captions are appended before
padding), so every sequence ends at the last position; positions are left to the model (rotary
embeddings depend on relative positions; multimodal RoPE derives them from the attention mask).
Each distinct image of a batch (found by content) goes through the image processor once, for
every family (`vlm_common.ImageDedup` stands in for the processor's image processor).

Prefix sharing (default where exact; ``?share_prefix=0`` turns it off): a batch whose pairs
repeat an image runs each distinct image's prompt prefix (everything before the caption; for
``captionlik:`` the whole prompt) once with the KV cache kept, then all its pairs' continuations
(the caption and the question's tail, or the caption tokens) in one forward over that cache
expanded to the pairs, positions continuing from the prefix's end (multimodal RoPE: from the
model's own ``get_rope_index`` offset). A continuation is the pair's prompt tokens after the
prefix's tokens (tokenized without image expansion); a pair whose first tokens are not the
prefix's (a tokenizer merging across the boundary) takes the path without sharing, counted in
``config["share_prefix_fallbacks"]``, as are pairs whose prefix and continuation reach past a
sliding attention window (Gemma 3: padding between prefix and continuation would shift what the
window holds). Sharing is off, with the reason in
``config["share_prefix_off"]``, for families whose attention makes it inexact (PaliGemma's
prefix-LM) or unknown, and for prompts whose caption comes before the image. Scores equal the
path without sharing (tests: 1e-5 in fp32), so the fingerprint does not depend on the option.

Token budget: ``max_text_tokens`` is the model's context (``max_position_embeddings`` of the
language model) minus the prompt with an empty text, image tokens included, measured at load
time with a 336 x 336 grey probe image (models with dynamic resolution use more tokens for larger
images), minus the answer's positions. Policies: ``truncate`` keeps the longest prefix within the
budget, ``error`` raises, ``chunk-mean`` scores sentence-aligned chunks within the budget and
averages their scores.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers import vlm_common as common
from densecap_eval.scorers import vlm_families as families

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.core.config import TextPolicy

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = 'Does this figure show "{text}"? Please answer yes or no.'
DEFAULT_ANSWER = "Yes"
DEFAULT_CAPTION_PROMPT = "Describe this image."
PROBE_SIZE = 336
# Stands in for the text when locating where it enters the prompt (`_prompt_before_text`).
TEXT_MARKER = "\u2063densecap-text\u2063"


def _load_generative(spec: str, path: str, device: str, dtype: Any) -> tuple[Any, Any, Any]:
    """(config, processor, model) of an image-text-to-text model, or a clear `ModelLoadError`."""
    common.check_transformers(spec)
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    source, config = common.read_model_config(spec, path)
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ModelLoadError(
            f"{spec}: model type {config.model_type!r} is not an image-text-to-text model "
            "(transformers' AutoModelForImageTextToText does not map it); vqascore: and "
            "captionlik: need a generative VLM such as LLaVA, Qwen2-VL, PaliGemma or Idefics"
        )
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    except ImportError as exc:
        raise common.missing_package_error(spec, exc) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{spec}: cannot load the model or its processor: {exc}") from exc
    if (
        getattr(processor, "tokenizer", None) is None
        or getattr(processor, "image_processor", None) is None
    ):
        raise ModelLoadError(f"{spec}: the processor has no tokenizer or no image processor")
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    model.to(device).eval()  # type: ignore[arg-type]
    return config, processor, model


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
        self._place(spec, device, precision, text_policy, batch_size)
        share = common.flag_option(
            spec, "share_prefix", options.pop("share_prefix", None), default=True
        )
        self.parity: str | None = options.get("parity")
        self.options = options
        self.model_config, self.processor, self.model = _load_generative(
            spec, path, self.device, self.dtype
        )
        self.model_type = str(self.model_config.model_type)
        self.rule = families.rule_for(self.model_type)
        self.tokenizer = self.processor.tokenizer
        self.images = common.ImageDedup()
        self.has_chat_template = bool(getattr(self.processor, "chat_template", None))
        self._forward_params = set(inspect.signature(self.model.forward).parameters)
        self._image_tokens: int | None = None  # parity: image tokens per image
        self._placeholder: str | None = None  # see `_image_token`
        self._window = _sliding_window(self.model_config)
        self._check_parity()
        self._check_options()
        # Special tokens: off when the rendered prompt carries BOS already (decided by the text).
        self.add_special = not (
            self.has_chat_template
            and not self.parity
            and families.starts_with_bos(self.tokenizer, self.prompt(""))
        )
        overhead = self._prompt_overhead(spec)
        self.context_length = _context_length(self.model_config, self.tokenizer)
        self.max_text_tokens = self.context_length - overhead - self._reserved_tokens()
        if self.max_text_tokens < 1:
            raise ModelLoadError(
                f"{spec}: the prompt and image take {overhead} of the model's "
                f"{self.context_length} positions, leaving no room for text"
            )
        self.budget = common.TextBudget(self.tokenizer, self.max_text_tokens, spec=spec)
        # Prefix sharing changes how scores are computed, not what they are (equal within 1e-5),
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
        """The options that define the scores (precision, template, answer, prompt, reduce,
        parity and what it computes)."""
        return {"precision": self.precision, **self.options}

    # -- prompting ---------------------------------------------------------------------------

    def _check_parity(self) -> None:
        if self.parity is None:
            return
        allowed = families.PARITY_TYPES.get(self.parity) if self.prefix == "vqascore" else None
        if allowed is None:
            raise ModelLoadError(
                f"{self.spec}: unknown parity {self.parity!r} for {self.prefix}: "
                f"(known: {', '.join(families.PARITY_TYPES) if self.prefix == 'vqascore' else 'none'})"
            )
        if self.model_type not in allowed:
            raise ModelLoadError(
                f"{self.spec}: parity={self.parity} is defined for model types "
                f"{', '.join(allowed)}, not {self.model_type!r}"
            )

    def _check_options(self) -> None:
        """Subclasses validate their options (template, answer, reduce)."""

    def _reserved_tokens(self) -> int:
        return 1

    def _user_text(self, text: str) -> str:
        raise NotImplementedError

    def _suffix_ids(self, text: str) -> list[int]:
        return []

    def _messages(self, question: str, reply: str | None = None) -> list[dict[str, Any]]:
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        if reply is None:
            return [user]
        return [user, {"role": "assistant", "content": [{"type": "text", "text": reply}]}]

    def prompt(self, text: str) -> str:
        """The full prompt string (before image-token expansion) for one text."""
        question = self._user_text(text)
        if self.parity:
            return families.t2v_question(question, self._image_token())
        if not self.has_chat_template:
            # PaliGemma-style processors build the prompt around the text themselves.
            return self._image_token() + question
        return str(
            self.processor.apply_chat_template(
                self._messages(question), add_generation_prompt=True, tokenize=False
            )
        )

    def _image_token(self) -> str:
        """The placeholder the prompt holds for an image (Gemma 3: ``boi_token``; transformers
        5.0's Gemma 3 processor names the expanded soft token ``image_token``)."""
        if self._placeholder is None:
            names = [getattr(self.processor, n, None) for n in ("image_token", "boi_token")]
            names = [str(n) for n in names if n] or ["<image>"]
            self._placeholder = names[0]
            if self.has_chat_template and not self.parity:
                rendered = self.processor.apply_chat_template(
                    self._messages("x"), add_generation_prompt=True, tokenize=False
                )
                self._placeholder = next((n for n in names if n in rendered), names[0])
        return str(self._placeholder)

    def _text_ids(self, prompt: str) -> list[int]:
        """A prompt's token ids with each image as its one placeholder token (not expanded)."""
        if self.parity:
            ids = families.t2v_chunk_ids(
                self.tokenizer, prompt, self._image_token(), self._image_token_id()
            )
            # t2v_metrics' labels start one token before the question's end when it ends with a
            # space (that space merges into the answer's first token).
            return ids[:-1] if prompt.endswith(" ") else ids
        return list(self.tokenizer(prompt, add_special_tokens=self.add_special)["input_ids"])

    def _prompt_before_text(self) -> str:
        """The prompt string up to where the text enters it (all of it when the text does not)."""
        rendered = self.prompt(TEXT_MARKER)
        at = rendered.find(TEXT_MARKER)
        return rendered if at < 0 else rendered[:at]

    def _shared_prefix_text(self) -> str | None:
        """The prompt prefix that pairs of one image share (image tokens included), or None
        (sharing off, the reason recorded in `sharing`)."""
        if self.rule.share is not None:
            self.sharing.turn_off(self.rule.share)
            return None
        if not self.has_chat_template and not self.parity:
            self.sharing.turn_off("no chat template: the processor builds the prompt")
            return None
        if self._cache_arg is None:
            self.sharing.turn_off("the model's forward takes no KV cache")
            return None
        prefix = self._prompt_before_text()
        image_end = prefix.rfind(self._image_token())
        if image_end < 0:
            self.sharing.turn_off("the caption comes before the image in the prompt")
            return None
        image_end += len(self._image_token())
        # End the prefix before its last token (the one next to the caption, e.g. ' "'), so a
        # subword tokenizer merging it with the caption's first characters still shares it.
        enc = self.tokenizer(prefix, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if offsets and offsets[-1][0] >= image_end:
            prefix = prefix[: offsets[-1][0]]
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
            enc = self._process([self.prompt("")], [probe])
        except Exception as exc:  # any processor failure here means the prompt cannot be built
            raise ModelLoadError(
                f"{spec}: cannot build a prompt with an image for this model "
                f"(chat template {'present' if self.has_chat_template else 'missing'}): {exc}"
            ) from exc
        return int(enc["attention_mask"].sum())

    # -- encoding ----------------------------------------------------------------------------

    def _process(self, prompts: list[str], images: Sequence[Image.Image]) -> Any:
        """The processor's encoding of prompt i with image i (one image list per prompt), each
        distinct image through the image processor once; training ``labels`` dropped."""
        if self.parity:
            return self._process_parity(prompts, images)
        kwargs = {} if self.add_special else {"add_special_tokens": False}
        with self.images.active(self.processor):
            enc = self.processor(
                text=prompts,
                images=[[im] for im in images],
                return_tensors="pt",
                padding=True,
                **kwargs,
            )
        enc.pop("labels", None)
        return enc

    def _process_parity(self, prompts: list[str], images: Sequence[Image.Image]) -> Any:
        """t2v_metrics' LLaVA encoding: square-padded images, chunk-tokenized prompts with the
        image placeholder expanded to the image's tokens, left-padded."""
        import torch
        from transformers import BatchFeature

        ip = self.processor.image_processor
        fill = tuple(int(x * 255) for x in ip.image_mean)
        padded = [common.expand_to_square(im, fill) for im in images]
        with self.images.active(self.processor):
            pixels = self.processor.image_processor(padded, return_tensors="pt")["pixel_values"]
        if self._image_tokens is None:
            probe = self.processor(text=[self._image_token()], images=[[padded[0]]])
            self._image_tokens = sum(
                1 for t in probe["input_ids"][0] if t == self._image_token_id()
            )
        rows = [self._expand(self._text_ids(p)) for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.as_tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        return BatchFeature({"input_ids": ids, "attention_mask": mask, "pixel_values": pixels})

    def _expand(self, ids: list[int]) -> list[int]:
        image_id = self._image_token_id()
        out: list[int] = []
        for t in ids:
            out.extend([t] * (self._image_tokens or 1) if t == image_id else [t])
        return out

    def _image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self._image_token()))

    def _encode(self, images: Sequence[Image.Image], texts: Sequence[str]) -> tuple[Any, list[int]]:
        """Processor outputs for a batch, left-padded, with each text's suffix appended."""
        import torch

        enc = self._process([self.prompt(t) for t in texts], images)
        suffixes = [self._suffix_ids(t) for t in texts]
        mask = enc["attention_mask"].bool()
        seq_keys = [
            k
            for k in families.TOKEN_KEYS
            if isinstance(enc.get(k), torch.Tensor) and enc[k].shape[:2] == mask.shape
        ]
        if not any(suffixes) and bool(mask[:, -1].all()):  # left-padded already, nothing to add
            return enc, [0] * len(texts)
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in seq_keys}
        for i, suffix in enumerate(suffixes):
            for k in seq_keys:
                real = enc[k][i][mask[i]]
                extra = self._suffix_fill(k, real, len(suffix), suffix)
                rows[k].append(torch.cat([real, extra.to(real.dtype)]))
        width = max(len(r) for r in rows["input_ids"])
        pad_id = int(self.tokenizer.pad_token_id)
        for k in seq_keys:
            first = rows[k][0]
            out = torch.full(
                (len(texts), width, *first.shape[1:]),
                pad_id if k == "input_ids" else 0,
                dtype=enc[k].dtype,
            )
            for i, r in enumerate(rows[k]):
                out[i, width - len(r) :] = r
            enc[k] = out
        return enc, [len(s) for s in suffixes]

    def _suffix_fill(self, key: str, real: torch.Tensor, n: int, ids: list[int]) -> torch.Tensor:
        """Values of per-token output ``key`` for ``n`` tokens appended after ``real``'s."""
        import torch

        if key == "input_ids":
            return torch.as_tensor(ids, dtype=torch.long)
        if key == "attention_mask":
            return torch.ones(n, dtype=torch.long)
        fill = self.rule.suffix_fill.get(key, 0)
        if fill == "last":
            return real[-1:].expand(n, *real.shape[1:]).clone()
        return torch.full((n, *real.shape[1:]), int(fill), dtype=real.dtype)

    # -- batched forward ---------------------------------------------------------------------

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
        with self.images.batch():  # each distinct image through the image processor once
            if self._prefix_text is not None and self.sharing.on:
                return (*self._tail_shared(images, texts, suffixes, keep), lengths)
            return (*self._tail_unshared(images, texts, keep), lengths)

    def _tail_unshared(
        self, images: Sequence[Image.Image], texts: Sequence[str], keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole prompts, left-padded, one forward."""
        enc, _ = self._encode(images, texts)
        return self._log_probs(enc, keep), enc["input_ids"][:, -keep:]

    def _tail_shared(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        suffixes: Sequence[list[int]],
        keep: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix sharing: each distinct image's prefix once, then all its pairs' continuations.

        A pair's continuation is its prompt's tokens after the prefix's tokens (both without
        image expansion, which sits inside the prefix), then its suffix; a pair whose prompt
        does not start with the prefix's tokens takes `_tail_unshared` (counted by reason).
        """
        uniq, inverse = common.unique_images(images)
        if len(uniq) == len(images):  # nothing to share: the one-forward path costs less
            return self._tail_unshared(images, texts, keep)
        conts = self._continuations(texts, suffixes)
        tail = _TailRows(len(texts), keep, pad_id=int(self.tokenizer.pad_token_id))
        self._tail_prefix_groups(uniq, inverse, conts, keep, tail)
        rest = [i for i, c in enumerate(conts) if c is None]
        if rest:
            logp, ids = self._tail_unshared(
                [images[i] for i in rest], [texts[i] for i in rest], keep
            )
            tail.place(rest, logp, ids)
        return tail.result()

    def _continuations(
        self, texts: Sequence[str], suffixes: Sequence[list[int]]
    ) -> list[list[int] | None]:
        """Each pair's tokens after the prefix's, then its suffix; None where it cannot share."""
        assert self._prefix_text is not None
        prefix = self._text_ids(self._prefix_text)
        conts: list[list[int] | None] = []
        for text, suffix in zip(texts, suffixes, strict=True):
            prompt_ids = self._text_ids(self.prompt(text))
            if prompt_ids[: len(prefix)] != prefix:
                self.sharing.fall_back("prompt tokens differ from the prefix's at the boundary")
                conts.append(None)
            elif self._image_token_id() in prompt_ids[len(prefix) :]:
                self.sharing.fall_back("an image token after the prefix")
                conts.append(None)
            else:
                conts.append(prompt_ids[len(prefix) :] + list(suffix))
        return conts

    def _tail_prefix_groups(
        self,
        uniq: Sequence[Image.Image],
        inverse: Sequence[int],
        conts: list[list[int] | None],
        keep: int,
        tail: _TailRows,
    ) -> None:
        """Score every pair with a continuation through its image's prefix, group by group,
        into ``tail``; a pair that cannot (sliding window) gets its continuation set to None."""
        assert self._prefix_text is not None
        used = sorted({inverse[i] for i, c in enumerate(conts) if c is not None})
        encs = {u: self._process([self._prefix_text], [uniq[u]]) for u in used}
        by_length: dict[int, list[int]] = {}
        for u in used:
            by_length.setdefault(int(encs[u]["input_ids"].shape[1]), []).append(u)
        for length, length_group in by_length.items():
            for group, enc in _joined(length_group, encs):
                members = set(group)
                rows = [i for i, c in enumerate(conts) if c is not None and inverse[i] in members]
                width = max(len(c) for i in rows if (c := conts[i]) is not None)
                if self._window is not None and length + width > self._window:
                    # Padding between prefix and continuation would shift which tokens a
                    # sliding window holds: these pairs take the path without sharing.
                    self.sharing.fall_back("longer than the sliding attention window", len(rows))
                    for i in rows:
                        conts[i] = None
                    continue
                logp, ids = self._tail_group(
                    enc,
                    group,
                    [group.index(inverse[i]) for i in rows],
                    [c for i in rows if (c := conts[i]) is not None],
                    keep,
                )
                tail.place(rows, logp, ids)

    def _tail_group(
        self,
        enc: Any,
        group: list[int],
        rows: list[int],
        conts: list[list[int]],
        keep: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One prefix forward for the distinct images ``group`` (prefixes of one length L), then
        one forward of the pairs' continuations (pair j continues prefix row ``rows[j]``) over the
        prefix KV cache expanded to the pairs: continuations left-padded, attention mask ones for
        the prefix and the continuation's mask, positions continuing from each prefix's end."""
        import torch

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
            cont: dict[str, Any] = {
                "input_ids": ids,
                "attention_mask": torch.cat([torch.ones((n, length), dtype=torch.long), mask], 1),
                "position_ids": positions.unsqueeze(0).expand(3, -1, -1) if mrope else positions,
            }
            if "cache_position" in self._forward_params:  # transformers 5.0 slices masks by it
                cont["cache_position"] = torch.arange(length, length + width)
            cont.update(self._continuation_extras(enc, row_index, mask))
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
                tail_ids[j, keep - 1 - len(c)] = int(enc["input_ids"][rows[j], -1])
        return logp, tail_ids

    def _continuation_extras(
        self, enc: Any, row_index: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, Any]:
        """Per-token inputs other than ids and mask for continuation tokens: token types 0 (or
        the rule's value); Llama 3.2 Vision's cross-attention mask over the whole sequence, the
        prefix's rows then its last row repeated for the continuation's real tokens."""
        import torch

        out: dict[str, Any] = {}
        for key in families.TOKEN_KEYS[2:]:
            value = enc.get(key)
            if not isinstance(value, torch.Tensor) or key not in self._forward_params:
                continue
            fill = self.rule.suffix_fill.get(key, 0)
            prefix_rows = value[row_index]
            if fill == "last":
                tail = prefix_rows[:, -1:].expand(-1, mask.shape[1], *value.shape[2:]).clone()
                tail[~mask.bool()] = 0
                out[key] = torch.cat([prefix_rows, tail], dim=1)
            else:
                out[key] = torch.full(
                    (mask.shape[0], mask.shape[1], *value.shape[2:]), int(fill), dtype=value.dtype
                )
        return out

    def _position_deltas(self, enc: Any) -> tuple[torch.Tensor, bool]:
        """Per prefix row, (next text position - prefix length), and whether RoPE is multimodal.

        1-D RoPE: 0. Multimodal RoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the image's grid, not its
        token count, advances positions; the model's own `get_rope_index` gives the offset.
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


def _sliding_window(config: Any) -> int | None:
    """The language model's sliding attention window when any layer uses one, else None."""
    text = getattr(config, "text_config", None) or config
    window = getattr(text, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    layer_types = getattr(text, "layer_types", None)
    if layer_types:
        return window if "sliding_attention" in layer_types else None
    if getattr(text, "use_sliding_window", True) is False:
        return None
    return window


def _joined(group: list[int], encs: dict[int, Any]) -> list[tuple[list[int], Any]]:
    """The prefix encodings of ``group`` (one length) joined into one batch, or one per image
    when their image outputs do not stack (different tile counts, say)."""
    import torch

    parts = [encs[u] for u in group]
    if len(parts) == 1:
        return [(group, parts[0])]
    try:
        data: dict[str, Any] = {}
        for key in parts[0]:
            values = [p[key] for p in parts]
            if isinstance(values[0], torch.Tensor):
                data[key] = torch.cat(values, dim=0)
            elif isinstance(values[0], list):
                data[key] = [x for v in values for x in v]
            else:
                raise TypeError(key)
    except (RuntimeError, TypeError):
        return [([u], encs[u]) for u in group]
    return [(group, parts[0].__class__(data))]


class VQAScorer(_GenerativePairScorer):
    """P(first answer token) to "Does this figure show "{text}"?" under a generative VLM."""

    prefix = "vqascore"

    def _check_options(self) -> None:
        if self.parity:
            # t2v_metrics' template and answer (with the end token), stated on the run card.
            self.options.setdefault("template", families.T2V_TEMPLATE)
            self.options.setdefault("answer", DEFAULT_ANSWER)
            self.options["score"] = "exp(-mean CE) of answer + end token"
        else:
            self.options["score"] = "P(first answer token)"
        template = self.options.setdefault("template", DEFAULT_TEMPLATE)
        answer = self.options.setdefault("answer", DEFAULT_ANSWER)
        if "{text}" not in template:
            raise ModelLoadError(
                f"{self.spec}: question template {template!r} has no '{{text}}' placeholder"
            )
        if not answer:
            raise ModelLoadError(f"{self.spec}: the answer is empty")
        if self.parity:
            self.answer_id = -1  # the answer tokens are the suffix (`_suffix_ids`)
            return
        try:
            self.answer_id = self._find_answer_token(str(answer))
        except ValueError as exc:
            raise ModelLoadError(f"{self.spec}: {exc}") from exc
        unk = self.tokenizer.unk_token_id
        if unk is not None and self.answer_id == unk:
            raise ModelLoadError(
                f"{self.spec}: the tokenizer has no token for the answer {answer!r}"
            )

    def _find_answer_token(self, answer: str) -> int:
        question = self._user_text("a photo")
        if not self.has_chat_template:
            # PaliGemma: the processor ends the prompt with "\n"; the answer follows it.
            rendered = question + "\n"
            return families.answer_token(self.tokenizer, rendered, rendered + answer, answer)
        render = self.processor.apply_chat_template
        prompt = str(render(self._messages(question), add_generation_prompt=True, tokenize=False))
        replied = str(render(self._messages(question, answer), tokenize=False))
        return families.answer_token(self.tokenizer, prompt, replied, answer)

    def _reserved_tokens(self) -> int:
        return 2 if self.parity else 1

    def _user_text(self, text: str) -> str:
        return str(self.options["template"]).replace("{text}", text)

    def _suffix_ids(self, text: str) -> list[int]:
        if not self.parity:
            return []
        question = self.prompt(text)
        full = families.t2v_chunk_ids(
            self.tokenizer,
            question + str(self.options["answer"]) + str(self.tokenizer.eos_token),
            self._image_token(),
            self._image_token_id(),
        )
        return full[len(self._text_ids(question)) :]

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        logp, ids, lengths = self._tail(images, texts)
        if not self.parity:
            return logp[:, -1, self.answer_id].exp().cpu()
        width = max(lengths)
        targets = ids[:, -width:].to(logp.device)
        token_logp = logp[:, :-1].gather(-1, targets.unsqueeze(-1)).squeeze(-1).double()
        out = [token_logp[i, width - n :].mean().exp() for i, n in enumerate(lengths)]
        return _stack(out).float().cpu()


def _stack(values: list[Any]) -> Any:
    import torch

    return torch.stack(values)


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


load_vqascore = common.option_loader(VQAScorer, ("template", "answer", "share_prefix", "parity"))
load_captionlik = common.option_loader(
    CaptionLikelihoodScorer, ("prompt", "reduce", "share_prefix")
)


class _TailRows:
    """The pairs' (n, keep, vocab) log-probabilities and (n, keep) token ids, filled in by
    groups of rows (`_GenerativePairScorer._tail_shared`)."""

    def __init__(self, n: int, keep: int, *, pad_id: int) -> None:
        import torch

        self.n, self.keep = n, keep
        self.out: torch.Tensor | None = None
        self.ids = torch.full((n, keep), pad_id, dtype=torch.long)

    def place(self, rows: list[int], logp: torch.Tensor, ids: torch.Tensor) -> None:
        import torch

        if self.out is None:
            self.out = logp.new_zeros((self.n, self.keep, logp.shape[-1]))
        index = torch.as_tensor(rows, dtype=torch.long)
        self.out[index.to(self.out.device)] = logp
        self.ids[index] = ids.cpu()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.out is not None  # every pair is in a group or in `rest`
        return self.out, self.ids
