"""The zero-shot protocols a run can name (``--protocol``), and what each changes.

- ``default``: each task's own semantics with the model's own image preprocessing and tokenizer
  (for ELEVATER tasks: ELEVATER's classifier, scale, softmax and metric).
- ``elevater-dci``: the DCI suite's ELEVATER run exactly: images resized (shorter side, bicubic)
  and centre-cropped to 224, normalised with ImageNet's mean and std (DCI's ``custom_clip.yaml``),
  and prompts cleaned as ELEVATER's tokenizer cleans them (ftfy, HTML unescaped twice,
  whitespace collapsed, lower-cased) before the model's tokenizer sees them. ELEVATER truncates a
  prompt past 77 tokens without putting EOT back; none of the 20 datasets' 9,938 prompts comes
  near that (the longest is 28 tokens), so the model's own truncation is never reached.
- ``clip_benchmark``: CLIP_benchmark's protocol, which is defined on its own ``wds`` copies (their
  class names, ``{c}`` templates and splits): ``elevater`` and ``elevater/<key>`` run as
  ``clip_benchmark`` and ``clip_benchmark/<key>`` (`protocol_task`; the run layer's
  ``run/protocols.py`` applies it). Hateful Memes and Food-101 have no CLIP_benchmark copy.

A ``clip_benchmark/<key>`` task is CLIP_benchmark's protocol whatever the run's: ``default``
runs it as always, ``elevater-dci`` refuses it (`check_protocol`).

`protocol_scorer` wraps a scorer for the scoring phase; the preprocessing identity it reports
keys the image cache, so the two protocols never share an image embedding.
"""

from __future__ import annotations

import hashlib
import html
import re
from typing import TYPE_CHECKING, Any

from densecap_eval.core.config import PROTOCOLS
from densecap_eval.datasets.elevater.photos import ELEVATER_SIZE

if TYPE_CHECKING:
    from densecap_eval.scorers.base import Scorer

__all__ = [
    "ELEVATER_PROTOCOLS",
    "PROTOCOLS",
    "ElevaterDCIView",
    "elevater_clean",
    "elevater_transform",
    "protocol_scorer",
    "protocol_task",
]

# The protocols an ``elevater/<key>`` task itself runs (``clip_benchmark`` runs other tasks).
ELEVATER_PROTOCOLS: tuple[str, ...] = ("default", "elevater-dci")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def elevater_clean(text: str) -> str:
    """ELEVATER's ``SimpleTokenizer`` text cleaning, before byte-pair encoding."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def elevater_transform(size: int = ELEVATER_SIZE) -> Any:
    """ELEVATER's test transform with DCI's ImageNet statistics (picklable for the workers)."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip


def _model_size(scorer: Any) -> int:
    """The square input size the model's own preprocessing produces."""
    from PIL import Image

    return int(scorer.preprocess(Image.new("RGB", (256, 256))).shape[-1])


class ElevaterDCIView:
    """A scorer seen through DCI's ELEVATER preprocessing (ImageNet statistics, 224 px, or the
    model's own size when it takes another); everything else is the scorer's."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer
        size = _model_size(scorer)
        self.preprocess = elevater_transform(size)
        ident = f"{scorer.preprocess_id}|elevater-dci|{size}|{IMAGENET_MEAN}|{IMAGENET_STD}"
        self.preprocess_id = hashlib.sha256(ident.encode()).hexdigest()[:16]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)


def protocol_scorer(scorer: Scorer, protocol: str) -> Any:
    """``scorer`` as the protocol scores with it (itself for ``default``)."""
    if protocol == "elevater-dci":
        if scorer.kind != "embedding":
            from densecap_eval.core.config import ConfigError

            raise ConfigError(
                f"--protocol elevater-dci needs an embedding scorer, not {scorer.spec}"
            )
        return ElevaterDCIView(scorer)
    return scorer


def protocol_task(name: str, protocol: str) -> str:
    """The task ``name`` runs as under ``protocol``: under ``clip_benchmark`` the ELEVATER suite
    and tasks become CLIP_benchmark's (its data, its class names and templates); else ``name``.

    `ConfigError` for an ELEVATER dataset CLIP_benchmark has no copy of.
    """
    if protocol != "clip_benchmark" or not (name == "elevater" or name.startswith("elevater/")):
        return name
    if name == "elevater":
        return "clip_benchmark"
    from densecap_eval.datasets.elevater.wds import CLIP_BENCHMARK_NAMES

    key = name.removeprefix("elevater/")
    if key not in CLIP_BENCHMARK_NAMES:
        from densecap_eval.core.config import ConfigError

        raise ConfigError(
            f"--protocol clip_benchmark: CLIP_benchmark has no copy of {name} (its wds "
            f"collection lacks hateful-memes and food101); run {name} under --protocol default "
            "(ELEVATER's protocol) or elevater-dci"
        )
    return f"clip_benchmark/{key}"


def check_protocol(tasks: list[str], protocol: str) -> None:
    """`ConfigError` when a non-default protocol meets a (concrete) task it does not apply to:
    a task that is not zero-shot, or a zero-shot task of the other protocol family."""
    if protocol == "default":
        return
    from densecap_eval.core.config import ConfigError
    from densecap_eval.tasks import get_task

    for name in tasks:
        task = get_task(name)
        own = getattr(task, "protocol", None)
        if own is None:
            raise ConfigError(
                f"--protocol {protocol} applies to zero-shot tasks only, not {name}; run "
                "it separately"
            )
        takes = ELEVATER_PROTOCOLS if getattr(task, "takes_protocol", False) else (own,)
        if protocol not in takes:
            raise ConfigError(
                f"--protocol {protocol} does not apply to {name}, which runs {own}'s protocol; "
                f"run it under --protocol {' or '.join(takes)}"
            )
