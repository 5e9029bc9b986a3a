"""Shared pieces of the pair scorers: spec options, devices, fingerprints, text budgets.

Spec options follow the model path after a ``?`` as URL query pairs, e.g.
``captionlik:/models/llava?reduce=sum`` or ``vqascore:DIR?template=Is%20this%20%22{text}%22%3F``
(``&`` inside a value must be written ``%26``). The spec is the only way options come in, so
the spec the run card records says everything. Heavy imports (torch, transformers) happen
inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from densecap_eval.core.batching import BatchBackoff, default_batch_size
from densecap_eval.core.errors import ModelLoadError, TextTooLongError
from densecap_eval.core.hashing import files_sha256

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from densecap_eval.core.config import TextPolicy


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


def option_loader(cls: Any, allowed: Sequence[str]) -> Callable[..., Any]:
    """The registry ``load(spec, device, precision, *, text_policy, batch_size)`` of a pair
    scorer class built as ``cls(spec, path, ..., options=...)``, its ``?opt=value`` options
    being ``allowed``."""

    def load(
        spec: str,
        device: str | None = None,
        precision: str | None = None,
        *,
        text_policy: TextPolicy = "truncate",
        batch_size: int | None = None,
    ) -> Any:
        path, options = split_spec(spec, cls.prefix, allowed)
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


def resolve_device(device: str | None) -> str:
    """The scorers' shared device rule (auto: cuda, mps, cpu; explicit ones checked), as a string."""
    from densecap_eval.scorers.common import resolve_device as resolve

    return str(resolve(device))


def resolve_dtype(precision: str | None, device: str, spec: str) -> tuple[str, torch.dtype]:
    """Precision name and torch dtype: fp32 unless asked, on every device (reference-exact).

    A 7B VLM in fp32 needs ~28 GB; pass ``precision="bf16"`` (``--precision bf16``) to halve it.
    """
    import torch

    if precision is None:
        precision = "fp32"
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in table:
        raise ModelLoadError(f"{spec}: unknown precision {precision!r} (known: fp32, fp16, bf16)")
    return precision, table[precision]


# Files of a model folder whose content changes scores: weights, configs, tokenizer models.
IDENTITY_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.bin", "*.json", "*.model", "*.txt")


def weights_fingerprint(path: str, config: Any, extra: dict[str, Any]) -> str:
    """sha256 of the config, the model files' CONTENT (local folder or hub snapshot), options.

    Content, not names and sizes: weights replaced by others of the same shape change it.
    Hashes are memoised on disk (`densecap_eval.core.hashing`), so the second run only stats files.
    """
    from densecap_eval.scorers.common import hub_weights_identity

    folder = Path(path).expanduser()
    if folder.is_dir():
        files: Any = files_sha256(folder, IDENTITY_PATTERNS)
    else:
        files = hub_weights_identity(path, getattr(config, "_commit_hash", None), IDENTITY_PATTERNS)
    config_dict = {
        k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "_commit_hash")
    }
    h = hashlib.sha256()
    h.update(json.dumps(config_dict, sort_keys=True, default=str).encode())
    h.update(json.dumps(files, sort_keys=True).encode())
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


# -- flags and prefix sharing -----------------------------------------------------------------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag_option(spec: str, name: str, value: str | None, *, default: bool) -> bool:
    """A boolean spec option (``?share_prefix=0``): 1/0, true/false, yes/no, on/off."""
    if value is None:
        return default
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ModelLoadError(f"{spec}: option {name} must be 0 or 1, got {value!r}")


@dataclass
class PrefixSharing:
    """Whether a generative scorer runs the image prefix once per distinct image, and its fallbacks.

    ``off_reason`` says why it is off for the whole scorer (asked off, an unsupported processor, a
    prompt whose caption comes before the image); ``fallbacks`` counts pairs that took the
    per-pair path although it is on, by reason (e.g. the prompt's tokens differ from the prefix's
    at the boundary). The run card records `as_config()` under the scorer's config.
    """

    on: bool
    off_reason: str | None = None
    fallbacks: dict[str, int] = field(default_factory=dict)

    def turn_off(self, reason: str) -> None:
        self.on = False
        self.off_reason = reason

    def fall_back(self, reason: str, n: int = 1) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + n

    def as_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"share_prefix": self.on}
        if self.off_reason is not None:
            out["share_prefix_off"] = self.off_reason
        if self.fallbacks:
            out["share_prefix_fallbacks"] = dict(sorted(self.fallbacks.items()))
        return out


def select_cache_rows(cache: Any, rows: torch.Tensor) -> Any:
    """The KV cache with batch row ``rows[i]`` as row i (a prefix cache expanded over its pairs).

    transformers' `Cache.batch_select_indices` does it per layer in place (keys and values are
    indexed along the batch dimension, so each row is a copy and later appends stay per row).
    """
    cache.batch_select_indices(rows)
    return cache


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


