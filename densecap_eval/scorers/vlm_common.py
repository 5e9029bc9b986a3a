"""Shared pieces of the pair scorers: spec options, devices, fingerprints, text budgets.

Spec options follow the model path after a ``?`` as URL query pairs, e.g.
``captionlik:/models/llava?reduce=sum`` or ``vqascore:DIR?template=Is%20this%20%22{text}%22%3F``
(``&`` inside a value must be written ``%26``). Keyword arguments to the loader win over spec
options. Heavy imports (torch, transformers) happen inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from densecap_eval.errors import ModelLoadError, TextTooLongError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.scorers.base import TextPolicy

DEFAULT_BATCH_SIZES = {"cpu": 32, "cuda": 64, "mps": 16}


def split_spec(spec: str, prefix: str, allowed: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``"prefix:PATH?k=v"`` -> (PATH, {k: v}); unknown option names raise `ModelLoadError`."""
    body = spec[len(prefix) + 1 :] if spec.startswith(prefix + ":") else spec
    path, _, query = body.partition("?")
    if not path:
        raise ModelLoadError(f"{spec}: no model name or directory after '{prefix}:'")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise ModelLoadError(f"{spec}: unknown option(s) {', '.join(unknown)} (known: {known})")
    return path, options


def resolve_device(device: str | None) -> str:
    """The scorers' shared device rule (auto: cuda, mps, cpu; explicit ones checked), as a string."""
    from densecap_eval.scorers.common import resolve_device as resolve

    return str(resolve(device))


def resolve_dtype(precision: str | None, device: str, spec: str) -> tuple[str, torch.dtype]:
    """Precision name and torch dtype: fp32 on CPU by default, bf16 (else fp16) on CUDA."""
    import torch

    if precision is None:
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in table:
        raise ModelLoadError(f"{spec}: unknown precision {precision!r} (known: fp32, fp16, bf16)")
    return precision, table[precision]


def default_batch_size(device: str) -> int:
    return DEFAULT_BATCH_SIZES.get(device.split(":")[0], DEFAULT_BATCH_SIZES["cpu"])


def weights_fingerprint(path: str, config: Any, extra: dict[str, Any]) -> str:
    """sha256 of the config, the weight files' names and sizes (local dirs) and the options."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    folder = Path(path)
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.suffix in {".safetensors", ".bin", ".json", ".model"} and f.is_file():
                h.update(f"{f.name}:{f.stat().st_size}".encode())
    else:
        h.update(path.encode())
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


def image_key(image: Image.Image) -> tuple[Any, ...]:
    """Content identity of a decoded image (the engine hands one crop object per pair)."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
    return (image.mode, image.size, digest)


def unique_images(images: Sequence[Image.Image]) -> tuple[list[Image.Image], list[int]]:
    """Distinct images (by content) and, for each input, the index of its distinct image."""
    seen: dict[tuple[Any, ...], int] = {}
    by_id: dict[int, int] = {}
    uniq: list[Image.Image] = []
    inverse: list[int] = []
    for im in images:
        idx = by_id.get(id(im))
        if idx is None:
            key = image_key(im)
            idx = seen.get(key)
            if idx is None:
                idx = seen[key] = len(uniq)
                uniq.append(im)
            by_id[id(im)] = idx
        inverse.append(idx)
    return uniq, inverse


# -- text budgets -----------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class TextBudget:
    """Counts and cuts texts with a model's own tokenizer.

    ``count(text)`` is the untruncated number of the text's tokens plus ``n_special`` (tokens the
    tokenizer adds around it, e.g. BERT's [CLS]/[SEP]; 0 for a VLM whose prompt carries them).
    ``limit`` bounds that count. Cutting keeps a character prefix of the text ending at a token
    boundary (offset mapping), so the kept text re-tokenizes to the kept tokens.
    """

    tokenizer: Any
    limit: int
    n_special: int = 0
    spec: str = ""

    def _encode(self, text: str) -> Any:
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + self.n_special

    def prefix(self, text: str, n_tokens: int) -> str:
        """The longest prefix of ``text`` holding at most ``n_tokens`` of its tokens."""
        if n_tokens <= 0:
            return ""
        enc = self._encode(text)
        offsets = enc["offset_mapping"]
        if len(offsets) <= n_tokens:
            return text
        return text[: offsets[n_tokens - 1][1]]

    def apply(self, text: str, policy: TextPolicy) -> tuple[list[str], bool]:
        """(pieces to score, cut?) for one text under ``policy``; several pieces only for chunk-mean."""
        n = self.count(text)
        room = self.limit - self.n_special
        if n <= self.limit:
            return [text], False
        if policy == "error":
            raise TextTooLongError(
                f"{self.spec}: text has {n} tokens, over the limit of {self.limit} "
                f"(text policy 'error'): {text[:80]!r}"
            )
        if policy == "truncate":
            return [self.prefix(text, room)], True
        if policy == "chunk-mean":
            return self._chunks(text, room)
        raise TextTooLongError(f"{self.spec}: unknown text policy {policy!r}")

    def _chunks(self, text: str, room: int) -> tuple[list[str], bool]:
        """Sentence-aligned chunks within ``room`` tokens; an over-long sentence is truncated."""
        chunks: list[str] = []
        current = ""
        cut = False
        for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
            if not sentence:
                continue
            if self.count(sentence) - self.n_special > room:
                sentence = self.prefix(sentence, room)
                cut = True
            candidate = f"{current} {sentence}" if current else sentence
            if current and self.count(candidate) - self.n_special > room:
                chunks.append(current)
                current = sentence
            else:
                current = candidate
        if current:
            chunks.append(current)
        return chunks or [""], cut


