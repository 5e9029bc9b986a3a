"""Text for synthetic scenes: mask labels and captions, short/extra captions, summaries, negatives.

Summaries are rendered from a template plus *slots* (things with a noun, colour, texture and count,
and layout words). A negative re-renders the same template with one slot changed so that the
sentence becomes false by construction:

- swaps: two objects' (or backgrounds') colours exchanged, or a thing given a colour that is
  nowhere in the scene;
- layout: one layout word flipped (left <-> right, above <-> below, in front of <-> behind,
  top <-> bottom; "in the middle" -> a side; "upright" -> "upside down");
- basic: one thing's noun replaced by a noun absent from the scene.

Object kinds are unique within a scene and object colours are distinct (scene.py), which is what
makes a swapped colour or a replaced noun false rather than merely different.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

import numpy as np

from densecap_eval.synth.scene import Node, Scene
from densecap_eval.synth.vocab import (
    ALL_PART_KINDS,
    BACKGROUNDS,
    COLORS,
    DISTRACTOR_PARTS,
    FLIPS,
    NUMBER_WORDS,
    OBJECT_KINDS,
    plural,
)

SUMMARY_MAX_WORDS = 48
"""A summary with at most this many words and punctuation marks stays within 77 CLIP tokens
(every vocabulary word is one or two BPE tokens; checked with the real tokenizer in the tests)."""

_FLIPS_EXTRA = {"upright": "upside down"}


@dataclass(frozen=True, slots=True)
class Thing:
    """What a summary can say about one mask: noun, colour, texture, how many."""

    noun: str
    color: str
    texture: str = "plain"
    count: int = 1
    role: str = "object"  # object | part | background | detail
    avoid: frozenset[str] = frozenset()  # colours a swap must not give it (its parts' colours)

    def _head(self, *, texture: bool) -> str:
        words = [self.color] if self.color else []
        if texture and self.texture != "plain":
            words.append(self.texture)
        words.append(self.noun if self.count == 1 else plural(self.noun))
        return " ".join(words)

    @property
    def np(self) -> str:
        """ "a red striped car", "two black wheels", "green grass"."""
        head = self._head(texture=True)
        if self.count > 1:
            return f"{NUMBER_WORDS[min(self.count, len(NUMBER_WORDS) - 1)]} {head}"
        if self.role == "background" and self.noun in ("grass", "sand", "snow"):
            return head
        return f"{'an' if head[0] in 'aeiou' else 'a'} {head}"

    @property
    def NP(self) -> str:  # capitalised form, for sentence starts
        text = self.np
        return text[0].upper() + text[1:]

    @property
    def short(self) -> str:
        """Without the texture: "a red car"."""
        return replace(self, texture="plain").np

    @property
    def the(self) -> str:
        return f"the {self._head(texture=False)}"

    @property
    def noun_phrase(self) -> str:
        """ "the car" / "the wheels": the noun alone, for "the car is red"."""
        return f"the {self.noun if self.count == 1 else plural(self.noun)}"

    @property
    def be(self) -> str:
        return "is" if self.count == 1 else "are"


@dataclass(slots=True)
class Template:
    """A summary before rendering: format string, things and layout words by slot name."""

    fmt: str
    things: dict[str, Thing] = field(default_factory=dict)
    words: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        text = self.fmt.format(**self.things, **self.words)
        text = re.sub(r"\s+", " ", text).strip()
        return text[0].upper() + text[1:]


@dataclass(slots=True)
class EntryText:
    """Summaries (templates, first = the sDCI caption) and the facts used to score texts."""

    templates: list[Template]
    truth: frozenset[str]


# ---------------------------------------------------------------------------------------------
# Things from nodes


def thing(scene: Scene, node: Node) -> Thing:
    avoid = frozenset(scene.node(c).color for c in node.children if scene.node(c).color)
    return Thing(node.noun, node.color, node.texture, node.count, node.role, avoid)


def _part_groups(scene: Scene, obj: Node) -> list[Node]:
    """One representative part per noun (parts of a noun share colour and placement)."""
    seen: dict[str, Node] = {}
    for p in scene.parts_of(obj):
        seen.setdefault(p.noun, p)
    return list(seen.values())


def _words(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


# ---------------------------------------------------------------------------------------------
# Summaries


def _base_templates(scene: Scene, rng: np.random.Generator) -> list[Template]:
    objs = sorted(scene.objects, key=lambda n: -n.area)
    bg = scene.backgrounds
    upper = next((b for b in bg if b.noun in ("sky", "wall")), None)
    lower = next((b for b in bg if b.noun not in ("sky", "wall")), None)
    T = {f"o{i}": thing(scene, o) for i, o in enumerate(objs)}
    key_of = {o.idx: f"o{i}" for i, o in enumerate(objs)}
    if upper is not None:
        T["up"] = thing(scene, upper)
    if lower is not None:
        T["lo"] = thing(scene, lower)
    main = _main_template(
        scene, objs, key_of, T, both_backgrounds=upper is not None and lower is not None
    )
    extra = _extra_templates(scene, objs, key_of, T, rng)
    order = rng.permutation(len(extra))
    return [main] + [extra[int(i)] for i in order]


def _main_template(
    scene: Scene,
    objs: list[Node],
    key_of: dict[int, str],
    T: dict[str, Thing],
    *,
    both_backgrounds: bool,
) -> Template:
    """The first summary: every object with a layout fact, so all three negative kinds exist."""
    bg_clause = ""
    bg_words: dict[str, str] = {}
    if both_backgrounds:
        bg_clause = ", with {up.np} {bgrel} {lo.np}"
        bg_words = {"bgrel": "above"}
    main = Template("", {}, dict(bg_words))
    pieces: list[str] = []
    used: set[int] = set()
    for r in scene.relations:
        if r.subject in key_of and r.obj in key_of and r.word != "in front of":
            a, b = key_of[r.subject], key_of[r.obj]
            pieces.append(f"{{{a}.np}} {{r0}} {{{b}.np}}")
            main.words["r0"] = r.word
            main.things[a], main.things[b] = T[a], T[b]
            used |= {r.subject, r.obj}
            break
    for o in objs:
        if o.idx in used:
            continue
        k = key_of[o.idx]
        main.things[k] = T[k]
        if o.position:
            main.words[f"p{k}"] = o.position
            pieces.append(f"{{{k}.np}} {{p{k}}}")
        else:
            pieces.append(f"{{{k}.np}}")
    if len(pieces) > 1:
        body = ", ".join(pieces[:-1]) + " and " + pieces[-1]
    else:
        body = pieces[0] if pieces else "a scene"
    if bg_words:
        main.things["up"], main.things["lo"] = T["up"], T["lo"]
    main.fmt = body + bg_clause + "."
    if _words(main.render()) > SUMMARY_MAX_WORDS:  # too many objects: drop the background
        main.fmt = body + "."
        main.words.pop("bgrel", None)
        main.things.pop("up", None)
        main.things.pop("lo", None)
    if not main.words:  # no relation, position or background: still give layout a handle
        main.fmt = main.fmt[:-1] + ", all {ori}."
        main.words["ori"] = "upright"
    return main


def _extra_templates(
    scene: Scene,
    objs: list[Node],
    key_of: dict[int, str],
    T: dict[str, Thing],
    rng: np.random.Generator,
) -> list[Template]:
    """The other summaries (listing, positions, relations, backgrounds, parts, a colour), in a
    fixed order before the caller shuffles them."""
    scene_word = "an outdoor" if scene.setting == "outdoor" else "an indoor"
    extra: list[Template] = []
    names = [f"{{o{i}.np}}" for i in range(len(objs))]
    listing = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    extra.append(
        Template(f"{scene_word} scene with {listing}.", {k: T[k] for k in T if k[0] == "o"})
    )
    positioned = [o for o in objs if o.position]
    if positioned:
        t = Template("", {}, {})
        parts = []
        for o in positioned:
            k = key_of[o.idx]
            t.things[k] = T[k]
            t.words[f"p{k}"] = o.position
            parts.append(f"{{{k}.short}} {{p{k}}}")
        t.fmt = "; ".join(parts) + "."
        extra.append(t)
    for r in scene.relations:
        if r.subject in key_of and r.obj in key_of:
            a, b = key_of[r.subject], key_of[r.obj]
            extra.append(
                Template(
                    f"{{{a}.the}} is {{rel}} {{{b}.the}}.", {a: T[a], b: T[b]}, {"rel": r.word}
                )
            )
    if "up" in T and "lo" in T and objs:
        extra.append(
            Template(
                "{lo.NP} {bgrel} {up.np}, with {o0.np}.",
                {"lo": T["lo"], "up": T["up"], "o0": T["o0"]},
                {"bgrel": "below"},
            )
        )
    for o in objs[:2]:
        groups = _part_groups(scene, o)
        if groups:
            k = key_of[o.idx]
            p = groups[int(rng.integers(len(groups)))]
            extra.append(
                Template(f"a picture of {{{k}.np}} with {{p.np}}.", {k: T[k], "p": thing(scene, p)})
            )
    if objs:
        extra.append(Template("{o0.noun_phrase} in the picture is {o0.color}.", {"o0": T["o0"]}))
    return extra


def object_templates(scene: Scene, obj: Node, rng: np.random.Generator) -> list[Template]:
    o = thing(scene, obj)
    groups = _part_groups(scene, obj)
    templates: list[Template] = []
    # Main: a layout fact inside the object (part relation, else a part placement, else upright).
    rel = next((r for r in scene.part_relations if scene.node(r.subject).parent == obj.idx), None)
    if rel is not None:
        a, b = scene.node(rel.subject), scene.node(rel.obj)
        templates.append(
            Template(
                "{o.np} with {a.np} {rel} {b.np}.",
                {"o": o, "a": thing(scene, a), "b": thing(scene, b)},
                {"rel": rel.word},
            )
        )
    placed = [p for p in groups if p.placement]
    if placed:
        p = placed[0]
        t = Template(
            "{o.np} with {p.np} {pl}.", {"o": o, "p": thing(scene, p)}, {"pl": p.placement}
        )
        templates.insert(0 if rel is None else 1, t)
    if not templates:
        templates.append(Template("{o.np} standing {ori}.", {"o": o}, {"ori": "upright"}))
    extra = [
        Template("{o.np}.", {"o": o}),
        Template("a close-up of {o.np}.", {"o": o}),
        Template("{o.noun_phrase} is {o.color}.", {"o": o}),
    ]
    for p in groups:
        extra.append(Template("{o.short} with {p.np}.", {"o": o, "p": thing(scene, p)}))
    if groups:
        names = ", ".join("{" + f"q{i}" + ".np}" for i in range(len(groups)))
        extra.append(
            Template(
                "{o.np} showing " + names + ".",
                {"o": o, **{f"q{i}": thing(scene, p) for i, p in enumerate(groups)}},
            )
        )
    order = rng.permutation(len(extra))
    return templates[:1] + [extra[int(i)] for i in order] + templates[1:]


def part_templates(scene: Scene, part: Node, rng: np.random.Generator) -> list[Template]:
    p, o = thing(scene, part), thing(scene, scene.node(part.parent))
    if part.placement:
        main = Template("{p.np} {pl} of {o.np}.", {"p": p, "o": o}, {"pl": part.placement})
    else:
        main = Template("{p.np} of {o.np}, {ori}.", {"p": p, "o": o}, {"ori": "upright"})
    extra = [
        Template("{p.np}.", {"p": p}),
        Template("a close-up of {p.np} on {o.short}.", {"p": p, "o": o}),
    ]
    order = rng.permutation(len(extra))
    return [main] + [extra[int(i)] for i in order]


def background_templates(scene: Scene, node: Node, rng: np.random.Generator) -> list[Template]:
    me = thing(scene, node)
    other = next((b for b in scene.backgrounds if b.idx != node.idx), None)
    upper = node.noun in ("sky", "wall")
    templates: list[Template] = []
    if other is not None:
        word = "above" if upper else "below"
        templates.append(
            Template(
                "{me.np} {rel} {other.np}.", {"me": me, "other": thing(scene, other)}, {"rel": word}
            )
        )
    else:
        templates.append(Template("{me.np}, {ori}.", {"me": me}, {"ori": "upright"}))
    extra = [
        Template("{me.np}.", {"me": me}),
        Template("{me.noun_phrase} is {me.color}.", {"me": me}),
    ]
    clouds = [scene.node(c) for c in node.children if scene.node(c).noun == "cloud"]
    if clouds:
        cl = Thing("cloud", "white", count=len(clouds), role="detail")
        extra.append(Template("{me.np} with {cl.np}.", {"me": me, "cl": cl}))
    order = rng.permutation(len(extra))
    return templates + [extra[int(i)] for i in order]


def _truth(scene: Scene, nodes: list[Node]) -> frozenset[str]:
    words: set[str] = set()
    for n in nodes:
        words |= {n.noun, n.color, n.texture, n.position, n.placement}
        for c in n.children:
            words |= {scene.node(c).noun, scene.node(c).color}
    return frozenset(w for w in " ".join(words).split() if w)


def entry_texts(scene: Scene, rng: np.random.Generator) -> dict[str, EntryText]:
    """Summaries for the base entry and every subcrop-sized mask (bounds >= 224 x 224)."""
    out = {"base": EntryText(_base_templates(scene, rng), _truth(scene, scene.nodes))}
    for node in scene.nodes:
        left, top, right, bottom = node.bounds
        if right - left < 224 or bottom - top < 224:
            continue
        if node.role == "object":
            templates = object_templates(scene, node, rng)
        elif node.role == "part":
            templates = part_templates(scene, node, rng)
        else:
            templates = background_templates(scene, node, rng)
        out[f"m-{node.idx}-sc"] = EntryText(templates, _truth(scene, [node]))
    return out


def choose_summary_count(rng: np.random.Generator, available: int) -> int:
    """How many summaries an entry gets: 1 (stored as a str) to 7, capped by what exists."""
    n = int(rng.choice([1, 1, 2, 3, 3, 4, 5, 5, 5, 6, 6, 7]))
    return max(1, min(n, available))


# ---------------------------------------------------------------------------------------------
# Negatives


def _absent_colors(scene: Scene, t: Thing) -> list[str]:
    used = scene.colors_used()
    free = [c for c in COLORS if c not in used]
    if not free:  # a crowded palette: any colour the thing and its parts do not have
        free = [c for c in COLORS if c != t.color and c not in t.avoid]
    return free


def _absent_nouns(scene: Scene, t: Thing) -> list[str]:
    present = {n.noun for n in scene.nodes}
    if t.role == "part":
        pool: tuple[str, ...] = ALL_PART_KINDS + DISTRACTOR_PARTS
    elif t.role == "background":
        pool = tuple(BACKGROUNDS)
    else:
        pool = OBJECT_KINDS
    return [n for n in pool if n not in present]


def _flip(word: str, rng: np.random.Generator) -> str:
    if word == "in the middle":
        return "on the left" if rng.random() < 0.5 else "on the right"
    return FLIPS.get(word) or _FLIPS_EXTRA[word]


def negatives_for(
    scene: Scene, template: Template, rng: np.random.Generator, *, per_kind: int = 3
) -> dict[str, list[str]]:
    """swaps / layout / basic negatives of one summary, each false by construction."""
    positive = template.render()
    cands: dict[str, list[str]] = {"swaps": [], "layout": [], "basic": []}
    slots = sorted(template.things)

    def variant(
        kind: str, things: dict[str, Thing] | None = None, words: dict[str, str] | None = None
    ) -> None:
        t = Template(template.fmt, things or template.things, words or template.words)
        text = t.render()
        if text != positive and text not in cands[kind] and _words(text) <= SUMMARY_MAX_WORDS:
            cands[kind].append(text)

    # swaps: exchange colours of two objects/backgrounds, or give one an absent colour.
    swappable = [s for s in slots if template.things[s].role in ("object", "background")]
    for i, a in enumerate(swappable):
        for b in swappable[i + 1 :]:
            ta, tb = template.things[a], template.things[b]
            if ta.color == tb.color or tb.color in ta.avoid or ta.color in tb.avoid:
                continue
            variant(
                "swaps",
                {**template.things, a: replace(ta, color=tb.color), b: replace(tb, color=ta.color)},
            )
    for s in slots:
        t = template.things[s]
        if not t.color:
            continue
        free = _absent_colors(scene, t)
        if free:
            variant(
                "swaps",
                {**template.things, s: replace(t, color=free[int(rng.integers(len(free)))])},
            )
    # layout: flip one layout word.
    for w in sorted(template.words):
        variant("layout", words={**template.words, w: _flip(template.words[w], rng)})
    # basic: replace one noun with one absent from the scene.
    for s in slots:
        t = template.things[s]
        pool = _absent_nouns(scene, t)
        if pool:
            variant(
                "basic", {**template.things, s: replace(t, noun=pool[int(rng.integers(len(pool)))])}
            )

    out: dict[str, list[str]] = {}
    for kind, texts in cands.items():
        order = rng.permutation(len(texts))
        keep = int(rng.integers(1, per_kind + 1))
        out[kind] = [texts[int(i)] for i in order[:keep]]
    return out


# ---------------------------------------------------------------------------------------------
# Long captions (the human-annotation side of DCI)


def _a(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def mask_text(scene: Scene, node: Node) -> tuple[str, str]:
    """(label, caption) of a mask; quality 1 keeps the label only, quality 2 neither."""
    if node.quality == 2:
        return "", ""
    if node.role == "object":
        label = node.noun
        tex = f" with a {node.texture} pattern" if node.texture != "plain" else ""
        where = f", {node.position} of the picture" if node.position else ""
        caption = f"{_a(node.size).capitalize()} {node.color} {node.noun}{tex}{where}."
        groups = _part_groups(scene, node)
        if groups:
            has = [thing(scene, p).np + (f" {p.placement}" if p.placement else "") for p in groups]
            caption += (
                f" It has {', '.join(has[:-1]) + ' and ' + has[-1] if len(has) > 1 else has[0]}."
            )
        for r in scene.part_relations:
            if scene.node(r.subject).parent == node.idx:
                a, b = thing(scene, scene.node(r.subject)), thing(scene, scene.node(r.obj))
                caption += f" {a.noun_phrase.capitalize()} {a.be} {r.word} {b.noun_phrase}."
    elif node.role == "part":
        label = node.noun
        parent = scene.node(node.parent)
        where = (
            f" {node.placement} of the {parent.noun}"
            if node.placement
            else f" on the {parent.noun}"
        )
        caption = f"{_a(node.color + ' ' + node.noun).capitalize()}{where}."
    elif node.role == "background":
        label = node.noun
        half = "top" if node.noun in ("sky", "wall") else "bottom"
        caption = f"{Thing(node.noun, node.color, role='background').NP} filling the {half} part of the picture."
    else:
        label = node.noun
        caption = f"A small {node.color} {node.noun}." if node.noun else ""
    if node.quality == 1:
        caption = ""
    return label, caption


_FILLER = (
    "The picture is a simple flat drawing with clean edges, even light and no people in it. "
    "There are no words, numbers or logos anywhere, and nothing is blurred or cut off on purpose."
)


def short_caption(scene: Scene) -> str:
    objs = sorted(scene.objects, key=lambda n: -n.area)
    names = [Thing(o.noun, o.color).np for o in objs]
    listing = (
        ", ".join(names[:-1]) + " and " + names[-1]
        if len(names) > 1
        else (names[0] if names else "shapes")
    )
    upper = next((b for b in scene.backgrounds if b.noun in ("sky", "wall")), None)
    if upper is None:
        return f"A drawing of {listing}."
    where = "under" if upper.noun == "sky" else "in front of"
    return f"A drawing of {listing} {where} {Thing(upper.noun, upper.color).np}."


def extra_caption(scene: Scene, rng: np.random.Generator) -> str:
    """Several sentences; twins (and some others) open with filler so details come late."""
    sentences: list[str] = []
    if scene.twin >= 0 or rng.random() < 0.3:
        sentences.append(_FILLER)
    for r in scene.relations:
        a, b = scene.node(r.subject), scene.node(r.obj)
        sentences.append(f"The {a.color} {a.noun} is {r.word} the {b.color} {b.noun}.")
    for o in scene.objects:
        if o.position:
            sentences.append(f"The {o.noun} stands {o.position}.")
    bgs = scene.backgrounds
    if bgs:
        clouds = sum(1 for n in scene.nodes if n.noun == "cloud")
        bits = [f"{Thing(b.noun, b.color, role='background').np}" for b in bgs]
        sentence = f"The background is {' over '.join(bits)}"
        if clouds:
            sentence += f", with {NUMBER_WORDS[clouds]} white cloud{'s' if clouds > 1 else ''}"
        sentences.append(sentence + ".")
    # Details last: textures and part colours distinguish twin photos.
    for o in scene.objects:
        tex = "plain" if o.texture == "plain" else f"{o.texture}"
        groups = _part_groups(scene, o)
        bits = [thing(scene, p).np for p in groups]
        listing = ", ".join(bits[:-1]) + " and " + bits[-1] if len(bits) > 1 else "".join(bits)
        tail = f" and has {listing}" if bits else ""
        sentences.append(f"The {o.noun} is {tex}{tail}.")
    return " ".join(sentences)


# ---------------------------------------------------------------------------------------------
# Scores


def pseudo_clip_score(text: str, truth: frozenset[str], salt: str) -> float:
    """A stand-in for a CLIP logit: word overlap with the entry's facts plus seeded noise.

    Deterministic (sha256 of the salt and text); negatives, which change a true word into a false
    one, usually score a little lower, and sometimes higher, as real CLIP scores do.
    """
    words = re.findall(r"[a-z]+", text.lower())
    hits = sum(1 for w in words if w in truth)
    frac = hits / max(1, len(words))
    digest = hashlib.sha256(f"{salt}\x00{text}".encode()).digest()
    noise = int.from_bytes(digest[:4], "big") / 2**32 * 1.2 - 0.6
    return round(20.0 + 14.0 * frac + noise, 4)
