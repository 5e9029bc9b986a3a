"""Procedural scenes: a background, a few objects with parts, drawn with Pillow, with exact masks.

A scene is drawn from two random streams: the *plan* (setting, object kinds, colours, sizes and
places) and the *details* (textures, part colours, clouds, mask quality). Twin photos share a plan
and differ only in details, so their captions agree early and differ late (see language.py).

Every fact the captions state is computed here from the drawn pixels or by construction, with
margins, so that a flipped fact is false: an object "on the left" has its visible centre in the
left third (minus a margin), "A to the left of B" means A's visible centre is left of B's by at
least 12% of the width, and object kinds are unique within a scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from densecap_eval.synth.vocab import (
    BACKGROUNDS,
    COLORS,
    GROUNDS_OUTDOOR,
    INDOOR_KINDS,
    OUTDOOR_KINDS,
    PART_KINDS,
    TEXTURES,
)

BoundsTuple = tuple[int, int, int, int]
"""(left, top, right, bottom); right/bottom exclusive; may overrun the photo (as in DCI)."""

# Shapes in fractions of the object's box: (name, primitive, coordinates). "body" takes the
# object's colour and texture; any other name is a part of that noun. Drawn in list order.
_Shape = tuple[str, str, tuple[float, ...]]

_ASPECT: dict[str, tuple[float, float]] = {
    "house": (1.0, 1.3),
    "car": (1.6, 1.9),
    "tree": (0.75, 0.9),
    "kite": (0.7, 0.8),
    "flag": (0.65, 0.8),
    "ball": (1.0, 1.0),
    "box": (0.9, 1.25),
    "bottle": (0.36, 0.45),
    "lamp": (0.55, 0.7),
}
_SIZE_HEIGHT: dict[str, tuple[float, float]] = {
    "large": (0.52, 0.76),
    "medium-sized": (0.28, 0.44),
    "small": (0.13, 0.24),
}
_PART_COLORS: dict[str, tuple[str, ...]] = {
    "roof": ("red", "brown", "gray", "black", "blue", "orange"),
    "door": ("brown", "yellow", "blue", "red", "black", "white"),
    "window": ("white", "cyan", "yellow", "gray", "black"),
    "wheel": ("black", "gray", "white"),
    "trunk": ("brown", "gray", "black"),
    "apple": ("red", "orange", "yellow", "purple"),
    "stripe": ("white", "black", "yellow", "red", "blue", "green"),
    "tail": ("red", "yellow", "white", "black", "blue"),
    "pole": ("gray", "brown", "black", "white"),
    "lid": ("brown", "black", "white", "red", "gray"),
    "label": ("white", "yellow", "red", "blue", "black"),
    "cap": ("red", "white", "black", "blue", "yellow"),
    "base": ("black", "gray", "brown", "white"),
}


def _shapes(kind: str, variant: int) -> list[_Shape]:
    """The drawing of one object kind; ``variant`` mirrors or moves a part (0 or 1)."""
    if kind == "house":
        return [
            ("body", "rect", (0.05, 0.4, 0.95, 1.0)),
            ("roof", "polygon", (0.0, 0.42, 0.5, 0.0, 1.0, 0.42)),
            ("door", "rect", (0.42, 0.66, 0.58, 1.0)),
            ("window", "rect", (0.14, 0.5, 0.32, 0.68)),
            ("window", "rect", (0.68, 0.5, 0.86, 0.68)),
        ]
    if kind == "car":
        return [
            ("body", "polygon", (0.2, 0.4, 0.32, 0.05, 0.72, 0.05, 0.86, 0.4)),
            ("body", "rect", (0.0, 0.36, 1.0, 0.8)),
            ("window", "polygon", (0.28, 0.38, 0.36, 0.12, 0.68, 0.12, 0.78, 0.38)),
            ("wheel", "ellipse", (0.1, 0.6, 0.32, 1.0)),
            ("wheel", "ellipse", (0.68, 0.6, 0.9, 1.0)),
        ]
    if kind == "tree":
        return [
            ("trunk", "rect", (0.4, 0.5, 0.6, 1.0)),
            ("body", "ellipse", (0.0, 0.0, 1.0, 0.66)),
            ("apple", "ellipse", (0.22, 0.2, 0.34, 0.34)),
            ("apple", "ellipse", (0.6, 0.14, 0.72, 0.28)),
            ("apple", "ellipse", (0.45, 0.4, 0.57, 0.54)),
        ]
    if kind == "kite":
        return [
            ("body", "polygon", (0.5, 0.0, 1.0, 0.33, 0.5, 0.7, 0.0, 0.33)),
            ("stripe", "polygon", (0.2, 0.2, 0.8, 0.2, 0.92, 0.28, 0.08, 0.28)),
            ("tail", "polygon", (0.47, 0.68, 0.53, 0.68, 0.45, 1.0, 0.39, 1.0)),
        ]
    if kind == "flag":
        pole = (0.0, 0.0, 0.08, 1.0) if variant == 0 else (0.92, 0.0, 1.0, 1.0)
        cloth = (0.08, 0.03, 1.0, 0.45) if variant == 0 else (0.0, 0.03, 0.92, 0.45)
        stripe = (cloth[0], 0.17, cloth[2], 0.3)
        return [("pole", "rect", pole), ("body", "rect", cloth), ("stripe", "rect", stripe)]
    if kind == "ball":
        band = (0.1, 0.18, 0.9, 0.36) if variant == 0 else (0.1, 0.64, 0.9, 0.82)
        return [("body", "ellipse", (0.0, 0.0, 1.0, 1.0)), ("stripe", "rect", band)]
    if kind == "box":
        return [
            ("body", "rect", (0.04, 0.16, 0.96, 1.0)),
            ("lid", "rect", (0.0, 0.0, 1.0, 0.18)),
            ("label", "rect", (0.3, 0.45, 0.7, 0.75)),
        ]
    if kind == "bottle":
        return [
            ("body", "rect", (0.3, 0.1, 0.7, 0.34)),
            ("body", "rect", (0.0, 0.3, 1.0, 1.0)),
            ("cap", "rect", (0.26, 0.0, 0.74, 0.12)),
            ("label", "rect", (0.0, 0.52, 1.0, 0.76)),
        ]
    if kind == "lamp":
        return [
            ("pole", "rect", (0.45, 0.36, 0.55, 0.92)),
            ("base", "ellipse", (0.15, 0.86, 0.85, 1.0)),
            ("body", "polygon", (0.18, 0.4, 0.34, 0.0, 0.66, 0.0, 0.82, 0.4)),
        ]
    raise ValueError(f"unknown object kind {kind!r}")


@dataclass(slots=True)
class Node:
    """One mask of a scene: a background region, an object, a part of an object or a detail."""

    idx: int
    role: str  # "background" | "object" | "part" | "detail"
    noun: str  # "sky", "car", "wheel", "cloud"; "" for unnamed details (shadows)
    color: str
    mask: np.ndarray = field(repr=False)  # visible pixels, bool, (height, width)
    bounds: BoundsTuple = (0, 0, 0, 0)
    area: int = 0
    quality: int = 0
    parent: int = -1
    children: list[int] = field(default_factory=list)
    texture: str = "plain"
    size: str = ""  # objects: small / medium-sized / large
    position: str = ""  # objects: third of the photo, "" when too close to a border between thirds
    placement: str = ""  # parts: where inside the object, "" when not clear-cut
    count: int = 1  # parts: how many parts of this noun the object has (same colour)


@dataclass(frozen=True, slots=True)
class Relation:
    """``subject word object`` between two nodes (indices), true by construction."""

    subject: int
    word: str
    obj: int


@dataclass(slots=True)
class Scene:
    """A drawn photo, its masks (in mask_data order) and the facts captions may state."""

    width: int
    height: int
    setting: str  # "outdoor" | "indoor"
    image: Image.Image = field(repr=False)
    nodes: list[Node] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)  # between objects
    part_relations: list[Relation] = field(default_factory=list)  # between parts of one object
    twin: int = -1  # 0 or 1 for twin photos (same plan, different details), else -1

    def node(self, idx: int) -> Node:
        return self.nodes[idx]

    @property
    def objects(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "object"]

    @property
    def backgrounds(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "background"]

    def parts_of(self, node: Node) -> list[Node]:
        return [self.nodes[c] for c in node.children if self.nodes[c].role == "part"]

    def colors_used(self) -> set[str]:
        return {n.color for n in self.nodes if n.color}


@lru_cache(maxsize=4)
def _patterns(width: int, height: int) -> dict[str, np.ndarray]:
    """Texture masks at photo size (computed once per size)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return {
        "striped": ((xx + yy) // 14) % 2 == 0,
        "checkered": ((xx // 18) + (yy // 18)) % 2 == 0,
        "dotted": ((xx % 20) - 10) ** 2 + ((yy % 20) - 10) ** 2 < 20,
    }


@lru_cache(maxsize=4)
def _row_ramp(height: int) -> np.ndarray:
    return np.linspace(0.82, 1.06, height, dtype=np.float32)[:, None]


def _rgb(name: str, jitter: np.ndarray) -> np.ndarray:
    return np.clip(np.array(COLORS[name], dtype=np.int16) + jitter, 0, 255).astype(np.uint8)


def _paint(region: np.ndarray, mask: np.ndarray, rgb: np.ndarray | tuple[int, int, int]) -> None:
    """region[mask] = rgb, about twice as fast as boolean indexing."""
    np.copyto(region, np.asarray(rgb, dtype=np.uint8), where=mask[..., None])


def _texture_rgb(name: str) -> tuple[int, int, int]:
    """Second colour of a textured body: darker for light colours, lighter for dark ones."""
    r, g, b = COLORS[name]
    if r + g + b > 380:
        return (int(r * 0.7), int(g * 0.7), int(b * 0.7))
    return (min(255, r + 70), min(255, g + 70), min(255, b + 70))


@dataclass(slots=True)
class _Layer:
    """One drawn primitive, kept as a mask of its clipped box (cheap to paint and compare)."""

    owner: tuple[str, int, str]  # ("obj", object, "body" or part noun) | ("cloud"|"shadow", i, "")
    mask: np.ndarray  # bool, the clipped box only
    x: int
    y: int
    nominal: BoundsTuple  # unclipped box of the primitive (may overrun the photo)
    visible: np.ndarray | None = None  # like mask, minus what nearer layers cover

    @property
    def sl(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return (slice(self.y, self.y + h), slice(self.x, self.x + w))

    def full(self, local: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        out[self.sl] = local
        return out


def _draw_shape(
    owner: tuple[str, int, str],
    size: tuple[int, int],
    box: tuple[float, float, float, float],
    prim: str,
    coords: tuple[float, ...],
) -> _Layer | None:
    """Rasterise one primitive inside its clipped box; None when it misses the photo."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    pts = [(x0 + coords[i] * w, y0 + coords[i + 1] * h) for i in range(0, len(coords), 2)]
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    nominal = (int(min(xs)), int(min(ys)), round(max(xs)), round(max(ys)))
    xa, ya = max(0, int(min(xs))), max(0, int(min(ys)))
    xb, yb = min(size[0], int(max(xs)) + 2), min(size[1], int(max(ys)) + 2)
    if xa >= xb or ya >= yb:
        return None
    local = [(px - xa, py - ya) for px, py in pts]
    canvas = Image.new("L", (xb - xa, yb - ya), 0)
    draw = ImageDraw.Draw(canvas)
    if prim == "rect":
        draw.rectangle([local[0], (local[1][0] - 1, local[1][1] - 1)], fill=255)
    elif prim == "ellipse":
        draw.ellipse([local[0], (local[1][0] - 1, local[1][1] - 1)], fill=255)
    else:
        draw.polygon(local, fill=255)
    return _Layer(owner, np.asarray(canvas) > 0, xa, ya, nominal)


def _mask_bounds(mask: np.ndarray) -> BoundsTuple | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _overrun(visible: BoundsTuple, nominal: BoundsTuple, width: int, height: int) -> BoundsTuple:
    """Where the drawing runs past the photo's edge, write the bounds past it too (as SAM does)."""
    left, top, right, bottom = visible
    if left == 0 and nominal[0] < 0:
        left = nominal[0]
    if top == 0 and nominal[1] < 0:
        top = nominal[1]
    if right == width and nominal[2] > width:
        right = nominal[2]
    if bottom == height and nominal[3] > height:
        bottom = nominal[3]
    return (left, top, right, bottom)


def _centre(b: BoundsTuple) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _quality(rng: np.random.Generator, p1: float, p2: float) -> int:
    u = float(rng.random())
    return 2 if u < p2 else 1 if u < p1 + p2 else 0


@dataclass(slots=True)
class _PlannedObject:
    kind: str
    color: str
    size: str
    box: tuple[float, float, float, float]
    variant: int


def _plan(
    rng: np.random.Generator, width: int, height: int
) -> tuple[str, dict[str, str], float, list[_PlannedObject], np.ndarray]:
    """Setting, background nouns/colours, horizon, objects (in drawing order) and colour jitter."""
    setting = "outdoor" if rng.random() < 0.7 else "indoor"
    backgrounds = _plan_backgrounds(rng, setting)
    horizon = float(rng.uniform(0.38, 0.58)) * height

    kinds_pool = list(OUTDOOR_KINDS if setting == "outdoor" else INDOOR_KINDS)
    n_objects = int(rng.choice([2, 3, 3, 4]))
    order = rng.permutation(len(kinds_pool))[:n_objects]
    kinds = [kinds_pool[int(i)] for i in order]
    # Object colours are distinct from each other and from the backgrounds, so colour words
    # identify objects and swapped colours are false.
    free = [c for c in COLORS if c not in backgrounds.values()]
    colour_order = rng.permutation(len(free))
    sizes = [_pick(rng, ["small", "medium-sized", "medium-sized", "large"]) for _ in kinds]
    # At least one large object on the ground, so most photos have object subcrops.
    grounded = [i for i, k in enumerate(kinds) if k != "kite"]
    if grounded:
        sizes[grounded[0]] = "large"
    edge_object = int(rng.integers(n_objects)) if rng.random() < 0.35 else -1

    planned: list[_PlannedObject] = []
    for i, kind in enumerate(kinds):
        size = sizes[i] if kind != "kite" or sizes[i] != "large" else "medium-sized"
        box = _plan_box(rng, kind, size, (width, height), horizon, at_edge=i == edge_object)
        planned.append(
            _PlannedObject(kind, free[int(colour_order[i])], size, box, int(rng.integers(2)))
        )
    # Far things first: kites are in the sky, then by the bottom edge (lower = nearer).
    planned.sort(key=lambda o: (o.kind != "kite", o.box[3]))
    jitter = rng.integers(-14, 15, size=(32, 3)).astype(np.int16)
    return setting, backgrounds, horizon, planned, jitter


def _plan_backgrounds(rng: np.random.Generator, setting: str) -> dict[str, str]:
    """The upper and lower background nouns and their (different) colours."""
    if setting == "outdoor":
        upper, lower = "sky", _pick(rng, GROUNDS_OUTDOOR)
    else:
        upper, lower = "wall", "floor"
    upper_color = _pick(rng, BACKGROUNDS[upper])
    lower_options = [c for c in BACKGROUNDS[lower] if c != upper_color] or list(BACKGROUNDS[lower])
    lower_color = _pick(rng, lower_options)
    return {upper: upper_color, lower: lower_color}


def _plan_box(
    rng: np.random.Generator,
    kind: str,
    size: str,
    frame: tuple[int, int],
    horizon: float,
    *,
    at_edge: bool,
) -> tuple[float, float, float, float]:
    """One object's box: kites in the sky, the rest standing below the horizon; an object
    ``at_edge`` runs past the left or right edge (and sometimes the bottom)."""
    width, height = frame
    lo, hi = _SIZE_HEIGHT[size]
    h = float(rng.uniform(lo, hi)) * height
    aspect = float(rng.uniform(*_ASPECT[kind]))
    w = h * aspect
    if w > 0.8 * width:  # keep wide objects inside a plausible frame
        w = 0.8 * width
        h = w / aspect
    cx = float(rng.uniform(0.12, 0.88)) * width
    if at_edge:  # run past the left or right edge by 5-25% of the object's width
        over = float(rng.uniform(0.05, 0.25)) * w
        cx = (w / 2 - over) if rng.random() < 0.5 else (width - w / 2 + over)
    if kind == "kite":
        top = float(rng.uniform(0.02, 0.2)) * height
        bottom = top + h
    else:
        bottom = float(rng.uniform(horizon + 0.15 * (height - horizon), height * 0.99))
        if at_edge and rng.random() < 0.4:
            bottom = height + float(rng.uniform(0.03, 0.12)) * h
        top = bottom - h
        if top < 2:
            top, bottom = 2.0, 2.0 + h
    return (cx - w / 2, top, cx + w / 2, bottom)


@dataclass(slots=True)
class _Canvas:
    """The photo being drawn and what every drawing phase needs of it."""

    pixels: np.ndarray  # (height, width, 3) uint8
    upper_region: np.ndarray  # bool: the rows above the horizon
    jitter: np.ndarray
    layers: list[_Layer] = field(default_factory=list)  # back to front

    @property
    def size(self) -> tuple[int, int]:
        return (self.pixels.shape[1], self.pixels.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.pixels.shape[0], self.pixels.shape[1])


def build_scene(
    plan_rng: np.random.Generator,
    detail_rng: np.random.Generator,
    *,
    width: int = 640,
    height: int = 480,
    twin: int = -1,
) -> Scene:
    """Draw one scene. ``twin`` (0/1) forces twin photos of one plan to differ in a texture."""
    setting, backgrounds, horizon, planned, jitter = _plan(plan_rng, width, height)
    # Details: textures and part colours (twins differ here).
    textures = [_pick(detail_rng, TEXTURES) for _ in planned]
    if twin in (0, 1) and planned:
        first = TEXTURES.index(textures[0])
        textures[0] = TEXTURES[(first // 2) * 2 + twin]  # twins: plain/striped or dotted/checkered
    canvas = _paint_backgrounds(width, height, backgrounds, int(horizon), jitter)
    if next(iter(backgrounds)) == "sky" and int(horizon) > 60:
        _draw_clouds(canvas, detail_rng, int(horizon))
    part_colors = _draw_objects(canvas, detail_rng, planned, textures)
    covered, full_by_object = _visible_pixels(canvas)

    scene = Scene(width, height, setting, Image.fromarray(canvas.pixels, "RGB"), twin=twin)
    _annotate_backgrounds(scene, canvas, detail_rng, backgrounds, covered)
    object_nodes = _annotate_objects(scene, canvas, detail_rng, planned, textures, part_colors)
    _relate_objects(scene, list(object_nodes.values()), full_by_object, object_nodes)
    return scene


def _paint_backgrounds(
    width: int, height: int, backgrounds: dict[str, str], horizon_row: int, jitter: np.ndarray
) -> _Canvas:
    """The two backgrounds, each a gentle vertical gradient (one colour per row)."""
    (_, upper_color), (_, lower_color) = backgrounds.items()
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    ramp = _row_ramp(height)  # (height, 1)
    rows = np.empty((height, 3), dtype=np.uint8)
    rows[:horizon_row] = np.clip(_rgb(upper_color, jitter[0]) * ramp[:horizon_row], 0, 255)
    rows[horizon_row:] = np.clip(_rgb(lower_color, jitter[1]) * ramp[horizon_row:][::-1], 0, 255)
    pixels[:] = rows[:, None, :]
    upper_region = np.zeros((height, width), dtype=bool)
    upper_region[:horizon_row] = True
    return _Canvas(pixels, upper_region, jitter)


def _draw_clouds(canvas: _Canvas, rng: np.random.Generator, horizon_row: int) -> None:
    width = canvas.size[0]
    for c in range(int(rng.integers(0, 3))):
        cw = float(rng.uniform(0.08, 0.16)) * width
        ch = cw * 0.45
        cx = float(rng.uniform(0.1, 0.9)) * width
        cy = float(rng.uniform(0.08, 0.6)) * horizon_row
        cbox = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
        layer = _draw_shape(("cloud", c, ""), canvas.size, cbox, "ellipse", (0, 0, 1, 1))
        if layer is not None:
            layer.mask &= canvas.upper_region[layer.sl]
            _paint(canvas.pixels[layer.sl], layer.mask, _rgb("white", canvas.jitter[2]))
            canvas.layers.append(layer)


def _draw_objects(
    canvas: _Canvas, rng: np.random.Generator, planned: list[_PlannedObject], textures: list[str]
) -> list[dict[str, str]]:
    """Each object back to front (its shadow, body and parts); returns its part colours."""
    patterns = _patterns(*canvas.size)
    part_colors: list[dict[str, str]] = []
    for i, obj in enumerate(planned):
        colours: dict[str, str] = {}
        for noun in PART_KINDS[obj.kind]:
            options = [
                c for c in _PART_COLORS[noun] if c != obj.color and c not in colours.values()
            ]
            colours[noun] = _pick(rng, options)
        part_colors.append(colours)
        if obj.kind != "kite" and rng.random() < 0.5:  # a shadow on the ground
            _draw_shadow(canvas, i, obj.box)
        for noun, prim, coords in _shapes(obj.kind, obj.variant):
            layer = _draw_shape(("obj", i, noun), canvas.size, obj.box, prim, coords)
            if layer is None:
                continue
            region = canvas.pixels[layer.sl]
            if noun == "body":
                _paint(region, layer.mask, _rgb(obj.color, canvas.jitter[3 + i]))
                if textures[i] != "plain":
                    texture = layer.mask & patterns[textures[i]][layer.sl]
                    _paint(region, texture, _texture_rgb(obj.color))
            else:
                jitter = canvas.jitter[8 + len(canvas.layers) % 24]
                _paint(region, layer.mask, _rgb(colours[noun], jitter))
            canvas.layers.append(layer)
    return part_colors


def _draw_shadow(canvas: _Canvas, i: int, box: tuple[float, float, float, float]) -> None:
    x0, y0, x1, y1 = box
    sw = (x1 - x0) * 0.5
    sbox = (x1 - sw * 0.6, y1 - 0.06 * (y1 - y0), x1 + sw * 0.6, y1 + 0.02 * (y1 - y0))
    layer = _draw_shape(("shadow", i, ""), canvas.size, sbox, "ellipse", (0, 0, 1, 1))
    if layer is not None:
        layer.mask &= ~canvas.upper_region[layer.sl]
        region = canvas.pixels[layer.sl]
        _paint(region, layer.mask, (region.astype(np.uint16) * 3 // 5).astype(np.uint8))
        canvas.layers.append(layer)


def _visible_pixels(canvas: _Canvas) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Walk the layers front to back, removing what is already covered: sets each layer's
    ``visible``; returns the covered pixels and each object's full (unoccluded) mask."""
    shape = canvas.shape
    covered = np.zeros(shape, dtype=bool)
    full_by_object: dict[int, np.ndarray] = {}
    for layer in reversed(canvas.layers):
        kind, i, _ = layer.owner
        layer.visible = layer.mask & ~covered[layer.sl]
        if kind != "shadow":  # shadows are painted on the ground, under everything
            covered[layer.sl] |= layer.mask
        if kind == "obj":
            if i not in full_by_object:
                full_by_object[i] = np.zeros(shape, dtype=bool)
            full_by_object[i][layer.sl] |= layer.mask
    return covered, full_by_object


def _add(scene: Scene, node: Node, nominal: BoundsTuple | None = None) -> Node | None:
    """Add ``node`` to the scene (None when its mask is empty), under its parent."""
    b = _mask_bounds(node.mask)
    if b is None:
        return None
    node.area = int(np.count_nonzero(node.mask))
    node.bounds = _overrun(b, nominal, scene.width, scene.height) if nominal is not None else b
    node.idx = len(scene.nodes)
    scene.nodes.append(node)
    if node.parent >= 0:
        scene.nodes[node.parent].children.append(node.idx)
    return node


def _annotate_backgrounds(
    scene: Scene,
    canvas: _Canvas,
    rng: np.random.Generator,
    backgrounds: dict[str, str],
    covered: np.ndarray,
) -> None:
    """Backgrounds first (top level), their details (clouds, shadows) as children."""
    (upper, upper_color), (lower, lower_color) = backgrounds.items()
    upper_region = canvas.upper_region
    upper_node = _add(scene, Node(0, "background", upper, upper_color, upper_region & ~covered))
    lower_vis = ~upper_region & ~covered
    quality = _quality(rng, 0.12, 0.08)
    lower_node = _add(scene, Node(0, "background", lower, lower_color, lower_vis, quality=quality))
    for layer in canvas.layers:
        kind, _, _ = layer.owner
        vis = layer.visible if layer.visible is not None else layer.mask
        if kind == "cloud" and upper_node is not None and np.count_nonzero(vis) > 80:
            q = _quality(rng, 0.5, 0.0)
            full = layer.full(vis, canvas.shape)
            cloud = Node(0, "detail", "cloud", "white", full, parent=upper_node.idx, quality=q)
            _add(scene, cloud, layer.nominal)
        elif kind == "shadow" and lower_node is not None and np.count_nonzero(vis) > 80:
            full = layer.full(vis, canvas.shape)
            shadow = Node(0, "detail", "", "", full, parent=lower_node.idx, quality=2)
            _add(scene, shadow, layer.nominal)


def _annotate_objects(
    scene: Scene,
    canvas: _Canvas,
    rng: np.random.Generator,
    planned: list[_PlannedObject],
    textures: list[str],
    part_colors: list[dict[str, str]],
) -> dict[int, Node]:
    """Each object visible enough to annotate (plan index -> node), with its position and parts."""
    shape = canvas.shape
    object_nodes: dict[int, Node] = {}
    for i, obj in enumerate(planned):
        own = [ly for ly in canvas.layers if ly.owner[0] == "obj" and ly.owner[1] == i]
        vis = np.zeros(shape, dtype=bool)
        for ly in own:
            vis[ly.sl] |= ly.visible if ly.visible is not None else ly.mask
        nominal = (int(obj.box[0]), int(obj.box[1]), round(obj.box[2]), round(obj.box[3]))
        if np.count_nonzero(vis) < 400:  # hidden behind nearer objects: not annotated
            continue
        q = _quality(rng, 0.05, 0.0)
        node = _add(
            scene,
            Node(
                0, "object", obj.kind, obj.color, vis, quality=q, texture=textures[i], size=obj.size
            ),
            nominal,
        )
        if node is None:
            continue
        object_nodes[i] = node
        node.position = _position(_centre(_mask_bounds(vis) or node.bounds)[0], scene.width)
        groups = _annotate_parts(scene, rng, node, own, part_colors[i], shape)
        _place_parts(scene, node, obj.box, groups)
    return object_nodes


def _position(cx: float, width: int) -> str:
    """Left, right or middle third (with margins); "" near a border between thirds."""
    third = width / 3.0
    margin = 0.04 * width
    if cx < third - margin:
        return "on the left"
    if cx > 2 * third + margin:
        return "on the right"
    if third + margin < cx < 2 * third - margin:
        return "in the middle"
    return ""


def _annotate_parts(
    scene: Scene,
    rng: np.random.Generator,
    node: Node,
    own: list[_Layer],
    colours: dict[str, str],
    shape: tuple[int, int],
) -> dict[str, list[Node]]:
    """One node per drawn part, grouped by noun for counts and placements."""
    groups: dict[str, list[Node]] = {}
    for ly in own:
        noun = ly.owner[2]
        pvis = ly.visible if ly.visible is not None else ly.mask
        if noun == "body" or np.count_nonzero(pvis) < 40:
            continue
        q = _quality(rng, 0.2, 0.1)
        full = ly.full(pvis, shape)
        part = _add(
            scene,
            Node(0, "part", noun, colours[noun], full, parent=node.idx, quality=q),
            ly.nominal,
        )
        if part is not None:
            groups.setdefault(noun, []).append(part)
    return groups


def _place_parts(
    scene: Scene, obj: Node, box: tuple[float, float, float, float], groups: dict[str, list[Node]]
) -> None:
    """Counts, placements inside the object and relations between part groups (with margins)."""
    ow, oh = box[2] - box[0], box[3] - box[1]
    ocx, ocy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    centres: dict[str, list[tuple[float, float]]] = {}
    for noun, parts in groups.items():
        centres[noun] = [_centre(_mask_bounds(p.mask) or p.bounds) for p in parts]
        words = set()
        for cx, cy in centres[noun]:
            dx, dy = (cx - ocx) / ow, (cy - ocy) / oh
            if dy < -0.2:
                words.add("at the top")
            elif dy > 0.2:
                words.add("at the bottom")
            elif dx < -0.2:
                words.add("on the left side")
            elif dx > 0.2:
                words.add("on the right side")
            else:
                words.add("")
        placement = words.pop() if len(words) == 1 else ""
        for p in parts:
            p.count = len(parts)
            p.placement = placement
    nouns = sorted(groups)
    for a in nouns:
        for b in nouns:
            if a >= b:
                continue
            ay = [c[1] for c in centres[a]]
            by = [c[1] for c in centres[b]]
            if max(ay) < min(by) - 0.15 * oh:
                scene.part_relations.append(Relation(groups[a][0].idx, "above", groups[b][0].idx))
            elif min(ay) > max(by) + 0.15 * oh:
                scene.part_relations.append(Relation(groups[a][0].idx, "below", groups[b][0].idx))


def _relate_objects(
    scene: Scene,
    nodes: list[Node],
    full_by_object: dict[int, np.ndarray],
    by_plan_index: dict[int, Node],
) -> None:
    """Left/right, above/below and in front/behind between object pairs, with margins."""
    plan_index = {n.idx: i for i, n in by_plan_index.items()}
    for ai, a in enumerate(nodes):
        for b in nodes[ai + 1 :]:
            acx, acy = _centre(_mask_bounds(a.mask) or a.bounds)
            bcx, bcy = _centre(_mask_bounds(b.mask) or b.bounds)
            if abs(acx - bcx) >= 0.12 * scene.width:
                word = "to the left of" if acx < bcx else "to the right of"
                scene.relations.append(Relation(a.idx, word, b.idx))
            elif abs(acy - bcy) >= 0.12 * scene.height and (
                a.bounds[3] <= b.bounds[1] or b.bounds[3] <= a.bounds[1]
            ):
                scene.relations.append(Relation(a.idx, "above" if acy < bcy else "below", b.idx))
            fa, fb = full_by_object[plan_index[a.idx]], full_by_object[plan_index[b.idx]]
            overlap = int(np.count_nonzero(fa & fb))
            if overlap >= 300 and overlap >= 0.03 * min(a.area, b.area):
                # Drawn later = nearer: b comes after a in drawing order.
                scene.relations.append(Relation(b.idx, "in front of", a.idx))
