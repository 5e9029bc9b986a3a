"""The model contract: typed protocols every scorer backend implements.

Three kinds of scorer exist. An *embedding* scorer has an image tower and a text tower, so each
unique region and text is encoded once and any (region, text) score is a cheap dot product.
A *pair* scorer (a VLM, an ITM head) must see each (region, text) pair together.
A *late-interaction* scorer (FLAIR) encodes each region into a matrix of tokens and each text
into a vector once, and runs only a small head per pair. Tasks and the engine work with all
three through `Scorer.kind`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from densecap_eval.core.config import PRECISIONS, TEXT_POLICIES, Precision, TextPolicy  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import torch
    from PIL import Image

# The three kinds, declared here once; each registered prefix states its kind
# (`densecap_eval.scorers.SCORERS`) and each scorer carries it as ``Scorer.kind``.
ScorerKind = Literal["embedding", "late-interaction", "pair"]
SCORER_KINDS: tuple[ScorerKind, ...] = ("embedding", "late-interaction", "pair")


@dataclass(frozen=True)
class TextEncoding:
    """Text-tower output for a list of texts, with what the text policy did to each."""

    embeddings: torch.Tensor  # (n, d) float32 on CPU, L2-normalised
    n_tokens: list[int]  # untruncated token counts with the model's own tokenizer
    cut: list[bool]  # whether the policy dropped any of the text's tokens


@dataclass(frozen=True)
class TextInputs:
    """What a text tower is fed for each text under a policy (`TwoTowerScorer.text_inputs`).

    Texts with equal ``keys`` reach the model identically (the same token ids after the length
    policy), so the engine encodes them once and they score exact ties.
    """

    keys: list[str]
    n_tokens: list[int]  # untruncated token counts with the model's own tokenizer
    cut: list[bool]  # whether the policy dropped any of the text's tokens


@runtime_checkable
class Scorer(Protocol):
    """What every scorer offers. ``score`` is float32 on CPU, shape (images, texts), higher = better."""

    spec: str
    max_text_tokens: int
    text_policy: TextPolicy

    # Read-only members, so a backend may narrow them (``kind: Literal["embedding"]``).
    @property
    def kind(self) -> ScorerKind:
        """Which path the engine takes: embedding, late-interaction or pair."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the model runs (part of the cache key; picks the default batch size)."""
        ...

    @property
    def precision(self) -> Precision:
        """The autocast dtype, fp32 | fp16 | bf16 (part of the cache key)."""
        ...

    @property
    def fingerprint(self) -> str:
        """Identity of the weights and configuration (changes when the model does)."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor: ...


@runtime_checkable
class EmbeddingScorer(Scorer, Protocol):
    """A two-tower model (CLIP, SigLIP, ...).

    ``preprocess`` may be a method or a picklable callable attribute (the library's own
    transform): DataLoader workers receive it, so it must not drag the model along.
    """

    @property
    def preprocess_id(self) -> str:
        """Identity of the image preprocessing (part of the image cache key)."""
        ...

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> pixel tensor; must be picklable so DataLoader workers can run it."""
        ...

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) pixels -> (n, d) float32 CPU embeddings, L2-normalised."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor: ...

    def encode_texts(
        self, texts: Sequence[str], *, policy: TextPolicy | None = None
    ) -> TextEncoding: ...

    def logits(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """The model's own logits from normalised embeddings: (n_images, n_texts)."""
        ...

    def text_cut(self, texts: Sequence[str], *, policy: TextPolicy | None = None) -> list[bool]:
        """Whether the policy drops any token of each text."""
        ...


@runtime_checkable
class PairScorer(Scorer, Protocol):
    """A model that scores one (image, text) pair at a time (VQAScore, ITM heads, ...)."""

    def score_pairs(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        *,
        policy: TextPolicy | None = None,
    ) -> torch.Tensor:
        """Score pair i = (images[i], texts[i]); returns (n,) float32 on CPU."""
        ...

    def text_cut(self, texts: Sequence[str], *, policy: TextPolicy | None = None) -> list[bool]:
        """Whether the policy cuts each text."""
        ...


@runtime_checkable
class LateInteractionScorer(Scorer, Protocol):
    """Towers that encode once, and a head that scores each pair (FLAIR's attention pooling).

    The engine caches ``encode_pixel_tokens`` rows per region and ``encode_texts`` rows per
    text, as for an embedding scorer, then runs ``score_tokens`` / ``score_token_pairs``
    (the engine's late-interaction module). ``preprocess`` is picklable, as for
    `EmbeddingScorer`.
    """

    @property
    def preprocess_id(self) -> str: ...

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_pixel_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) pixels -> (n, tokens, dim) float32 CPU image tokens."""
        ...

    def encode_image_tokens(self, images: Sequence[Image.Image]) -> torch.Tensor: ...

    def encode_texts(
        self, texts: Sequence[str], *, policy: TextPolicy | None = None
    ) -> TextEncoding:
        """One row per text: what the head compares the image tokens with (its query)."""
        ...

    def score_tokens(
        self, image_tokens: torch.Tensor, text_embeddings: torch.Tensor
    ) -> torch.Tensor:
        """(R, tokens, dim) x (C, dim) -> (R, C) float32 CPU: every image with every text."""
        ...

    def score_token_pairs(
        self, image_tokens: torch.Tensor, text_embeddings: torch.Tensor
    ) -> torch.Tensor:
        """(P, tokens, dim) x (P, dim) -> (P,) float32 CPU: pair i = (image i, text i)."""
        ...

    def text_cut(self, texts: Sequence[str], *, policy: TextPolicy | None = None) -> list[bool]:
        """Whether the policy drops any token of each text."""
        ...


@dataclass(frozen=True)
class ScorerFacts:
    """What a run records of a scorer beyond the `Scorer` protocol.

    Only some backends carry these attributes (a two-tower model its device, precision,
    preprocessing and provenance; a VLM its options ``config``), so they are read here, once,
    and typed from then on.
    """

    device: str | None = None
    precision: str | None = None
    preprocess_id: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, scorer: object) -> ScorerFacts:
        def mapping(name: str) -> dict[str, Any]:
            value = getattr(scorer, name, None)
            return dict(value) if isinstance(value, Mapping) else {}

        def text(name: str) -> str | None:
            value = getattr(scorer, name, None)
            return str(value) if value is not None else None

        return cls(
            device=text("device"),
            precision=text("precision"),
            preprocess_id=text("preprocess_id"),
            provenance=mapping("provenance"),
            config=mapping("config"),
        )


class ScorerLoader(Protocol):
    """What the scorer registry maps a spec prefix to: `load_scorer`'s own signature."""

    def __call__(
        self,
        spec: str,
        device: str | None = None,
        precision: str | None = None,
        *,
        text_policy: TextPolicy = "truncate",
    ) -> Scorer: ...
