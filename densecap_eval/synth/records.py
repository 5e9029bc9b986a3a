"""One synthetic image -> one DCI record (the dict written to complete/<name>.json).

Random streams are derived from (seed, image index, purpose) only, so any image can be made on
its own, in any order, and the same seed gives the same bytes.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from densecap_eval.synth.language import (
    choose_summary_count,
    entry_texts,
    extra_caption,
    mask_text,
    negatives_for,
    pseudo_clip_score,
    short_caption,
)
from densecap_eval.synth.scene import Scene, build_scene

TWIN_PERIOD = 8
"""Images whose index is 6 or 7 modulo 8 are twins: same plan, different details."""

_PLAN, _DETAIL, _TEXT = 0, 1, 2


def _rng(seed: int, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, purpose])


def scene_for(seed: int, index: int, *, width: int = 640, height: int = 480) -> Scene:
    """The scene of image ``index`` for ``seed`` (twins share their plan stream)."""
    slot = index % TWIN_PERIOD
    twin = slot - (TWIN_PERIOD - 2) if slot >= TWIN_PERIOD - 2 else -1
    plan_index = index - slot + TWIN_PERIOD - 2 if twin >= 0 else index
    return build_scene(
        _rng(seed, plan_index, _PLAN),
        _rng(seed, index, _DETAIL),
        width=width,
        height=height,
        twin=twin,
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_mask(mask: np.ndarray) -> str:
    """Base64 PNG of a binary mask at full photo size: 1-bit greyscale (decodes as mode "1").

    Written directly (packbits + zlib) because Pillow's PNG encoder costs ~0.7 ms per mask, which
    dominated generation; the output is a standard PNG and identical across Pillow versions.
    """
    height, width = mask.shape
    rows = np.packbits(mask, axis=1)
    raw = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # filter byte 0 per row
    raw[:, 1:] = rows
    png = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)),
            _chunk(b"IEND", b""),
        )
    )
    return base64.b64encode(png).decode("ascii")


def build_record(scene: Scene, *, photo: str, seed: int, index: int) -> dict[str, Any]:
    """The DCI record of a scene, field for field as in the release (see docs/protocols/dci.md)."""
    rng = _rng(seed, index, _TEXT)
    mask_data: dict[str, dict[str, Any]] = {}
    for node in scene.nodes:
        label, caption = mask_text(scene, node)
        left, top, right, bottom = node.bounds
        mask_data[str(node.idx)] = {
            "idx": node.idx,
            "outer_mask": encode_mask(node.mask),
            "mask_quality": node.quality,
            "label": label,
            "caption": caption,
            "parent": node.parent,
            "requirements": list(node.children),
            "bounds": {"topLeft": {"x": left, "y": top}, "bottomRight": {"x": right, "y": bottom}},
            "area": node.area,
        }
    summaries: dict[str, str | list[str]] = {}
    negatives: dict[str, dict[str, list[str]]] = {}
    clip_scores: dict[str, dict[str, float]] = {}
    for key, entry in entry_texts(scene, rng).items():
        n = choose_summary_count(rng, len(entry.templates))
        texts = [t.render() for t in entry.templates[:n]]
        summaries[key] = texts[0] if n == 1 else texts
        negs = negatives_for(scene, entry.templates[0], rng)
        negatives[key] = negs
        salt = f"{seed}/{index}/{key}"
        scores = {"sum": pseudo_clip_score(texts[0], entry.truth, salt)}
        for kind, cands in negs.items():
            for i, text in enumerate(cands):
                scores[f"{kind}_{i}"] = pseudo_clip_score(text, entry.truth, salt)
        clip_scores[key] = scores
    return {
        "image": photo,
        "short_caption": short_caption(scene),
        "extra_caption": extra_caption(scene, rng),
        "mask_data": mask_data,
        "mask_keys": list(mask_data),
        "summaries": summaries,
        "negatives": negatives,
        "clip_scores": clip_scores,
    }
