"""What differs between decoder-only VLM families, as data: one small rule per model type.

The generic scorer (`densecap_eval.scorers.vlm`) tokenizes every family through its own processor
and chat template; this table holds only what the processor cannot tell it:

- ``share``: whether running an image's prompt prefix once and continuing every caption from its
  KV cache is exact. It is when the image comes before the text and no image or prompt token
  attends to a later token (causal, or bidirectional only inside the image, as Gemma 3).
  PaliGemma is a prefix-LM (image and prompt attend both ways), so the prefix depends on the
  caption; a model type missing from the table is not assumed causal.
- ``suffix_fill``: the value of a per-token processor output (``token_type_ids``...) for tokens
  appended after the prompt (caption tokens, a continuation over a cached prefix): PaliGemma marks
  its causal suffix with token type 1; Llama 3.2 Vision's ``cross_attention_mask`` row of a text
  token after the image repeats the last prompt token's row ("last"); everything else is 0.

`answer_token` finds the token the model emits first for an answer: the token covering the
answer's first character in the rendered assistant turn (byte-level BPE: " Yes" after
``Assistant:``; SentencePiece: "▁Yes"), not the answer tokenized alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREFIX_LM = "prefix-LM attention: the image tokens attend to the prompt, so no prefix is shared"


@dataclass(frozen=True)
class FamilyRule:
    """How one model type differs (see the module docstring)."""

    share: str | None = None  # None: sharing is exact; else why it is off
    suffix_fill: dict[str, int | str] = field(default_factory=dict)


CAUSAL = FamilyRule()
RULES: dict[str, FamilyRule] = {
    "llava": CAUSAL,
    "llava_onevision": CAUSAL,
    "qwen2_vl": CAUSAL,
    "qwen2_5_vl": CAUSAL,
    "qwen3_vl": CAUSAL,
    "internvl": CAUSAL,
    "gemma3": CAUSAL,  # bidirectional inside an image only: the prefix does not see the caption
    "idefics3": CAUSAL,
    "smolvlm": CAUSAL,
    "mistral3": CAUSAL,
    "mllama": FamilyRule(suffix_fill={"cross_attention_mask": "last"}),
    "paligemma": FamilyRule(share=PREFIX_LM, suffix_fill={"token_type_ids": 1}),
}
# Processor outputs with one entry per token (extended for appended tokens and left-padded).
TOKEN_KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
    "cross_attention_mask",
)


def rule_for(model_type: str) -> FamilyRule:
    """The rule of ``model_type``; unknown types share nothing (not known to be causal)."""
    return RULES.get(
        model_type,
        FamilyRule(share=f"model type {model_type!r} is not known to attend causally"),
    )


def starts_with_bos(tokenizer: Any, rendered: str) -> bool:
    """Whether a rendered prompt already holds the BOS token (then no special tokens are added).

    Decided from the text, not from ``add_bos_token`` (a tokenizer file can add BOS while the
    attribute says it does not); transformers' own ``apply_chat_template(tokenize=True)`` uses
    the same rule.
    """
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and rendered.startswith(str(bos))


def answer_token(tokenizer: Any, prompt: str, with_answer: str, answer: str) -> int:
    """Id of the token covering ``answer``'s first character in ``with_answer``.

    ``prompt`` is the rendering that ends with the generation prompt, ``with_answer`` the same
    conversation rendered with the answer as the assistant's turn. The answer is looked for after
    their common prefix, so a template that renders a reply's header differently from the
    generation prompt (LLaVA-OneVision: ``assistant \\n`` vs ``assistant\\n``) still finds it.
    Raises ValueError when the answer is not in the rendering.
    """
    common = 0
    for a, b in zip(prompt, with_answer, strict=False):
        if a != b:
            break
        common += 1
    at = with_answer.find(answer, common)
    if at < 0:
        raise ValueError(f"the answer {answer!r} is not in the rendered reply {with_answer!r}")
    enc = tokenizer(with_answer, add_special_tokens=False, return_offsets_mapping=True)
    for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        if start <= at < end:
            return int(token)
    raise ValueError(f"no token covers the answer {answer!r} in {with_answer!r}")


# -- t2v_metrics parity (``?parity=t2v_metrics``) ----------------------------------------------

# t2v_metrics' LLaVA-1.5 VQAScore (its constants.SYSTEM_MSG and llava_model.format_question):
# the system message, " USER: <image>\n", the question, " ASSISTANT: ", then "Yes" + "</s>"; each
# text chunk around the image is tokenized on its own (the chunks after the image lose their
# BOS); images padded to square with the image processor's mean colour; the score is
# exp(-mean cross-entropy) over the answer tokens.
T2V_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
T2V_TEMPLATE = 'Does this figure show "{text}"? Please answer yes or no.'
PARITY_TYPES = {"t2v_metrics": ("llava",)}


def t2v_question(question: str, image_token: str) -> str:
    """t2v_metrics' LLaVA-1.5 prompt for ``question`` (ends with a space, before the answer)."""
    return f"{T2V_SYSTEM} USER: {image_token}\n{question} ASSISTANT: "


def t2v_chunk_ids(tokenizer: Any, text: str, image_token: str, image_id: int) -> list[int]:
    """t2v_metrics' ``tokenizer_image_token``: each chunk around the image tokenized with special
    tokens; when the first chunk starts with BOS, the later chunks lose their first token (their
    BOS); one ``image_id`` between chunks (expanded to the image's tokens later)."""
    chunks = [list(tokenizer(c)["input_ids"]) for c in text.split(image_token)]
    offset = 1 if chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    out = list(chunks[0])
    for chunk in chunks[1:]:
        out.append(image_id)
        out.extend(chunk[offset:])
    return out
