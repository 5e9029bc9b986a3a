"""(image region, caption) pairs from synthetic scenes, for training small CLIP-style models.

Regions are the whole photo, every object, part and background mask (its bounding box padded
by 15% and clamped, as DCI subcrops are). Captions are true statements about the region: the
short caption and summaries for the photo, summary-style phrases for masks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from densecap_eval.synth.language import (
    Template,
    background_templates,
    entry_texts,
    object_templates,
    part_templates,
    short_caption,
)
from densecap_eval.synth.records import scene_for
from densecap_eval.synth.scene import Node, Scene

MIN_CROP = 24


def _crop_box(scene: Scene, node: Node) -> tuple[int, int, int, int]:
    left, top, right, bottom = node.bounds
    pw, ph = int(0.15 * (right - left)), int(0.15 * (bottom - top))
    return (
        max(0, left - pw),
        max(0, top - ph),
        min(scene.width, right + pw),
        min(scene.height, bottom + ph),
    )


def _texts(templates: list[Template], every: bool) -> list[str]:
    rendered = [t.render() for t in templates]
    return rendered if every else rendered[:1]


def scene_pairs(
    scene: Scene, rng: np.random.Generator, *, parts: bool = True, all_captions: bool = True
) -> Iterator[tuple[Image.Image, str]]:
    """Pairs for one scene: the photo, then each usable mask's padded crop."""
    base = entry_texts(scene, rng)["base"]
    yield scene.image, short_caption(scene)
    for text in _texts(base.templates, all_captions):
        yield scene.image, text
    for node in scene.nodes:
        if node.role == "object":
            templates = object_templates(scene, node, rng)
        elif node.role == "part" and parts:
            templates = part_templates(scene, node, rng)
        elif node.role == "background":
            templates = background_templates(scene, node, rng)
        else:
            continue
        box = _crop_box(scene, node)
        if box[2] - box[0] < MIN_CROP or box[3] - box[1] < MIN_CROP:
            continue
        crop = scene.image.crop(box)
        for text in _texts(templates, all_captions):
            yield crop, text


def training_pairs(
    *,
    images: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    start: int = 0,
    parts: bool = True,
    all_captions: bool = True,
) -> Iterator[tuple[Image.Image, str]]:
    """Yield (PIL image region, caption) pairs for images ``start .. start+images-1``.

    Same scenes as `generate_dci` with the same seed and size, so a model can be trained on one
    index range and evaluated on the written release of another. ``all_captions=False`` keeps one
    caption per region.
    """
    for index in range(start, start + images):
        scene = scene_for(seed, index, width=width, height=height)
        rng = np.random.default_rng([seed, index, 3])
        yield from scene_pairs(scene, rng, parts=parts, all_captions=all_captions)
