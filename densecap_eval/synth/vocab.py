"""The closed vocabulary of synthetic scenes: colours, objects, parts, backgrounds, relations.

Everything the generator can draw or say is listed here, so a model trained on its output (the
bundled tiny CLIP) and the tests can enumerate what there is to learn.
"""

from __future__ import annotations

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 215, 40),
    "green": (50, 165, 60),
    "blue": (40, 75, 215),
    "purple": (135, 60, 185),
    "pink": (245, 135, 190),
    "brown": (125, 80, 40),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
    "gray": (130, 130, 130),
    "cyan": (60, 200, 220),
}
"""Colour names and their nominal RGB (drawn with a small per-image jitter)."""

TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
"""Surface patterns of object bodies; "plain" is never said."""

OBJECT_KINDS: tuple[str, ...] = (
    "house",
    "car",
    "tree",
    "kite",
    "flag",
    "ball",
    "box",
    "bottle",
    "lamp",
)
OUTDOOR_KINDS: tuple[str, ...] = ("house", "car", "tree", "kite", "flag", "ball", "box")
INDOOR_KINDS: tuple[str, ...] = ("ball", "box", "bottle", "lamp", "kite")

PART_KINDS: dict[str, tuple[str, ...]] = {
    "house": ("roof", "door", "window"),
    "car": ("window", "wheel"),
    "tree": ("trunk", "apple"),
    "kite": ("stripe", "tail"),
    "flag": ("pole", "stripe"),
    "ball": ("stripe",),
    "box": ("lid", "label"),
    "bottle": ("cap", "label"),
    "lamp": ("pole", "base"),
}
"""The parts each object kind is drawn with (a part may occur more than once, e.g. wheels)."""

ALL_PART_KINDS: tuple[str, ...] = tuple(sorted({p for ps in PART_KINDS.values() for p in ps}))
DISTRACTOR_PARTS: tuple[str, ...] = ("chimney", "handle", "sail", "bell", "ribbon", "button")
"""Part nouns never drawn: object-replacement negatives for parts may use them."""

BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "sky": ("blue", "cyan", "orange", "pink", "gray"),
    "grass": ("green",),
    "sand": ("yellow", "orange"),
    "snow": ("white",),
    "road": ("gray", "black"),
    "wall": ("white", "yellow", "pink", "cyan", "gray", "purple"),
    "floor": ("brown", "gray", "white", "orange"),
}
"""Background regions and the colours each may take."""

GROUNDS_OUTDOOR: tuple[str, ...] = ("grass", "sand", "snow", "road")
SETTINGS: dict[str, tuple[str, str]] = {"outdoor": ("sky", "ground"), "indoor": ("wall", "floor")}

POSITIONS: tuple[str, ...] = ("on the left", "in the middle", "on the right")
"""Where an object's visible centre lies, by thirds of the photo's width."""

PLACEMENTS: tuple[str, ...] = (
    "at the top",
    "at the bottom",
    "on the left side",
    "on the right side",
)
"""Where a part lies inside its object."""

RELATIONS: tuple[str, ...] = (
    "to the left of",
    "to the right of",
    "above",
    "below",
    "in front of",
    "behind",
)

FLIPS: dict[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
    "in front of": "behind",
    "behind": "in front of",
    "on the left": "on the right",
    "on the right": "on the left",
    "at the top": "at the bottom",
    "at the bottom": "at the top",
    "on the left side": "on the right side",
    "on the right side": "on the left side",
}
"""Layout words and their opposites; "in the middle" flips to either side (see language.py)."""

SIZES: tuple[str, ...] = ("small", "medium-sized", "large")

_IRREGULAR_PLURALS = {"box": "boxes", "glass": "glasses"}

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six")


def plural(noun: str) -> str:
    """English plural of a vocabulary noun."""
    return _IRREGULAR_PLURALS.get(noun, noun + "s")


def vocabulary() -> dict[str, tuple[str, ...]]:
    """Every word class a model should learn from synthetic data, by name."""
    return {
        "colors": tuple(COLORS),
        "textures": TEXTURES,
        "objects": OBJECT_KINDS,
        "parts": ALL_PART_KINDS,
        "backgrounds": tuple(BACKGROUNDS),
        "positions": POSITIONS,
        "placements": PLACEMENTS,
        "relations": RELATIONS,
    }
