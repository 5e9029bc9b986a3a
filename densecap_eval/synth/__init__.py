"""Synthetic DCI: procedurally drawn scenes written in the exact DCI release layout.

There is no CLIP model offline, so ``clip_scores`` are stand-ins: a deterministic function of
word overlap between a text and the entry's true facts plus seeded noise (see
`language.pseudo_clip_score`). They order negatives plausibly for the ``hardest`` strategy; they
are not CLIP logits. Summaries and negatives are templated, not LLM-written, and negatives are
false by construction (see language.py).

    from densecap_eval.synth import generate_dci
    generate_dci("out", images=24, seed=0)
"""

from __future__ import annotations

from densecap_eval.synth.records import build_record, encode_mask, scene_for
from densecap_eval.synth.vocab import (
    BACKGROUNDS,
    COLORS,
    OBJECT_KINDS,
    PART_KINDS,
    PLACEMENTS,
    POSITIONS,
    RELATIONS,
    TEXTURES,
    vocabulary,
)
from densecap_eval.synth.writer import (
    SynthError,
    SynthResult,
    default_split_sizes,
    generate_dci,
)

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "OBJECT_KINDS",
    "PART_KINDS",
    "PLACEMENTS",
    "POSITIONS",
    "RELATIONS",
    "TEXTURES",
    "SynthError",
    "SynthResult",
    "build_record",
    "default_split_sizes",
    "encode_mask",
    "generate_dci",
    "scene_for",
    "vocabulary",
]
