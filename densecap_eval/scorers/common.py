"""What every two-tower backend shares: device and precision, hashing, the scorer skeleton.

A backend subclasses `TwoTowerScorer` and supplies four things: ``preprocess`` (PIL -> pixel
tensor, picklable), ``_image_features`` and ``_text_features`` (the library's own forward on
the device, unnormalised) and ``_count`` (untruncated token counts). The base class adds the
text policies, autocast, inference mode, normalisation and the logits, and ``text_inputs``
(what the text tower sees of each text: the engine encodes texts that reach the model
identically once, so they tie exactly; see `TwoTowerScorer.model_input_ids`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from densecap_eval.core.config import PRECISIONS, Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.core.hashing import file_sha256, files_sha256
from densecap_eval.scorers.base import Scorer, ScorerLoader, TextEncoding, TextInputs
from densecap_eval.scorers.text_policy import TextPlan, check_policy, plan_texts, pool_pieces

if TYPE_CHECKING:
    import torch
    from PIL import Image


def spec_loader(prefix: str) -> Callable[[Callable[..., Scorer]], ScorerLoader]:
    """Turn ``fn(rest, *, spec, device, precision, text_policy)`` into a registry loader.

    Registry loaders share `load_scorer`'s signature ``(spec, device=None, precision=None, *,
    text_policy="truncate")``; this strips the prefix and resolves device and precision.
    """

    def wrap(fn: Callable[..., Scorer]) -> ScorerLoader:
        @functools.wraps(fn)
        def load(
            spec: str,
            device: str | None = None,
            precision: str | None = None,
            *,
            text_policy: TextPolicy = "truncate",
        ) -> Scorer:
            head = f"{prefix}:"
            if not spec.startswith(head):
                raise ModelLoadError(f"model spec {spec!r} does not start with {head!r}")
            torch_device = resolve_device(device)
            return fn(
                spec[len(head) :],
                spec=spec,
                device=torch_device,
                precision=resolve_precision(precision, torch_device),
                text_policy=check_policy(text_policy),
            )

        return load

    return wrap


def resolve_device(device: str | None) -> torch.device:
    """``None`` or ``"auto"``: cuda, then mps, then cpu. An explicit device must exist."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} requested but MPS is not available")
    return resolved


def resolve_precision(precision: str | None, device: torch.device) -> Precision:
    """fp32 unless asked (what the reference computes, on every device).

    fp16 / bf16 are opt-in and recorded; fp16 autocast on the CPU is refused (slow, lossy).
    """
    if precision is None:
        return "fp32"
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type == "cpu":
        raise ModelLoadError(
            "precision 'fp16' is not supported on the CPU (no fast fp16 kernels there); "
            "use 'bf16' or 'fp32'"
        )
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """Autocast on the device for fp16 / bf16; nothing for fp32 (the weights stay fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def hash_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, streamed; memoised by (path, size, mtime) in-process and on disk."""
    return file_sha256(path)


def hash_files(directory: Path, patterns: Sequence[str]) -> dict[str, str]:
    """sha256 of each file in ``directory`` matching one of ``patterns``, by file name."""
    return files_sha256(directory, patterns)


def hub_weights_identity(
    repo_id: str, commit: str | None, patterns: Sequence[str]
) -> dict[str, Any]:
    """Identity of weights loaded from the hub: repo, resolved commit and the files' sha256.

    The snapshot the hub client just loaded (``commit``, or what ``main`` resolves to in its
    cache) gives the revision, and its files are hashed, so weights replaced under the same
    name and revision still change the fingerprint. When no snapshot can be found (a custom
    cache layout) the revision alone stands for the content, and ``weights_sha256`` is None.
    """
    identity: dict[str, Any] = {"hub": repo_id, "revision": commit, "weights_sha256": None}
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=commit)
    except Exception:  # an unusual repo id or cache: keep what we know
        found = None
    if isinstance(found, str):
        snapshot = Path(found).parent
        identity["revision"] = commit or snapshot.name  # snapshots/<commit>/config.json
        identity["weights_sha256"] = files_sha256(snapshot, patterns) or None
    return identity


