"""Random-noise test photos shared by the scorer and VLM tests (seeded: same seed, same pixels)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def noise_image(seed: int, size: tuple[int, int] = (40, 32)) -> Image.Image:
    """An RGB photo of uniform noise, ``size`` = (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def images(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` noise photos cycling through three shapes (tall, square, wide)."""
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (32, 32), (64, 20)]
    return [
        Image.fromarray(rng.integers(0, 255, (*sizes[i % 3], 3), dtype=np.uint8)) for i in range(n)
    ]