def policy_pieces(
    budget: TextBudget, texts: Sequence[str], policy: TextPolicy
) -> tuple[list[str], list[int], list[bool]]:
    """Flatten texts into pieces: (pieces, owner text index of each piece, cut flag per text)."""
    pieces: list[str] = []
    owner: list[int] = []
    cut: list[bool] = []
    for i, text in enumerate(texts):
        parts, was_cut = budget.apply(text, policy)
        pieces.extend(parts)
        owner.extend([i] * len(parts))
        cut.append(was_cut)
    return pieces, owner, cut


def mean_by_owner(values: torch.Tensor, owner: Sequence[int], n: int) -> torch.Tensor:
    """Mean of piece scores per text (chunk-mean for a pair scorer: the mean of chunk scores)."""
    import torch

    idx = torch.as_tensor(list(owner), dtype=torch.long)
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, values.double())
    count = torch.zeros(n, dtype=torch.float64).index_add_(
        0, idx, torch.ones(len(owner), dtype=torch.float64)
    )
    return (total / count).float()


def run_sorted(
    n: int,
    lengths: Sequence[int],
    batch_size: int,
    fn: Callable[[list[int]], torch.Tensor],
    *,
    what: str,
) -> torch.Tensor:
    """Call ``fn`` on batches of indices sorted by length; OOM halves the batch (engine helper)."""
    import torch

    from densecap_eval.engine.engine import BatchBackoff

    order = sorted(range(n), key=lambda i: (lengths[i], i))
    out = torch.empty(n, dtype=torch.float32)
    backoff = BatchBackoff(batch_size, what=what)
    for a, b, values in backoff.run(n, lambda a, b: fn(order[a:b])):
        out[torch.as_tensor(order[a:b], dtype=torch.long)] = values.detach().float().cpu()
    return out


class PairScorerBase:
    """The pair-scorer protocol on top of one method, ``_score_batch(images, texts)``.

    Subclasses set ``budget`` (a `TextBudget`), ``text_policy`` and ``batch_size``; this class
    applies the text policy (chunk-mean: the mean of the chunks' scores), sorts pairs by length,
    batches them with the engine's OOM back-off, and builds the full ``score`` matrix.
    """

    kind: Literal["pair"] = "pair"
    budget: TextBudget
    text_policy: TextPolicy
    batch_size: int

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [self.budget.count(t) for t in texts]

    def text_cut(self, texts: Sequence[str], *, policy: TextPolicy | None = None) -> list[bool]:
        return policy_pieces(self.budget, texts, policy or self.text_policy)[2]

    def score_pairs(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        *,
        policy: TextPolicy | None = None,
    ) -> torch.Tensor:
        import torch

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not texts:
            return torch.zeros(0, dtype=torch.float32)
        pieces, owner, _ = policy_pieces(self.budget, texts, policy or self.text_policy)
        piece_images = [images[i] for i in owner]
        lengths = [self.budget.count(p) for p in pieces]

        def run(idx: list[int]) -> torch.Tensor:
            return self._score_batch([piece_images[i] for i in idx], [pieces[i] for i in idx])

        values = run_sorted(len(pieces), lengths, self.batch_size, run, what="pairs")
        if len(pieces) == len(texts):
            return values
        return mean_by_owner(values, owner, len(texts))

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """(len(images), len(texts)) scores of every combination, as pairs."""
        pair_images = [im for im in images for _ in texts]
        pair_texts = [t for _ in images for t in texts]
        return self.score_pairs(pair_images, pair_texts).reshape(len(images), len(texts))