class PairScorerBase:
    """The pair-scorer protocol on top of one method, ``_score_batch(images, texts)``.

    Subclasses set ``budget`` (a `TextBudget`), ``text_policy`` and ``batch_size``. ``score_pairs``
    applies the text policy and scores exactly the pairs it is given in one forward (chunk-mean:
    each chunk is a sequence of that forward and a pair's score is the mean of its chunks'); the
    engine decides how many pairs that is (``--batch-size``) and halves it on out-of-memory.
    ``score``, the full-matrix API for direct use, is the one place a scorer batches on its own:
    pairs sorted by text length, ``batch_size`` pairs per forward, halved on out-of-memory.
    """

    kind: Literal["pair"] = "pair"
    budget: TextBudget
    text_policy: TextPolicy
    batch_size: int

    def _score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def _place(
        self,
        spec: str,
        device: str | None,
        precision: str | None,
        text_policy: TextPolicy,
        batch_size: int | None,
    ) -> None:
        """Device, precision and dtype, text policy and pairs per forward from a loader's
        arguments (the batch size defaults to the device's for pair scorers)."""
        self.device = resolve_device(device)
        self.precision, self.dtype = resolve_dtype(precision, self.device, spec)
        self.text_policy = text_policy
        self.batch_size = batch_size or default_batch_size(self.device, "pair")

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
        """Score pair i = (images[i], texts[i]) in one forward; (n,) float32 on CPU."""
        import torch

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not texts:
            return torch.zeros(0, dtype=torch.float32)
        pieces, owner, _ = policy_pieces(self.budget, texts, policy or self.text_policy)
        values = self._score_batch([images[i] for i in owner], pieces).detach().float().cpu()
        if len(pieces) == len(texts):
            return values
        return mean_by_owner(values, owner, len(texts))

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """(len(images), len(texts)) scores of every combination, as pairs."""
        import torch

        n_texts = len(texts)
        n = len(images) * n_texts
        out = torch.zeros(n, dtype=torch.float32)
        if n == 0:
            return out.reshape(len(images), n_texts)
        lengths = self.count_tokens(texts)
        # Pair i is (images[i // n_texts], texts[i % n_texts]); similar lengths share a forward.
        order = sorted(range(n), key=lambda i: (lengths[i % n_texts], i))

        def run(a: int, b: int) -> torch.Tensor:
            idx = order[a:b]
            return self.score_pairs(
                [images[i // n_texts] for i in idx], [texts[i % n_texts] for i in idx]
            )

        for a, b, values in BatchBackoff(self.batch_size, what="pairs").run(n, run):
            out[torch.as_tensor(order[a:b], dtype=torch.long)] = values
        return out.reshape(len(images), n_texts)


# -- loading requirements and image preprocessing once per image ------------------------------

# The VLM scorers rely on transformers 5 processors (`ProcessorMixin` calls with one image list
# per prompt, `Cache.batch_select_indices`, `AutoModelForImageTextToText` for every family here).
MIN_TRANSFORMERS = "5.0"


def check_transformers(spec: str) -> None:
    """A one-line `ModelLoadError` when the installed transformers is older than the VLM code needs."""
    import transformers

    major = int(str(transformers.__version__).split(".", 1)[0])
    if major < int(MIN_TRANSFORMERS.split(".", 1)[0]):
        raise ModelLoadError(
            f"{spec}: the VLM scorers need transformers>={MIN_TRANSFORMERS}, "
            f"found {transformers.__version__} (pip install -U 'transformers>={MIN_TRANSFORMERS}')"
        )


def read_model_config(spec: str, path: str) -> tuple[str, Any]:
    """Where to load ``path`` from (a local folder, else the hub id) and its transformers config.

    A path that looks local (``.``, ``/``, ``~``) or exists must be a folder: a clear error rather
    than the hub lookup a missing folder would fall through to.
    """
    from transformers import AutoConfig

    local = Path(path).expanduser()
    if (path.startswith((".", "/", "~")) or local.exists()) and not local.is_dir():
        raise ModelLoadError(f"{spec}: model directory {local} does not exist")
    source = str(local) if local.is_dir() else path
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{spec}: cannot read the model config: {exc}") from exc
    return source, config


def missing_package_error(spec: str, exc: ImportError) -> ModelLoadError:
    """One line naming the package a processor or model needs (e.g. SmolVLM's ``num2words``)."""
    name = exc.name or next(iter(re.findall(r"`([A-Za-z0-9_.-]+)`", str(exc))), None)
    what = f"the package {name!r}" if name else "a package that is not installed"
    hint = f" (pip install {name})" if name else ""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ModelLoadError(f"{spec}: the model's processor needs {what}{hint}: {detail}")


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """``image`` centred on a square canvas of ``fill`` colour (LLaVA's ``image_aspect_ratio=pad``)."""
    from PIL import Image

    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), fill)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


