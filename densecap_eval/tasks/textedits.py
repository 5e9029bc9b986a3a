"""Rule-based, seeded negatives of a caption: one small checkable edit each (no model).

`generate_negatives(text, seed=...)` returns `Edit` items, at most ``per_kind`` of each kind:

- ``color``: a colour word replaced by another colour (``red`` -> ``blue``).
- ``number``: a count replaced by another (``two`` -> ``four``, ``3`` -> ``5``); number words
  ``two`` .. ``twelve`` only, so the noun's plural stays right (``one`` is also a pronoun).
- ``spatial``: a spatial word flipped (``left`` <-> ``right``, ``above`` <-> ``below``, ``in front
  of`` <-> ``behind``, ``top`` <-> ``bottom`` ...).
- ``object``: an object noun replaced by another of the lexicon, singular or plural kept.
- ``binding``: the attributes of two objects of one sentence swapped (``a red car and a blue
  bus`` -> ``a blue car and a red bus``): two attributes of one class (colour, size, material),
  different values, each before a different head word.

Every occurrence is a candidate and the one edited is drawn at random among all of them, so
edits late in a long caption are as likely as early ones. Each kind draws from its own
``random.Random`` seeded from (``seed``, kind) with sha256 (`stable_seed`), so the output is the
same on every machine and Python version, and adding a kind never changes another kind's edits.
A dataset task derives each record's seed from (run seed, record id) with `stable_seed` too.

An `Edit` records its kind, the negative, the character span it changed in the original
(``start``, ``end``), the replaced and replacing strings and the whitespace-word index of the
first change (a model-neutral position; a task measures the position in a model's own tokens).
Construction checks that the negative differs from the text and equals it outside the span.

Matching is by lexicon and word boundaries, case-insensitive; replacements take the case of
the word they replace. Part-of-speech tagging (spaCy) is not used: the lexicons are small and
closed, so a word matches only as the part of speech it is listed as, apart from rare
homographs (``sign`` the verb); the binding swap's head word is any word that is not an
attribute or a function word.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

EDIT_KINDS: tuple[str, ...] = ("color", "number", "spatial", "object", "binding")

COLORS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "grey",
    "cyan",
    "beige",
    "silver",
    "gold",
    "violet",
    "turquoise",
)
_SAME_COLOR = {"gray": "grey", "grey": "gray"}  # spellings of one colour: never each other's edit

NUMBER_WORDS: tuple[str, ...] = (
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
_NUMBER_SPREAD = 3  # a count changes by 1 .. 3

# Spatial words and their opposites; phrases are matched before their words.
SPATIAL_FLIPS: dict[str, str] = {
    "in front of": "behind",
    "behind": "in front of",
    "far from": "near",
    "near": "far from",
    "leftmost": "rightmost",
    "rightmost": "leftmost",
    "left": "right",
    "right": "left",
    "above": "below",
    "below": "above",
    "beneath": "above",
    "underneath": "above",
    "top": "bottom",
    "bottom": "top",
    "upper": "lower",
    "lower": "upper",
    "inside": "outside",
    "outside": "inside",
    "over": "under",
    "under": "over",
}

OBJECT_NOUNS: tuple[str, ...] = (
    "person",
    "man",
    "woman",
    "boy",
    "girl",
    "child",
    "dog",
    "cat",
    "bird",
    "horse",
    "cow",
    "car",
    "bus",
    "truck",
    "bicycle",
    "motorcycle",
    "boat",
    "train",
    "airplane",
    "tree",
    "flower",
    "plant",
    "house",
    "building",
    "window",
    "door",
    "table",
    "chair",
    "bench",
    "bed",
    "lamp",
    "bottle",
    "cup",
    "plate",
    "bowl",
    "book",
    "ball",
    "box",
    "kite",
    "flag",
    "sign",
    "pole",
    "fence",
    "wall",
    "road",
    "cloud",
    "mountain",
    "rock",
    "roof",
    "wheel",
    "hat",
    "shirt",
    "bag",
    "umbrella",
    "clock",
    "apple",
    "trunk",
    "lid",
    "label",
)
_IRREGULAR_PLURALS: dict[str, str] = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
}

ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "color": COLORS,
    "size": ("small", "large", "big", "tiny", "huge", "tall", "short", "long"),
    "material": ("wooden", "metal", "metallic", "glass", "plastic", "stone", "brick", "paper"),
}
# Words that cannot be the head an attribute binds to.
_FUNCTION_WORDS = frozenset(
    "a an the and or but of with in on at to for from by is are was were be been it its "
    "this that these those there their his her as than then while which who".split()
)


def plural(noun: str) -> str:
    """English plural of a lexicon noun."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from ``parts`` via sha256 of their ``str`` joined by U+001F (not hash())."""
    key = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


