"""Encoder-decoder VLM pair scorers: CLIP-FlanT5 here; transformers' own in `vlm_encdec`.

``vqascore:`` and ``captionlik:`` route here (`densecap_eval.scorers.vlm_route`) when the model's
config is encoder-decoder; decoder-only VLMs stay in `densecap_eval.scorers.vlm`.

CLIP-FlanT5 (``model_type="clip_t5"``; loading in `densecap_eval.scorers.clip_t5`):

- ``vqascore:``: the T5 encoder reads t2v_metrics' prompt ``SYSTEM_MSG + " USER: <image>\\n" +
  question + " ASSISTANT: "`` with the two text chunks tokenized separately, each ending in
  ``</s>``, and the projected CLIP features (hidden state ``mm_vision_select_layer``, patches
  only) in place of ``<image>``; the decoder is given the answer "Yes" followed by ``</s>``
  (tokenized with ``</s>``, as t2v_metrics' labels). The score is exp(-mean cross-entropy) over
  those answer tokens, i.e. sqrt(P("Yes") * P(``</s>`` | "Yes")): the scoring the model's
  authors use, so it is the default here too. ``?parity=t2v_metrics`` adds t2v_metrics' precision:
  the whole model cast to bf16 (unless a precision is passed explicitly) and, on CUDA, its
  bf16 autocast; the prompt, padding and answer are already theirs. The template and answer
  cannot be changed under parity.
- ``captionlik:``: the encoder reads the same layout with ``prompt`` as the question; the caption
  (without ``</s>``) is the decoder's target; mean (default) or sum of its token log-probs. The
  encoder runs once per distinct image (its input does not depend on the caption).
- Images are padded to square with the CLIP image mean colour (t2v_metrics'
  ``expand2square``) and go through the PIL CLIP processor; the processor and the vision tower
  run once per distinct image of a batch.
- Prefix sharing is off: the caption sits in the bidirectional encoder with the image features,
  so nothing past the CLIP features can be reused across captions (``config["share_prefix_off"]``).
- Padding: encoder inputs right-padded with zeros under an attention mask (T5's relative
  positions and masked keys make a pair's score independent of its batch-mates).
- Token budget: t2v_metrics cuts input ids (the image counted as one id) at 2048; the text budget
  is 2048 minus the prompt's other ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.core.hashing import files_sha256
from densecap_eval.scorers import vlm_common as common

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.core.config import TextPolicy

DEFAULT_TEMPLATE = 'Does this figure show "{text}"? Please answer yes or no.'
DEFAULT_ANSWER = "Yes"
DEFAULT_CAPTION_PROMPT = "Describe this image."
PARITY_CHOICES = ("t2v_metrics",)
SHARING_OFF = (
    "encoder-decoder: the caption and the image features share the bidirectional encoder, so "
    "only the vision features are reused per image"
)


def expand_to_square(image: Image.Image, colour: tuple[int, ...]) -> Image.Image:
    """Pad to square with ``colour``, the image centred (t2v_metrics' ``expand2square``)."""
    from PIL import Image as PILImage

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = PILImage.new(image.mode, (side, side), colour)
    out.paste(image, ((side - width) // 2, (side - height) // 2))
    return out


class ClipT5Scorer(common.PairScorerBase):
    """Shared loading, image features and encoder inputs of the CLIP-FlanT5 scorers."""

    prefix = ""
    OPTIONS: tuple[str, ...] = ("tokenizer", "vision_tower", "share_prefix")

    def __init__(
        self,
        spec: str,
        path: str,
        *,
        device: str | None,
        precision: str | None,
        text_policy: TextPolicy,
        batch_size: int | None,
        options: dict[str, str],
    ) -> None:

        from densecap_eval.scorers import clip_t5

        common.check_transformers(spec)
        self.spec = spec
        self.path = path
        self.options: dict[str, Any] = dict(options)
        self.parity = self.options.pop("parity", None)
        if self.parity is not None and self.parity not in PARITY_CHOICES:
            raise ModelLoadError(
                f"{spec}: parity must be one of {', '.join(PARITY_CHOICES)}, got {self.parity!r}"
            )
        if self.parity == "t2v_metrics" and precision is None:
            precision = "bf16"  # t2v_metrics casts the whole model to bf16
        self._place(spec, device, precision, text_policy, batch_size)
        common.flag_option(
            spec, "share_prefix", self.options.pop("share_prefix", None), default=False
        )
        self.sharing = common.PrefixSharing(on=False)
        self.sharing.turn_off(SHARING_OFF)
        tokenizer_opt = self.options.pop("tokenizer", None)
        vision_opt = self.options.pop("vision_tower", None)
        self._check_options()
        self.parts = clip_t5.load_clip_t5(
            spec, path, dtype=self.dtype, tokenizer=tokenizer_opt, vision_tower=vision_opt
        )
        for module in (self.parts.t5, self.parts.vision, self.parts.projector):
            module.to(self.device)
        self.tokenizer = self.parts.tokenizer
        self.model_config = self.parts.sources.pop("t5_config")
        mean = getattr(self.parts.image_processor, "image_mean", None) or [0.0, 0.0, 0.0]
        self._pad_colour = tuple(int(x * 255) for x in mean)
        self._before = self.tokenizer.encode(clip_t5.SYSTEM_MSG + " USER: ")
        self._start = int(self.model_config.decoder_start_token_id)
        self.max_text_tokens = clip_t5.CONTEXT_LEN - self._overhead()
        self.budget = common.TextBudget(self.tokenizer, self.max_text_tokens, spec=spec)
        extra = {
            "scorer": self.prefix,
            "family": "clip_t5",
            "tokenizer_sha256": files_sha256(
                Path(self.parts.sources["tokenizer_dir"]), ("spiece.model",)
            ),
            "vision": self.parts.sources["vision_tower"],
            **self._score_options(),
        }
        self._fingerprint = common.weights_fingerprint(
            str(self.parts.sources["folder"]), self.model_config, extra
        )

    # -- the protocol ------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def config(self) -> dict[str, Any]:
        """What the run card records: scoring options, parity, loading sources, sharing."""
        sources = {k: v for k, v in self.parts.sources.items() if k != "tokenizer_dir"}
        return {
            **self._score_options(),
            "family": "clip_t5",
            "loaded_from": sources,
            **self.sharing.as_config(),
        }

    def _score_options(self) -> dict[str, Any]:
        return {"precision": self.precision, "parity": self.parity or "none", **self.options}

    # -- subclasses --------------------------------------------------------------------------

    def _check_options(self) -> None:
        raise NotImplementedError

    def _question(self, text: str) -> str:
        raise NotImplementedError

    def _overhead(self) -> int:
        """Input ids of the prompt besides the text (the image counted once, as t2v_metrics)."""
        return len(self._before) + 1 + len(self._after_ids(self._question("")))

    def _after_ids(self, question: str) -> list[int]:
        """The second text chunk, after the image: newline, question, assistant cue, ``</s>``."""
        return self.tokenizer.encode("\n" + question + " ASSISTANT: ")

    # -- encoder inputs ----------------------------------------------------------------------

    def _running(self) -> Any:
        """t2v_metrics' bf16 autocast (CUDA only, as its decorator) under parity."""
        import contextlib

        import torch

        if self.parity == "t2v_metrics" and self.device.startswith("cuda"):
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Projected CLIP features (n, tokens, d_model) of square-padded images."""
        squares = [expand_to_square(im.convert("RGB"), self._pad_colour) for im in images]
        pixels = self.parts.image_processor(images=squares, return_tensors="pt")["pixel_values"]
        return self.parts.image_features(pixels.to(self.device, self.dtype))

    def encoder_inputs(
        self, features: torch.Tensor, rows: Sequence[int], questions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_embeds, attention_mask): chunk 1, image features ``rows[i]``, chunk 2,
        right-padded with zeros."""
        import torch

        embed = self.parts.t5.get_input_embeddings()
        ids = torch.as_tensor(self._before, dtype=torch.long, device=self.device)
        before = embed(ids).to(features.dtype)
        seqs = []
        for row, question in zip(rows, questions, strict=True):
            after_ids = self._after_ids(question)
            after = embed(torch.as_tensor(after_ids, dtype=torch.long, device=self.device))
            seqs.append(torch.cat([before, features[row], after.to(features.dtype)], dim=0))
        width = max(len(s) for s in seqs)
        x = features.new_zeros((len(seqs), width, features.shape[-1]))
        mask = torch.zeros((len(seqs), width), dtype=torch.long, device=self.device)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return x, mask

    def answer_log_probs(
        self,
        encoder_kwargs: dict[str, Any],
        targets: Sequence[Sequence[int]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (n, width) of each row's ``targets`` (right-padded) and their mask."""
        import torch

        n = len(targets)
        width = max(1, max(len(t) for t in targets))
        labels = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.bool)
        for i, t in enumerate(targets):
            labels[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.long)
            mask[i, : len(t)] = True
        start = torch.full((n, 1), self._start, dtype=torch.long)
        decoder_ids = torch.cat([start, labels[:, :-1]], dim=1).to(self.device)
        # The decoder is causal: right padding after a row's targets does not change them.
        out = self.parts.t5(**encoder_kwargs, decoder_input_ids=decoder_ids)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        picked = logp.gather(-1, labels.to(logp.device).unsqueeze(-1)).squeeze(-1)
        return picked.cpu(), mask


class ClipT5VQAScorer(ClipT5Scorer):
    """exp(-mean CE) of "Yes" + ``</s>`` after t2v_metrics' CLIP-FlanT5 prompt."""

    prefix = "vqascore"
    OPTIONS = ("template", "answer", "parity", *ClipT5Scorer.OPTIONS)

    def _check_options(self) -> None:
        if self.parity == "t2v_metrics":
            fixed = {"template": DEFAULT_TEMPLATE, "answer": DEFAULT_ANSWER}
            changed = [k for k, v in fixed.items() if self.options.get(k, v) != v]
            if changed:
                raise ModelLoadError(
                    f"{self.spec}: parity=t2v_metrics fixes the {' and '.join(changed)}; "
                    "drop them or drop parity"
                )
        template = self.options.setdefault("template", DEFAULT_TEMPLATE)
        self.options.setdefault("answer", DEFAULT_ANSWER)
        if "{text}" not in template:
            raise ModelLoadError(
                f"{self.spec}: question template {template!r} has no '{{text}}' placeholder"
            )

    def _question(self, text: str) -> str:
        return str(self.options["template"]).replace("{text}", text)

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        import torch

        answer = self.tokenizer.encode(str(self.options["answer"]))
        if len(answer) < 2 or self.tokenizer.unk_token_id in answer:
            raise ModelLoadError(
                f"{self.spec}: the tokenizer has no pieces for the answer "
                f"{self.options['answer']!r} (it encodes to {answer})"
            )
        uniq, inverse = common.unique_images(images)
        with torch.inference_mode(), self._running():
            features = self.image_features(uniq)
            x, mask = self.encoder_inputs(features, inverse, [self._question(t) for t in texts])
            logp, _ = self.answer_log_probs(
                {"inputs_embeds": x, "attention_mask": mask}, [answer] * len(texts)
            )
        return logp.double().mean(dim=1).exp().float()


class ClipT5CaptionScorer(ClipT5Scorer):
    """Mean (or total) log-probability of the caption as CLIP-FlanT5's decoded reply."""

    prefix = "captionlik"
    OPTIONS = ("prompt", "reduce", *ClipT5Scorer.OPTIONS)

    def _check_options(self) -> None:
        self.options.setdefault("prompt", DEFAULT_CAPTION_PROMPT)
        reduce = self.options.setdefault("reduce", "mean")
        if reduce not in ("mean", "sum"):
            raise ModelLoadError(f"{self.spec}: reduce must be 'mean' or 'sum', got {reduce!r}")

    def _question(self, text: str) -> str:
        return str(self.options["prompt"])

    def _overhead(self) -> int:
        return 1 + len(self._before)  # the caption is the decoder's: only the image counts

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        import torch

        targets = [self.tokenizer.encode(t, eos=False) for t in texts]
        if not any(targets):
            return torch.zeros(len(texts), dtype=torch.float32)
        uniq, inverse = common.unique_images(images)
        rows = torch.as_tensor(inverse, dtype=torch.long, device=self.device)
        prompt = self._question("")
        with torch.inference_mode(), self._running():
            features = self.image_features(uniq)
            x, mask = self.encoder_inputs(features, range(len(uniq)), [prompt] * len(uniq))
            # The encoder input does not depend on the caption: once per distinct image.
            hidden = self.parts.t5.get_encoder()(inputs_embeds=x, attention_mask=mask)
            logp, valid = self.answer_log_probs(
                {
                    "encoder_outputs": (hidden.last_hidden_state[rows],),
                    "attention_mask": mask[rows],
                },
                targets,
            )
        total = (logp.double() * valid).sum(dim=1)
        if self.options["reduce"] == "sum":
            return total.float()
        counts = valid.sum(dim=1).clamp(min=1)
        return (total / counts).float()


def loader(prefix: str, family: str) -> Any:
    """The ``load(spec, device, precision, *, text_policy, batch_size)`` of a prefix and family."""
    if family == "clip_t5":
        cls = ClipT5VQAScorer if prefix == "vqascore" else ClipT5CaptionScorer
        return common.option_loader(cls, cls.OPTIONS)
    if family == "hf":
        from densecap_eval.scorers import vlm_encdec

        encdec = (
            vlm_encdec.EncoderDecoderVQAScorer
            if prefix == "vqascore"
            else vlm_encdec.EncoderDecoderCaptionScorer
        )
        return common.option_loader(encdec, encdec.OPTIONS)
    raise ModelLoadError(f"{prefix}: no encoder-decoder scorer for family {family!r}")