class ImageDedup:
    """Runs a processor's image processor once per distinct image of a call, whatever the family.

    While active (``with dedup.active(processor):``) the processor's ``image_processor`` is a
    stand-in that processes each distinct image (by content) alone and assembles the outputs in
    the order asked: tensors and arrays concatenated along the batch dimension (zero-padded to the
    largest trailing shape, as the image processors pad a batch), lists concatenated. Processors
    that override ``__call__`` (InternVL, Gemma 3, Idefics3, Llama 3.2 Vision, PaliGemma) call
    their image processor the same way, so every family gets it. Outputs that cannot be assembled
    make it call the real image processor on the whole list (counted all the same).
    ``processed`` counts the images that went through the real image processor.
    """

    def __init__(self) -> None:
        self.processed = 0
        self.enabled = True
        self._cache: dict[Any, Any] | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within it, an image processed once is not processed again by a later processor call
        with the same arguments (a batch's shared prefixes, then its pairs that fall back)."""
        self._cache = {}
        try:
            yield
        finally:
            self._cache = None

    @contextmanager
    def active(self, processor: Any) -> Iterator[None]:
        """The processor's image processor deduplicates (or, when not ``enabled``, only counts)."""
        real = processor.image_processor
        processor.image_processor = _DedupCall(real, self)
        try:
            yield
        finally:
            processor.image_processor = real


class _Delegate:
    def __init__(self, real: Any) -> None:
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _flatten(images: Any) -> tuple[list[Any], bool]:
    """(flat list of images, whether they came one list per prompt)."""
    if isinstance(images, (list, tuple)):
        if images and all(isinstance(x, (list, tuple)) for x in images):
            return [im for sub in images for im in sub], True
        return list(images), False
    return [images], False


class _DedupCall(_Delegate):
    def __init__(self, real: Any, owner: ImageDedup) -> None:
        super().__init__(real)
        object.__setattr__(self, "_owner", owner)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        from PIL import Image

        flat, nested = _flatten(images)
        if not self._owner.enabled:
            self._owner.processed += len(flat)
            return self._real(images, *args, **kwargs)
        shaped = isinstance(images, (list, tuple)) and (
            not nested or all(len(sub) == 1 for sub in images)
        )
        if not shaped or not all(isinstance(im, Image.Image) for im in flat):
            self._owner.processed += len(flat)
            return self._real(images, *args, **kwargs)
        uniq, inverse = unique_images(flat)
        outs = [self._one(u, nested, args, kwargs) for u in uniq]
        try:
            return _assemble(outs, inverse)
        except (TypeError, ValueError, RuntimeError):
            self._owner.processed += len(flat)
            return self._real(images, *args, **kwargs)

    def _one(self, image: Any, nested: bool, args: Any, kwargs: dict[str, Any]) -> Any:
        cache = self._owner._cache
        key = (image_key(image), nested, repr(args), repr(sorted(kwargs.items())))
        if cache is not None and key in cache:
            return cache[key]
        out = self._real([[image]] if nested else [image], *args, **kwargs)
        self._owner.processed += 1
        if cache is not None:
            cache[key] = out
        return out


def _assemble(outs: list[Any], inverse: Sequence[int]) -> Any:
    """Per-image outputs (one image each) joined into the batch output for ``inverse``'s order."""
    import numpy as np
    import torch

    first = outs[0]
    data: dict[str, Any] = {}
    for key in first:
        values = [outs[i][key] for i in inverse]
        v0 = values[0]
        if isinstance(v0, torch.Tensor):
            data[key] = _cat_padded(values)
        elif isinstance(v0, np.ndarray):
            data[key] = _cat_padded([torch.from_numpy(v) for v in values]).numpy()
        elif isinstance(v0, list):
            data[key] = [x for v in values for x in v]
        else:
            raise TypeError(f"cannot join image-processor output {key!r}")
    return first.__class__(data, tensor_type=None)


def _cat_padded(values: list[Any]) -> Any:
    import torch

    if any(v.dim() != values[0].dim() for v in values) or values[0].dim() == 0:
        raise ValueError("image-processor outputs of different ranks")
    shape = [max(int(v.shape[d]) for v in values) for d in range(1, values[0].dim())]
    padded = []
    for v in values:
        if list(v.shape[1:]) != shape:
            out = v.new_zeros((v.shape[0], *shape))
            out[tuple(slice(0, s) for s in v.shape)] = v
            v = out
        padded.append(v)
    return torch.cat(padded, dim=0)
