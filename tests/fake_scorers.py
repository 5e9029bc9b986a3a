"""Small deterministic fake scorers implementing the full scorer protocols (no model, no download).

`FakeEmbeddingScorer` is a two-tower "model":
- image tower: ``preprocess`` resizes to ``image_size`` x ``image_size`` (bilinear) and scales
  to [0, 1]; ``encode_pixels`` pools the pixels into a 2x2 grid of mean colours (12 numbers plus
  a constant 1), projects them with a fixed seeded matrix and L2-normalises. So a uniform grey
  image always gets the same embedding, and different colours get different ones.
- text tower: a text is split on whitespace; its token count is ``words + 2`` (start and end
  tokens, like CLIP). The policy ``truncate`` keeps the first ``max_text_tokens - 2`` words,
  ``chunk-mean`` averages the embeddings of consecutive chunks of that many words (then
  re-normalises), ``error`` raises `TextTooLongError` past the limit. A kept word list is embedded
  as a normal vector seeded by the sha256 of the words joined by one space, L2-normalised, so
  embeddings never depend on batching.
- ``logits`` is ``logit_scale * img @ txt.T + logit_bias`` in float32.

Both scorers count what they are asked to encode (``text_calls``, ``encoded_texts``,
``pixel_calls``, ``encoded_images``, ``pair_calls``, ``scored_pairs``) so tests can check that
each unique input is encoded once. Counters only see the main process (DataLoader workers run
``preprocess`` only). Failure injection for engine tests:
- ``oom_above=N``: any encode call with more than N items raises ``torch.cuda.OutOfMemoryError``
  (as a real GPU would), or a ``RuntimeError("CUDA out of memory ...")`` with ``oom_style="runtime"``.
- ``interrupt_after=K``: the (K+1)-th encode call raises ``KeyboardInterrupt`` (a Ctrl-C mid-run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image

from densecap_eval.core.errors import TextTooLongError
from densecap_eval.datasets.regions import Region, crop, open_photo
from densecap_eval.scorers.base import TextEncoding, TextPolicy


def load_region(region: Region) -> Image.Image:
    """Decode one region as the engine does (for tests that encode regions one by one)."""
    return crop(open_photo(region.photo), region.box)


def text_vector(text: str, dim: int) -> np.ndarray:
    """The fake text tower's unnormalised vector for one (already cut) text."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class _FakeBase:
    def __init__(
        self,
        *,
        spec: str,
        dim: int,
        max_text_tokens: int,
        text_policy: TextPolicy,
        image_size: int,
        version: str,
        oom_above: int | None,
        oom_style: Literal["cuda", "runtime"],
        interrupt_after: int | None,
        device: str,
    ) -> None:
        self.spec = spec
        self.dim = dim
        self.max_text_tokens = max_text_tokens
        self.text_policy: TextPolicy = text_policy
        self.image_size = image_size
        self.version = version
        self.device = device
        self.precision = "fp32"  # the Scorer contract's autocast dtype (part of the cache key)
        self.oom_above = oom_above
        self.oom_style = oom_style
        self.interrupt_after = interrupt_after
        self.calls = 0  # encode/score calls that got past the failure checks
        self._projection = np.random.default_rng(1234).standard_normal((13, dim)).astype(np.float32)

    # -- failure injection -------------------------------------------------------------------
    def _enter(self, n: int) -> None:
        if self.oom_above is not None and n > self.oom_above:
            if self.oom_style == "runtime":
                raise RuntimeError(f"CUDA out of memory. Tried to allocate {n} items (fake)")
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake, batch of {n})")
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1

    # -- text tower ----------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return f"{self.spec}|dim={self.dim}|size={self.image_size}|{self.version}"

    @property
    def preprocess_id(self) -> str:
        return f"fake-resize-{self.image_size}-bilinear"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def _policy(self, policy: TextPolicy | None) -> TextPolicy:
        return self.text_policy if policy is None else policy

    def text_cut(self, texts: Sequence[str], *, policy: TextPolicy | None = None) -> list[bool]:
        policy = self._policy(policy)
        counts = self.count_tokens(texts)
        if policy == "error":
            for text, n in zip(texts, counts, strict=True):
                if n > self.max_text_tokens:
                    raise TextTooLongError(
                        f"text of {n} tokens exceeds {self.spec}'s limit of "
                        f"{self.max_text_tokens}: {text[:40]!r}"
                    )
            return [False] * len(counts)
        if policy == "chunk-mean":
            # as the real backends: chunks keep every word, so nothing is cut
            return [False] * len(counts)
        return [n > self.max_text_tokens for n in counts]

    def _text_embedding(self, text: str, policy: TextPolicy) -> np.ndarray:
        words = text.split()
        room = self.max_text_tokens - 2
        if policy == "chunk-mean" and len(words) > room:
            chunks = [words[i : i + room] for i in range(0, len(words), room)]
            vecs = [self._unit(text_vector(" ".join(c), self.dim)) for c in chunks]
            return self._unit(np.mean(vecs, axis=0))
        return self._unit(text_vector(" ".join(words[:room]), self.dim))

    @staticmethod
    def _unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v)).astype(np.float32)

    def _encode_texts(self, texts: Sequence[str], policy: TextPolicy) -> TextEncoding:
        cut = self.text_cut(texts, policy=policy)
        emb = np.stack([self._text_embedding(t, policy) for t in texts]) if texts else None
        tensor = (
            torch.from_numpy(emb)
            if emb is not None
            else torch.zeros((0, self.dim), dtype=torch.float32)
        )
        return TextEncoding(embeddings=tensor, n_tokens=self.count_tokens(texts), cut=cut)

    # -- image tower ---------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        img = image.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        n, c, h, w = pixels.shape
        pooled = pixels.reshape(n, c, 2, h // 2, 2, w // 2).mean(dim=(3, 5)).reshape(n, c * 4)
        feats = torch.cat([pooled, torch.ones((n, 1))], dim=1).to(torch.float64)
        out = feats @ torch.from_numpy(self._projection).to(torch.float64)
        out = out / out.norm(dim=1, keepdim=True)
        return out.to(torch.float32)


class FakeEmbeddingScorer(_FakeBase):
    """Deterministic two-tower fake implementing `EmbeddingScorer` (see the module docstring)."""

    kind: Literal["embedding"] = "embedding"

    def __init__(
        self,
        *,
        dim: int = 8,
        max_text_tokens: int = 12,
        text_policy: TextPolicy = "truncate",
        image_size: int = 8,
        logit_scale: float = 10.0,
        logit_bias: float = 0.0,
        version: str = "v1",
        oom_above: int | None = None,
        oom_style: Literal["cuda", "runtime"] = "cuda",
        interrupt_after: int | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(
            spec="fake:embedding",
            dim=dim,
            max_text_tokens=max_text_tokens,
            text_policy=text_policy,
            image_size=image_size,
            version=version,
            oom_above=oom_above,
            oom_style=oom_style,
            interrupt_after=interrupt_after,
            device=device,
        )
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.text_calls: list[int] = []  # batch size of each encode_texts call
        self.encoded_texts: list[str] = []
        self.pixel_calls: list[int] = []  # batch size of each encode_pixels call
        self.encoded_images = 0

    @property
    def fingerprint(self) -> str:
        return f"{super().fingerprint}|scale={self.logit_scale}|bias={self.logit_bias}"

    def encode_texts(
        self, texts: Sequence[str], *, policy: TextPolicy | None = None
    ) -> TextEncoding:
        self._enter(len(texts))
        self.text_calls.append(len(texts))
        self.encoded_texts.extend(texts)
        return self._encode_texts(texts, self._policy(policy))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self._enter(len(pixels))
        self.pixel_calls.append(len(pixels))
        self.encoded_images += len(pixels)
        return self._encode_pixels(pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.encode_pixels(torch.stack([self.preprocess(im) for im in images]))

    def logits(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        img = image_embeddings.to(torch.float32)
        txt = text_embeddings.to(torch.float32)
        return self.logit_scale * (img @ txt.T) + self.logit_bias

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        return self.logits(self.encode_images(images), self.encode_texts(texts).embeddings)


class FakePairScorer(_FakeBase):
    """Deterministic fake implementing `PairScorer`: pair i scores like the embedding fake would.

    ``score_pairs(images, texts)[i] == FakeEmbeddingScorer(...).score([images[i]], [texts[i]])``
    up to float32 rounding, computed one pair at a time as a VLM would.
    """

    kind: Literal["pair"] = "pair"

    def __init__(
        self,
        *,
        dim: int = 8,
        max_text_tokens: int = 12,
        text_policy: TextPolicy = "truncate",
        image_size: int = 8,
        logit_scale: float = 10.0,
        version: str = "v1",
        oom_above: int | None = None,
        oom_style: Literal["cuda", "runtime"] = "cuda",
        interrupt_after: int | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(
            spec="fake:pair",
            dim=dim,
            max_text_tokens=max_text_tokens,
            text_policy=text_policy,
            image_size=image_size,
            version=version,
            oom_above=oom_above,
            oom_style=oom_style,
            interrupt_after=interrupt_after,
            device=device,
        )
        self.logit_scale = logit_scale
        self.pair_calls: list[int] = []
        self.scored_pairs: list[tuple[tuple[float, ...], str]] = []  # (mean RGB, text)

    def score_pairs(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        *,
        policy: TextPolicy | None = None,
    ) -> torch.Tensor:
        if len(images) != len(texts):
            raise ValueError("score_pairs needs as many images as texts")
        self._enter(len(images))
        self.pair_calls.append(len(images))
        policy = self._policy(policy)
        enc = self._encode_texts(texts, policy)
        out = []
        for image, text, emb in zip(images, texts, enc.embeddings, strict=True):
            pix = self.preprocess(image)
            img = self._encode_pixels(pix[None])[0]
            out.append(self.logit_scale * float(img @ emb))
            mean = tuple(round(float(x), 4) for x in pix.mean(dim=(1, 2)))
            self.scored_pairs.append((mean, text))
        return torch.tensor(out, dtype=torch.float32)

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        rows = []
        for image in images:
            rows.append(self.score_pairs([image] * len(texts), list(texts)))
        return torch.stack(rows) if rows else torch.zeros((0, len(texts)))
