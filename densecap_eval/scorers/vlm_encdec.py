"""transformers' encoder-decoder VLMs as pair scorers: BLIP-2 / InstructBLIP with T5, Florence-2.

Loaded with their own classes (`Blip2ForConditionalGeneration`,
`InstructBlipForConditionalGeneration`, `Florence2ForConditionalGeneration`) and `AutoProcessor`.
The prompt (the question, or the caption prompt) goes through the processor into the encoder
with the image; the answer or caption is the decoder's target after ``decoder_start_token_id``.

- ``vqascore:`` (BLIP-2 and InstructBLIP with T5): P(first answer token) at the decoder's first
  step, the full-vocabulary softmax read at the first token of ``answer`` tokenized alone (T5
  pieces carry their own leading ``▁``, so "yes" alone is the token the decoder emits first).
  Defaults follow t2v_metrics' InstructBLIP-FlanT5: template ``Question: Does this figure show
  "{text}"? Please answer yes or no.`` and answer ``yes`` (lower case, as these models answer).
  t2v_metrics itself scores InstructBLIP through LAVIS as exp(-mean CE) of "yes" + ``</s>``
  (not reproduced here: no parity option for this family). Florence-2 is not a yes/no model:
  ``vqascore:`` refuses it.
- ``captionlik:``: mean (default) or sum of the caption tokens' log-probs as the decoder's output
  (the tokenizer's leading BOS, Florence-2's ``<s>``, is context, not scored; no end token).
  Default prompt: ``Describe this image.``; Florence-2: its task token ``<MORE_DETAILED_CAPTION>``.
- Batching: the image processor runs once per distinct image of a batch (its outputs repeated
  into the pairs' order). ``vqascore:``: the vision tower and the encoder run per pair (the
  question, and for InstructBLIP the Q-Former's instruction, differ per pair). ``captionlik:``:
  the encoder (image + the fixed prompt) runs once per distinct image and its output is repeated
  to the pairs' captions. Prompts are right-padded: T5's and
  BART's positions count from the left, so a pair's score does not depend on its batch-mates.
- Prefix sharing is off (encoder-decoder: the text sits in the bidirectional encoder).
- Token budget: the language model's positions (T5 has relative positions: the tokenizer's
  ``model_max_length``) minus the prompt's other tokens, the image tokens included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers import vlm_common as common

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.core.config import TextPolicy

CLASSES = {
    "blip-2": "Blip2ForConditionalGeneration",
    "instructblip": "InstructBlipForConditionalGeneration",
    "florence2": "Florence2ForConditionalGeneration",
}
YES_NO = ("blip-2", "instructblip")
BLIP_TEMPLATE = 'Question: Does this figure show "{text}"? Please answer yes or no.'
BLIP_ANSWER = "yes"
CAPTION_PROMPTS = {"florence2": "<MORE_DETAILED_CAPTION>"}
DEFAULT_CAPTION_PROMPT = "Describe this image."
SHARING_OFF = "encoder-decoder: the text sits in the bidirectional encoder with the image"


class _ImagesOnce:
    """Stands in for a processor's image processor: returns outputs computed once per distinct
    image, repeated into the pairs' order, for the one call the processor makes."""

    def __init__(self, real: Any, uniq: Sequence[Image.Image], inverse: Sequence[int]) -> None:
        import torch

        self._real = real
        processed = real(list(uniq), return_tensors="pt")
        idx = torch.as_tensor(list(inverse), dtype=torch.long)
        self._out = processed.__class__(
            {k: v[idx] if isinstance(v, torch.Tensor) else v for k, v in processed.items()}
        )
        self._n = len(inverse)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        if len(images) != self._n:
            raise ValueError(f"expected {self._n} images, got {len(images)}")
        return self._out


