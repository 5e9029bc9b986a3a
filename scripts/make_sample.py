#!/usr/bin/env python3
"""Regenerate the bundled synthetic DCI sample in data/sample/ (run from anywhere).

    python scripts/make_sample.py

Same as `densecap-eval synth data/sample --images 24 --seed 2024 --split-sizes 12,2,10
--overwrite`; the output is byte-identical for a given seed, so a diff after running this means
the generator changed.
"""

from __future__ import annotations

from pathlib import Path

from densecap_eval.synth import generate_dci

SEED = 2024
IMAGES = 24
SPLIT_SIZES = (12, 2, 10)  # a 10-image test split gives the DCI subtests a few dozen entries
JPEG_QUALITY = 90
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def main() -> None:
    result = generate_dci(
        SAMPLE,
        images=IMAGES,
        seed=SEED,
        split_sizes=SPLIT_SIZES,
        jpeg_quality=JPEG_QUALITY,
        overwrite=True,
    )
    print(f"wrote {result.splits} to {SAMPLE} ({result.bytes_written / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