@dataclass(frozen=True, slots=True)
class Edit:
    """One negative of ``source``: ``source[start:end]`` (``before``) became ``after``."""

    kind: str
    source: str
    text: str  # the negative
    start: int  # first changed character, in the source (and the negative)
    end: int  # end of the changed span in the source (exclusive)
    before: str
    after: str
    word_index: int  # whitespace-separated words of the source before ``start``

    def __post_init__(self) -> None:
        src, neg = self.source, self.text
        if neg == src:
            raise ValueError(f"{self.kind} edit leaves the text unchanged at {self.start}")
        if src[self.start : self.end] != self.before or neg[: self.start] != src[: self.start]:
            raise ValueError(f"{self.kind} edit: span {self.start}:{self.end} does not match")
        tail = self.start + len(self.after)
        if neg[self.start : tail] != self.after or neg[tail:] != src[self.end :]:
            raise ValueError(f"{self.kind} edit: the negative differs outside its span")

    def meta(self) -> dict[str, Any]:
        """What a `Text`'s ``meta`` keeps of the edit (the source is the positive itself)."""
        return {
            "edit_kind": self.kind,
            "edit_start": self.start,
            "edit_end": self.end,
            "edit_before": self.before,
            "edit_after": self.after,
            "edit_word_index": self.word_index,
        }


# ------------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class _Change:
    start: int
    end: int
    after: str


def _words_pattern(words: Sequence[str]) -> re.Pattern[str]:
    ordered = sorted(set(words), key=lambda w: (-len(w), w))  # phrases before their words
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in ordered)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def _key(word: str) -> str:
    return " ".join(word.lower().split())


def _cased(like: str, word: str) -> str:
    """``word`` in the case of ``like`` (all caps, capitalised or lower)."""
    if len(like) > 1 and like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


_COLOR_RE = _words_pattern(COLORS)
_NUMBER_WORD_RE = _words_pattern(NUMBER_WORDS)
_DIGITS_RE = re.compile(r"(?<![\w.,-])\d{1,4}(?![\w-]|[.,]\d)")
_SPATIAL_RE = _words_pattern(list(SPATIAL_FLIPS))
_NOUN_FORMS: dict[str, tuple[str, bool]] = {
    **{n: (n, False) for n in OBJECT_NOUNS},
    **{plural(n): (n, True) for n in OBJECT_NOUNS},
}
_NOUN_RE = _words_pattern(list(_NOUN_FORMS))
_ATTRIBUTE_CLASS: dict[str, str] = {
    w: cls for cls, words in ATTRIBUTE_CLASSES.items() for w in words
}
_ATTRIBUTE_RE = re.compile(
    _words_pattern(list(_ATTRIBUTE_CLASS)).pattern + r"\s+([A-Za-z]+)", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"[.!?;:\n]")


def _color_changes(text: str) -> list[Callable[[random.Random], _Change]]:
    def change(m: re.Match[str]) -> Callable[[random.Random], _Change]:
        def draw(rng: random.Random) -> _Change:
            same = {_key(m.group()), _SAME_COLOR.get(_key(m.group()), "")}
            new = rng.choice([c for c in COLORS if c not in same])
            return _Change(m.start(), m.end(), _cased(m.group(), new))

        return draw

    return [change(m) for m in _COLOR_RE.finditer(text)]


def _number_changes(text: str) -> list[Callable[[random.Random], _Change]]:
    def word(m: re.Match[str]) -> Callable[[random.Random], _Change]:
        def draw(rng: random.Random) -> _Change:
            i = NUMBER_WORDS.index(_key(m.group()))
            lo, hi = max(0, i - _NUMBER_SPREAD), min(len(NUMBER_WORDS), i + _NUMBER_SPREAD + 1)
            new = rng.choice([w for j, w in enumerate(NUMBER_WORDS[lo:hi], lo) if j != i])
            return _Change(m.start(), m.end(), _cased(m.group(), new))

        return draw

    def digits(m: re.Match[str]) -> Callable[[random.Random], _Change]:
        def draw(rng: random.Random) -> _Change:
            value = int(m.group())
            options = [value + d for d in range(-_NUMBER_SPREAD, _NUMBER_SPREAD + 1)]
            new = rng.choice([v for v in options if v >= 2 and v != value])
            return _Change(m.start(), m.end(), str(new))

        return draw

    found = [(m.start(), word(m)) for m in _NUMBER_WORD_RE.finditer(text)]
    found += [(m.start(), digits(m)) for m in _DIGITS_RE.finditer(text)]
    return [draw for _, draw in sorted(found, key=lambda f: f[0])]