class EncoderDecoderScorer(common.PairScorerBase):
    """Shared loading and batching of the encoder-decoder VQAScore and caption scorers."""

    prefix = ""
    OPTIONS: tuple[str, ...] = ("share_prefix",)

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
        import transformers
        from transformers import AutoProcessor

        common.check_transformers(spec)
        self.spec = spec
        self.path = path
        self._place(spec, device, precision, text_policy, batch_size)
        self.options: dict[str, Any] = dict(options)
        common.flag_option(
            spec, "share_prefix", self.options.pop("share_prefix", None), default=False
        )
        self.sharing = common.PrefixSharing(on=False)
        self.sharing.turn_off(SHARING_OFF)
        source, config = common.read_model_config(spec, path)
        self.model_type = str(config.model_type)
        cls_name = CLASSES.get(self.model_type)
        if cls_name is None:
            raise ModelLoadError(
                f"{spec}: encoder-decoder model type {self.model_type!r} is not supported "
                f"(supported: {', '.join(sorted(CLASSES))}, and CLIP-FlanT5)"
            )
        self._check_family()
        try:
            self.processor = AutoProcessor.from_pretrained(source)
            model_cls = getattr(transformers, cls_name)
            self.model = model_cls.from_pretrained(source, dtype=self.dtype).to(self.device).eval()
        except ImportError as exc:  # a processor's optional dependency: name it, one line
            first = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise ModelLoadError(f"{spec}: the processor needs a package: {first}") from exc
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{spec}: cannot load {cls_name} or its processor: {exc}") from exc
        self.model_config = config
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "right"  # positions count from the left in T5 / BART
        self._start = self._decoder_start(config)
        self._check_options()
        limit = self.tokenizer.model_max_length
        text_cfg = getattr(config, "text_config", None)
        positions = getattr(text_cfg, "max_position_embeddings", None)
        candidates = [int(x) for x in (limit, positions) if isinstance(x, int) and 0 < x < 10**6]
        context = min(candidates) if candidates else 512
        self.max_text_tokens = context - self._overhead()
        if self.max_text_tokens < 1:
            raise ModelLoadError(f"{spec}: the prompt leaves no room for text in {context} tokens")
        self.budget = common.TextBudget(self.tokenizer, self.max_text_tokens, spec=spec)
        self._fingerprint = common.weights_fingerprint(
            path, config, {"scorer": self.prefix, **self._score_options()}
        )

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def config(self) -> dict[str, Any]:
        return {**self._score_options(), "family": self.model_type, **self.sharing.as_config()}

    def _score_options(self) -> dict[str, Any]:
        return {"precision": self.precision, **self.options}

    def _check_family(self) -> None:
        """Subclasses refuse families they cannot score."""

    def _check_options(self) -> None:
        raise NotImplementedError

    def _prompt(self, text: str) -> str:
        raise NotImplementedError

    def _overhead(self) -> int:
        """Encoder tokens besides the text (image tokens included), for the token budget."""
        from PIL import Image as PILImage

        probe = PILImage.new("RGB", (32, 32), (128, 128, 128))
        enc = self.processor(images=[probe], text=[self._prompt("")], return_tensors="pt")
        return int(enc["input_ids"].shape[1])

    def _decoder_start(self, config: Any) -> int:
        text_cfg = getattr(config, "text_config", None)
        for source in (self.model.generation_config, text_cfg, config):
            value = getattr(source, "decoder_start_token_id", None)
            if isinstance(value, int):
                return value
        pad = getattr(text_cfg, "pad_token_id", None)
        if isinstance(pad, int):  # T5's convention: the decoder starts at <pad>
            return pad
        raise ModelLoadError(f"{self.spec}: the config names no decoder_start_token_id")

    def encoder_inputs(self, images: Sequence[Image.Image], texts: Sequence[str]) -> dict[str, Any]:
        """The processor's outputs for (image i, prompt of text i), each distinct image's pixels
        computed once."""
        uniq, inverse = common.unique_images([im.convert("RGB") for im in images])
        processor = self.processor
        real = processor.image_processor
        processor.image_processor = _ImagesOnce(real, uniq, inverse)
        try:
            enc = processor(
                images=[uniq[i] for i in inverse],
                text=[self._prompt(t) for t in texts],
                return_tensors="pt",
                padding=True,
            )
        finally:
            processor.image_processor = real
        out: dict[str, Any] = {}
        for key, value in enc.items():
            if key == "labels":  # a training output some processors add: never a forward input
                continue
            if hasattr(value, "to"):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            out[key] = value
        return out

    def decoder_log_probs(
        self, enc: dict[str, Any], targets: Sequence[Sequence[int]], *, module: Any = None
    ) -> torch.Tensor:
        """(n, width + 1, V) log-probs at the decoder's positions for start + right-padded
        targets, from ``module`` (default: the whole model) called with ``enc``."""
        import torch

        module = self.model if module is None else module
        n = len(targets)
        width = max((len(t) for t in targets), default=0)
        ids = torch.full((n, width + 1), self._start, dtype=torch.long)
        for i, t in enumerate(targets):
            if t:
                ids[i, 1 : 1 + len(t)] = torch.as_tensor(list(t), dtype=torch.long)
        with torch.inference_mode():
            # Causal decoder: a row's right padding does not change its earlier positions.
            logits = module(**enc, decoder_input_ids=ids.to(self.device)).logits
        return torch.log_softmax(logits.float(), dim=-1)