def provenance(identity: dict[str, Any]) -> dict[str, Any]:
    """What the run card shows of a model's origin: its identity without architecture configs.

    Weight hashes, hub repo and resolved revision, pretrained tag, adapter hashes (a LoRA's
    ``base`` is shown the same way); the configs are in the fingerprint, too long to show.
    """
    return {
        key: provenance(value) if key == "base" and isinstance(value, dict) else value
        for key, value in identity.items()
        if key not in ("config", "preprocess_cfg")
    }


def short_hash(obj: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-able object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def repr_id(obj: Any) -> str:
    """Hash of an object's repr with memory addresses removed (stable across processes)."""
    return short_hash(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj)))


def features(output: Any) -> torch.Tensor:
    """A tower's output: a tensor, or (transformers 5) a ModelOutput whose pooler_output it is."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot find the embeddings in a {type(output).__name__}")
    return pooled


# Texts tokenized at once: the untruncated id lists of long captions are large in Python.
_TOKENIZE_CHUNK = 512


class TwoTowerScorer:
    """Skeleton of an `EmbeddingScorer`; backends fill in the library calls.

    One text, one encoding: `text_inputs` keys each text by what the text tower is fed under
    the text policy (the token ids of each piece after truncation or chunking), and the engine
    encodes each key once, so two texts that reach the model identically (a negative whose edit
    lies past the window, ``"A cat"`` and ``"a cat"`` for a lower-casing tokenizer) get one
    embedding and score an exact tie, whatever batches they would have fallen in. The ids come
    from `model_input_ids`: the default cuts the backend's ``tokenize_ids`` (untruncated ids,
    special tokens included) to ``max_text_tokens``, which is safe for any library that keeps a
    prefix of the ids (equal keys always mean equal inputs); a backend whose library truncates
    differently (appends an end token after the cut) overrides it with the exact ids it feeds,
    and one with no ``tokenize_ids`` keys texts by themselves (never wrong, only fewer ties).
    """

    kind: Literal["embedding"] = "embedding"

    def __init__(
        self,
        *,
        spec: str,
        device: torch.device,
        precision: Precision,
        text_policy: TextPolicy,
        max_text_tokens: int,
        logit_scale: float,
        logit_bias: float | None,
        fingerprint: str,
        preprocess_id: str,
    ) -> None:
        self.spec = spec
        self.device = device
        self.precision: Precision = precision
        self.text_policy: TextPolicy = check_policy(text_policy)
        self.max_text_tokens = max_text_tokens
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self._fingerprint = fingerprint
        self._preprocess_id = preprocess_id
        self.provenance: dict[str, Any] = {}  # set by backends: see `provenance`
        self._dim: int | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(spec={self.spec!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, text_policy={self.text_policy!r})"
        )

    # -- what backends supply -----------------------------------------------------------------
    # PIL -> pixel tensor. An attribute holding the library's transform (not a method), so
    # DataLoader workers pickle the small transform and never the model.
    preprocess: Callable[[Image.Image], torch.Tensor]

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """Library forward on ``texts`` with its own truncation at ``max_text_tokens``."""
        raise NotImplementedError

    def _count(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts, special tokens included: by default ``tokenize_ids``'s."""
        tokenize = getattr(self, "tokenize_ids", None)
        if tokenize is None:
            raise NotImplementedError
        return [len(ids) for ids in tokenize(texts)]

    # -- the protocol ---------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def preprocess_id(self) -> str:
        return self._preprocess_id

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._counts(texts)

    def _counts(self, texts: Sequence[str]) -> list[int]:
        """``_count`` a slice at a time: a gallery's untruncated id lists are large in Python."""
        texts = list(texts)
        out: list[int] = []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            out.extend(self._count(texts[start : start + _TOKENIZE_CHUNK]))
        return out

    def model_input_ids(self, pieces: Sequence[str]) -> list[list[int]] | None:
        """Token ids the text tower is fed for each piece (within the limit), or None.

        Default: ``tokenize_ids`` cut to ``max_text_tokens`` (see the class doc); None when the
        backend has no ``tokenize_ids``. Override with the library's own truncating tokenizer
        where it differs from a plain prefix.
        """
        tokenize = getattr(self, "tokenize_ids", None)
        if tokenize is None:
            return None
        return [list(ids[: self.max_text_tokens]) for ids in tokenize(list(pieces))]

    def text_inputs(self, texts: Sequence[str], *, policy: TextPolicy | None = None) -> TextInputs:
        """Each text's model-input key under ``policy`` (the engine's dedup key), its
        untruncated token count and whether the policy cut it (see the class doc)."""
        texts = list(texts)
        parts = [
            self._text_inputs(texts[start : start + _TOKENIZE_CHUNK], policy=policy)
            for start in range(0, len(texts), _TOKENIZE_CHUNK)
        ]
        return TextInputs(
            keys=[k for p in parts for k in p.keys],
            n_tokens=[n for p in parts for n in p.n_tokens],
            cut=[c for p in parts for c in p.cut],
        )

    def _text_inputs(self, texts: Sequence[str], *, policy: TextPolicy | None) -> TextInputs:
        plan = self._plan(texts, policy)
        ids = self.model_input_ids(plan.pieces) if plan.pieces else []
        if ids is None:
            piece_keys = ["text:" + piece for piece in plan.pieces]
        else:
            piece_keys = ["ids:" + ",".join(map(str, row)) for row in ids]
        per_text: list[list[str]] = [[] for _ in plan.n_tokens]
        for owner, key in zip(plan.owners, piece_keys, strict=True):
            per_text[owner].append(key)
        # A chunk-mean text is its pieces, in order (a JSON list: unambiguous).
        keys = [json.dumps(parts, ensure_ascii=False) for parts in per_text]
        return TextInputs(keys=keys, n_tokens=list(plan.n_tokens), cut=list(plan.cut))

    def _plan(self, texts: Sequence[str], policy: TextPolicy | None) -> TextPlan:
        """The pieces ``policy`` (default: the scorer's) makes of ``texts`` at the model's limit."""
        return plan_texts(
            texts,
            policy=self.text_policy if policy is None else policy,
            limit=self.max_text_tokens,
            count=self._counts,
            model=self.spec,
        )

    def text_cut(self, texts: Sequence[str], *, policy: TextPolicy | None = None) -> list[bool]:
        """Whether ``policy`` (default: the scorer's) drops tokens of each text."""
        plan = self._plan(texts, policy)
        return plan.cut

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        import torch

        with torch.inference_mode(), autocast(self.device, self.precision):
            yield

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        with self._running():
            # non_blocking: the engine hands pinned batches on CUDA, so the copy overlaps.
            out = features(self._image_features(pixels.to(self.device, non_blocking=True)))
        return F.normalize(out.float(), dim=-1).cpu()

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch

        if not images:
            return torch.zeros((0, self._embed_dim()), dtype=torch.float32)
        return self.encode_pixels(torch.stack([self.preprocess(im) for im in images]))

    def encode_texts(
        self, texts: Sequence[str], *, policy: TextPolicy | None = None
    ) -> TextEncoding:
        import torch
        import torch.nn.functional as F

        plan = self._plan(texts, policy)
        if not plan.pieces:
            empty = torch.zeros((0, self._embed_dim()), dtype=torch.float32)
            return TextEncoding(embeddings=empty, n_tokens=[], cut=[])
        with self._running():
            out = features(self._text_features(plan.pieces))
        pieces = F.normalize(out.float(), dim=-1).cpu()
        embeddings = pool_pieces(pieces, plan.owners, len(plan.n_tokens))
        return TextEncoding(embeddings=embeddings, n_tokens=plan.n_tokens, cut=plan.cut)

    def logits(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        import torch

        img = image_embeddings.to(device="cpu", dtype=torch.float32)
        txt = text_embeddings.to(device="cpu", dtype=torch.float32)
        # In place: a retrieval strip is ~100 MB, and the same IEEE operations either way.
        out = img @ txt.T
        out.mul_(self.logit_scale)
        if self.logit_bias is not None:
            out.add_(self.logit_bias)
        return out

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        return self.logits(self.encode_images(images), self.encode_texts(texts).embeddings)

    def _embed_dim(self) -> int:
        """Embedding size (for empty inputs), from one encoded empty text."""
        if self._dim is None:
            self._dim = int(self.encode_texts([""], policy="truncate").embeddings.shape[1])
        return self._dim