def _spatial_changes(text: str) -> list[Callable[[random.Random], _Change]]:
    def change(m: re.Match[str]) -> Callable[[random.Random], _Change]:
        def draw(rng: random.Random) -> _Change:
            del rng  # one opposite each
            return _Change(m.start(), m.end(), _cased(m.group(), SPATIAL_FLIPS[_key(m.group())]))

        return draw

    return [change(m) for m in _SPATIAL_RE.finditer(text)]


def _object_changes(text: str) -> list[Callable[[random.Random], _Change]]:
    def change(m: re.Match[str]) -> Callable[[random.Random], _Change]:
        def draw(rng: random.Random) -> _Change:
            noun, many = _NOUN_FORMS[_key(m.group())]
            new = rng.choice([n for n in OBJECT_NOUNS if n != noun])
            return _Change(m.start(), m.end(), _cased(m.group(), plural(new) if many else new))

        return draw

    return [change(m) for m in _NOUN_RE.finditer(text)]


def _binding_changes(text: str) -> list[Callable[[random.Random], list[_Change]]]:
    """Pairs of (attribute, head) of one class in one sentence, values and heads different."""
    sentence_starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]

    def sentence_of(pos: int) -> int:
        return sum(1 for s in sentence_starts if s <= pos)

    found = []
    for m in _ATTRIBUTE_RE.finditer(text):
        head = m.group(1).lower()
        if head in _FUNCTION_WORDS or head in _ATTRIBUTE_CLASS:
            continue
        value = _key(text[m.start() : m.start(1)])
        found.append((m, value, head, _ATTRIBUTE_CLASS[value], sentence_of(m.start())))

    def swap(a: re.Match[str], b: re.Match[str]) -> Callable[[random.Random], list[_Change]]:
        wa, wb = a.group().split()[0], b.group().split()[0]

        def draw(rng: random.Random) -> list[_Change]:
            del rng  # one swap each
            return [
                _Change(a.start(), a.start() + len(wa), _cased(wa, wb.lower())),
                _Change(b.start(), b.start() + len(wb), _cased(wb, wa.lower())),
            ]

        return draw

    out = []
    for i, (a, va, ha, ca, sa) in enumerate(found):
        for b, vb, hb, cb, sb in found[i + 1 :]:
            if sa != sb or ca != cb or ha == hb or va == vb or {va, vb} <= {"gray", "grey"}:
                continue
            out.append(swap(a, b))
    return out


_FINDERS: dict[str, Callable[[str], list[Any]]] = {
    "color": _color_changes,
    "number": _number_changes,
    "spatial": _spatial_changes,
    "object": _object_changes,
    "binding": _binding_changes,
}


def _apply(kind: str, text: str, changes: Sequence[_Change]) -> Edit:
    changes = sorted(changes, key=lambda c: c.start)
    out, last = [], 0
    for c in changes:
        out.append(text[last : c.start] + c.after)
        last = c.end
    negative = "".join(out) + text[last:]
    start, end = changes[0].start, changes[-1].end
    after_end = end + len(negative) - len(text)
    return Edit(
        kind=kind,
        source=text,
        text=negative,
        start=start,
        end=end,
        before=text[start:end],
        after=negative[start:after_end],
        word_index=len(text[:start].split()) - (0 if text[:start][-1:].isspace() else 1)
        if start
        else 0,
    )


def edit_candidates(text: str, kind: str) -> int:
    """How many places of ``text`` a ``kind`` edit could change (pairs, for ``binding``)."""
    return len(_finder(kind)(text))


def _finder(kind: str) -> Callable[[str], list[Any]]:
    try:
        return _FINDERS[kind]
    except KeyError:
        raise ValueError(f"unknown edit kind {kind!r} (known: {', '.join(EDIT_KINDS)})") from None


def generate_negatives(
    text: str, *, seed: int, kinds: Sequence[str] = EDIT_KINDS, per_kind: int = 1
) -> list[Edit]:
    """Up to ``per_kind`` edits of each kind (module doc), in ``kinds`` order; deterministic.

    A kind with no candidate in ``text`` gives none. Within a kind, the edited places are drawn
    without replacement, uniformly among all candidates, and listed in text order.
    """
    if per_kind < 1:
        raise ValueError(f"per_kind must be at least 1, got {per_kind}")
    edits: list[Edit] = []
    for kind in kinds:
        candidates = _finder(kind)(text)
        if not candidates:
            continue
        rng = random.Random(stable_seed(seed, kind))
        picked = sorted(rng.sample(range(len(candidates)), min(per_kind, len(candidates))))
        seen: set[str] = set()
        for i in picked:
            drawn = candidates[i](rng)
            edit = _apply(kind, text, drawn if isinstance(drawn, list) else [drawn])
            if edit.text not in seen:
                seen.add(edit.text)
                edits.append(edit)
    return edits