class EncoderDecoderVQAScorer(EncoderDecoderScorer):
    """P(first answer token) at the decoder's first step (BLIP-2 / InstructBLIP with T5)."""

    prefix = "vqascore"
    OPTIONS = ("template", "answer", *EncoderDecoderScorer.OPTIONS)

    def _check_family(self) -> None:
        if self.model_type not in YES_NO:
            raise ModelLoadError(
                f"{self.spec}: {self.model_type} is not a yes/no model (no VQAScore); "
                "use captionlik: for caption likelihood"
            )

    def _check_options(self) -> None:
        template = self.options.setdefault("template", BLIP_TEMPLATE)
        answer = self.options.setdefault("answer", BLIP_ANSWER)
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

    def _prompt(self, text: str) -> str:
        return str(self.options["template"]).replace("{text}", text)

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        enc = self.encoder_inputs(images, texts)
        logp = self.decoder_log_probs(enc, [[] for _ in texts])
        return logp[:, 0, self.answer_id].exp().cpu()


class EncoderDecoderCaptionScorer(EncoderDecoderScorer):
    """Mean (or total) log-probability of the caption as the decoder's output."""

    prefix = "captionlik"
    OPTIONS = ("prompt", "reduce", *EncoderDecoderScorer.OPTIONS)

    def _check_options(self) -> None:
        self.options.setdefault(
            "prompt", CAPTION_PROMPTS.get(self.model_type, DEFAULT_CAPTION_PROMPT)
        )
        reduce = self.options.setdefault("reduce", "mean")
        if reduce not in ("mean", "sum"):
            raise ModelLoadError(f"{self.spec}: reduce must be 'mean' or 'sum', got {reduce!r}")

    def _prompt(self, text: str) -> str:
        return str(self.options["prompt"])

    def _overhead(self) -> int:
        return 2  # the caption is the decoder's, after the start token and a possible BOS

    def targets(self, text: str) -> tuple[list[int], int]:
        """(decoder target ids, how many leading ones are context): the caption's tokens with the
        tokenizer's special tokens, the trailing end token dropped, a leading BOS kept as context."""
        ids = list(self.tokenizer(text)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        bos = self.tokenizer.bos_token_id
        lead = 1 if ids and bos is not None and ids[0] == bos else 0
        return ids, lead

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        import torch

        planned = [self.targets(t) for t in texts]
        if not any(len(ids) > lead for ids, lead in planned):
            return torch.zeros(len(texts), dtype=torch.float32)
        shared, module = self._shared_encoder(images)
        logp = self.decoder_log_probs(shared, [ids for ids, _ in planned], module=module)
        out = torch.zeros(len(texts), dtype=torch.float64)
        for i, (ids, lead) in enumerate(planned):
            n = len(ids) - lead
            if n <= 0:
                continue
            # Position j predicts target j (position 0 is the decoder start).
            picked = logp[i, lead : len(ids)].gather(
                -1, torch.as_tensor(ids[lead:], device=logp.device).unsqueeze(-1)
            )
            total = picked.double().sum().cpu()
            out[i] = total / n if self.options["reduce"] == "mean" else total
        return out.float()

    def _shared_encoder(self, images: Sequence[Image.Image]) -> tuple[dict[str, Any], Any]:
        """(decoder inputs, decoder module): the encoder's output for each distinct image (its
        input, image + prompt, does not depend on the caption), repeated into the pairs' order."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        uniq, inverse = common.unique_images([im.convert("RGB") for im in images])
        enc = self.encoder_inputs(uniq, [self._prompt("")] * len(uniq))
        start = torch.full((len(uniq), 1), self._start, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            first = self.model(**enc, decoder_input_ids=start)
        inner = getattr(first, "language_model_outputs", None) or first
        hidden = inner.encoder_last_hidden_state
        rows = torch.as_tensor(inverse, dtype=torch.long, device=hidden.device)
        shared = {
            "encoder_outputs": BaseModelOutput(last_hidden_state=hidden[rows]),
            "attention_mask": enc["attention_mask"][rows],
        }
        # BLIP-2 / InstructBLIP rebuild the encoder input from pixels: their T5 takes the
        # encoder output directly. Florence-2's own forward accepts it.
        module = self.model.language_model if self.model_type in YES_NO else self.model
        return shared, module
