"""``itm:NAME_OR_DIR``: image-text matching heads scoring a pair with their match probability.

Two families: transformers' ``BlipForImageTextRetrieval`` (model type ``blip``) and
``Blip2ForImageTextRetrieval`` (``blip-2``). The score is softmax(ITM logits)[1], the
probability of "match", in [0, 1].

Batching: the image processor and the vision tower run once per distinct image of a batch; the
image features are repeated per pair before the text side cross-attends to them, the same
computation as each model's forward with ``use_itm_head`` / ``use_image_text_matching_head``
(BLIP: the text encoder's [CLS] through the ITM head; BLIP-2: the Q-Former over query tokens and
text, the ITM head averaged over the query positions). Texts are right-padded: the encoders are
bidirectional with an attention mask, so padding does not change a pair's score.

BLIP-2 checkpoints with ``image_token_index`` have their processor prepend one ``<image>`` per
query token to the text, which the model's forward strips again while keeping the mask over the
query tokens; tokenizing the text alone and prepending the query tokens' mask is that computation.

Token budget: the text encoder's (BLIP-2: the Q-Former's) ``max_position_embeddings``, counting
the tokenizer's special tokens ([CLS], [SEP]).
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

_CLASSES = {"blip": "BlipForImageTextRetrieval", "blip-2": "Blip2ForImageTextRetrieval"}


class ITMScorer(common.PairScorerBase):
    """Match probability of an image-text matching head."""

    def __init__(
        self,
        spec: str,
        path: str,
        *,
        device: str | None,
        precision: str | None,
        text_policy: TextPolicy,
        batch_size: int | None,
    ) -> None:
        import transformers
        from transformers import AutoProcessor

        self.spec = spec
        self._place(spec, device, precision, text_policy, batch_size)
        source, config = common.read_model_config(spec, path)
        cls_name = _CLASSES.get(config.model_type)
        if cls_name is None:
            raise ModelLoadError(
                f"{spec}: model type {config.model_type!r} has no image-text matching head "
                f"here (itm: supports {', '.join(sorted(_CLASSES))})"
            )
        try:
            self.processor = AutoProcessor.from_pretrained(source)
            model_cls = getattr(transformers, cls_name)
            self.model = model_cls.from_pretrained(source, dtype=self.dtype).to(self.device).eval()
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"{spec}: cannot load {cls_name}: {exc}") from exc
        self.model_config = config
        self.model_type = config.model_type
        self.tokenizer = self.processor.tokenizer
        text_cfg = config.qformer_config if self.model_type == "blip-2" else config.text_config
        n_special = len(self.tokenizer("")["input_ids"])
        limit = int(text_cfg.max_position_embeddings)
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < limit:
            limit = model_max
        self.max_text_tokens = limit
        self.budget = common.TextBudget(self.tokenizer, limit, n_special=n_special, spec=spec)
        self._fingerprint = common.weights_fingerprint(
            path, config, {"scorer": "itm", "precision": self.precision}
        )

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def config(self) -> dict[str, Any]:
        return {"precision": self.precision, "head": _CLASSES[self.model_type]}

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        import torch

        uniq, inverse = common.unique_images(images)
        pixels = self.processor.image_processor(uniq, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.dtype)
        tok = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        ids = tok["input_ids"].to(self.device)
        mask = tok["attention_mask"].to(self.device)
        rows = torch.as_tensor(inverse, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            m = self.model
            feats = m.vision_model(pixel_values=pixels).last_hidden_state[rows]
            feats_mask = torch.ones(feats.shape[:-1], dtype=torch.long, device=self.device)
            if self.model_type == "blip":
                hidden = m.text_encoder(
                    input_ids=ids,
                    attention_mask=mask,
                    encoder_hidden_states=feats,
                    encoder_attention_mask=feats_mask,
                ).last_hidden_state
                logits = m.itm_head(hidden[:, 0, :])
            else:
                logits = self._blip2_itm_logits(ids, mask, feats, feats_mask)
        return torch.softmax(logits.float(), dim=-1)[:, 1].cpu()

    def _blip2_itm_logits(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        feats: torch.Tensor,
        feats_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Blip2ForImageTextRetrieval's ITM branch on precomputed (repeated) image features."""
        import torch

        m = self.model
        query = m.query_tokens.expand(feats.shape[0], -1, -1)
        n_query = query.shape[1]
        query_mask = torch.ones(query.shape[:-1], dtype=mask.dtype, device=mask.device)
        hidden = m.qformer(
            query_embeds=m.embeddings(input_ids=ids, query_embeds=query),
            query_length=n_query,
            attention_mask=torch.cat([query_mask, mask], dim=1),
            encoder_hidden_states=feats,
            encoder_attention_mask=feats_mask,
        ).last_hidden_state
        hidden = hidden.to(dtype=m.itm_head.weight.dtype)
        return m.itm_head(hidden[:, :n_query, :]).mean(dim=1)


def load_itm(
    spec: str,
    device: str | None = None,
    precision: str | None = None,
    *,
    text_policy: TextPolicy = "truncate",
    batch_size: int | None = None,
) -> ITMScorer:
    """Load ``itm:NAME_OR_DIR`` (BLIP or BLIP-2 image-text retrieval checkpoints)."""
    path, _ = common.split_spec(spec, "itm", ())
    return ITMScorer(
        spec,
        path,
        device=device,
        precision=precision,
        text_policy=text_policy,
        batch_size=batch_size,
    )
