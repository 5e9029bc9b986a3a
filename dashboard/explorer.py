"""The example explorer's logic: filtering rows, word diffs, and drawing a region on its photo.

Nothing here needs Streamlit. Example rows come from examples.parquet (columns written by the
tasks: ``task, image, entry_key, box, positives, negative, negative_key, pos_scores, neg_score,
scm_correct, neg_correct, pos_tokens, neg_tokens, pos_cut, neg_cut, ...``); every function
copes with a column being absent, since retrieval and other tasks write other columns.
"""

from __future__ import annotations

import difflib
import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from densecap_eval.core.errors import DensecapError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from PIL import Image

    from densecap_eval.results.store import StoredRun

Outcome = Literal["all", "correct", "wrong", "disagree"]
OUTCOMES: tuple[str, ...] = ("all", "correct", "wrong", "disagree")
# Columns the explorer reads when a run has them; nothing else is loaded.
EXPLORER_COLUMNS: tuple[str, ...] = (
    "task",
    "image",
    "entry_key",
    "box",
    "positives",
    "negative",
    "negative_key",
    "pos_scores",
    "neg_score",
    "pos_tokens",
    "neg_tokens",
    "pos_cut",
    "neg_cut",
    "diff_position",
    "direction",
    "query",
    "text",
    "tokens",
    "cut",
    "rank",
    "rank_i2t",
    "rank_t2i",
)
KEY_COLUMNS: tuple[str, ...] = ("task", "image", "entry_key", "direction", "query", "text")
CORRECT_SUFFIX = "_correct"
PAGE_SIZE = 5
PAGE_SIZES: tuple[int, ...] = (5, 10, 20)
IMAGE_WIDTH = 480
BOX_COLOUR = (255, 64, 32)
MASK_COLOUR = (32, 160, 255)
_SUBCROP_KEY = re.compile(r"^m-(-?\d+)-sc$")
_TRAILING_INDEX = re.compile(r"_\d+$")


# --------------------------------------------------------------------------- columns


def correct_columns(columns: Iterable[str], declared: Iterable[str] = ()) -> list[str]:
    """Per-example correct flags, Neg first: the outcome columns the run's tasks declared
    (`declared_outcome_columns`) and, for runs stored before declarations, ``*_correct``."""
    wanted = set(declared)
    found = [c for c in columns if c in wanted or c.endswith(CORRECT_SUFFIX)]
    return sorted(found, key=lambda c: (c != "neg_correct", c != "scm_correct", _natural(c)))


def declared_outcome_columns(run: StoredRun) -> list[str]:
    """The per-example outcome columns the run's tasks declared in its run card."""
    card = run.card
    if card is None:
        return []
    specs = [spec for task in card.metric_specs for spec in card.specs_for(task)]
    return list(dict.fromkeys(spec.column for spec in specs if spec.column is not None))


def _natural(name: str) -> list[Any]:
    """Sort key putting ``i2t_r5`` before ``i2t_r10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def explorer_columns(available: Iterable[str], declared: Iterable[str] = ()) -> list[str]:
    """The columns a view of the explorer reads: the known ones a run has, plus its flags."""
    have = list(available)
    return [c for c in EXPLORER_COLUMNS if c in have] + correct_columns(have, declared)


def negative_type(key: Any) -> str:
    """The kind of a negative from its key: ``swaps_0`` -> ``swaps``, ``layout_12`` -> ``layout``."""
    if not isinstance(key, str) or not key:
        return "(none)"
    return _TRAILING_INDEX.sub("", key)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    tolist = getattr(value, "tolist", None)  # numpy arrays from parquet list columns
    if callable(tolist):
        result = tolist()
        return result if isinstance(result, list) else [result]
    return [value]


def caption_tokens(frame: pd.DataFrame) -> pd.Series:
    """The untruncated token count of each example's positive text (the longest of a bag).

    Falls back to any ``*tokens`` column a task wrote (retrieval texts); NaN when none.
    """
    import pandas as pd

    for column in ("pos_tokens", "tokens", "text_tokens", "query_tokens"):
        if column in frame.columns:
            counts = [max((int(v) for v in as_list(x) if v is not None), default=None)
                      for x in frame[column]]  # fmt: skip
            return pd.Series(counts, index=frame.index, dtype="Float64")
    return pd.Series(float("nan"), index=frame.index, dtype="Float64")


# --------------------------------------------------------------------------- filtering


@dataclass(frozen=True)
class ExampleFilter:
    """What the explorer's sidebar asks for; ``None`` fields do not filter."""

    outcome: Outcome = "all"
    flag: str = "neg_correct"
    negative_types: tuple[str, ...] | None = None
    tokens: tuple[int, int] | None = None


def join_keys(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Identity columns both frames hold as scalars (list columns cannot be merge keys)."""
    keys = []
    for column in KEY_COLUMNS:
        if column in a.columns and column in b.columns:
            sample = a[column].dropna()
            if sample.empty or not _is_sequence(sample.iloc[0]):
                keys.append(column)
    return keys


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (
        hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0
    )


def attach_other(frame: pd.DataFrame, other: pd.DataFrame, flag: str) -> pd.DataFrame:
    """``frame`` with ``other_correct``: the other run's ``flag`` on the same example (or NA)."""
    keys = join_keys(frame, other)
    if not keys or flag not in other.columns:
        out = frame.copy()
        out["other_correct"] = None
        return out
    right = (
        other[[*keys, flag]].drop_duplicates(subset=keys).rename(columns={flag: "other_correct"})
    )
    merged = frame.reset_index().merge(right, on=keys, how="left").set_index("index")
    merged.index.name = None
    return merged


def filter_examples(frame: pd.DataFrame, spec: ExampleFilter) -> pd.DataFrame:
    """The rows matching ``spec``; ``disagree`` needs ``other_correct`` (see `attach_other`)."""
    keep = frame.index == frame.index
    if spec.outcome != "all":
        if spec.flag not in frame.columns:
            raise DensecapError(f"this run has no {spec.flag!r} column to filter on")
        mine = frame[spec.flag].astype("boolean")
        if spec.outcome == "correct":
            keep &= mine.fillna(False).to_numpy(dtype=bool)
        elif spec.outcome == "wrong":
            keep &= (~mine).fillna(False).to_numpy(dtype=bool)
        else:
            if "other_correct" not in frame.columns:
                raise DensecapError("pick a second run to find the examples the two disagree on")
            theirs = frame["other_correct"].astype("boolean")
            keep &= (mine != theirs).fillna(False).to_numpy(dtype=bool)
    if spec.negative_types is not None and "negative_key" in frame.columns:
        keep &= frame["negative_key"].map(negative_type).isin(spec.negative_types).to_numpy()
    if spec.tokens is not None:
        counts = caption_tokens(frame)
        lo, hi = spec.tokens
        keep &= ((counts >= lo) & (counts <= hi)).fillna(False).to_numpy(dtype=bool)
    return frame[keep]


def page_of(frame: pd.DataFrame, page: int, *, size: int = PAGE_SIZE) -> pd.DataFrame:
    """Rows of page ``page`` (1-based, clamped): the explorer never draws more than ``size``."""
    pages = page_count(len(frame), size=size)
    page = min(max(page, 1), pages)
    return frame.iloc[(page - 1) * size : page * size]


def page_count(n: int, *, size: int = PAGE_SIZE) -> int:
    return max(1, -(-n // size))


# --------------------------------------------------------------------------- word diff


def _words(text: str) -> list[str]:
    return text.split()


def word_diff(
    positive: str, negative: str
) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Both texts as (word, changed) pairs: the words that differ between them are marked."""
    a, b = _words(positive), _words(negative)
    marked_a = [(w, False) for w in a]
    marked_b = [(w, False) for w in b]
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for i in range(i1, i2):
            marked_a[i] = (a[i], True)
        for j in range(j1, j2):
            marked_b[j] = (b[j], True)
    return marked_a, marked_b


def diff_html(words: Sequence[tuple[str, bool]], *, colour: str) -> str:
    """Words as escaped HTML, changed ones on a coloured background."""
    parts = []
    for word, changed in words:
        text = html.escape(word)
        if changed:
            text = (
                f'<span style="background:{colour};border-radius:3px;padding:0 2px">{text}</span>'
            )
        parts.append(text)
    return " ".join(parts)


def diff_pair_html(positive: str, negative: str) -> tuple[str, str]:
    """(positive, negative) as HTML with the changed words highlighted (green / red)."""
    pos, neg = word_diff(positive, negative)
    return diff_html(pos, colour="#b7f5c4"), diff_html(neg, colour="#ffc2c2")


# --------------------------------------------------------------------------- the region


@dataclass(frozen=True)
class RegionSource:
    """Where an example's pixels are: the photo, and the mask of a subcrop entry (if any)."""

    photo: Path
    mask: np.ndarray | None


def mask_index(entry_key: Any) -> int | None:
    """The mask id of a subcrop entry key (``m-12-sc`` -> 12); None for ``base`` and others."""
    if not isinstance(entry_key, str):
        return None
    match = _SUBCROP_KEY.match(entry_key)
    return int(match.group(1)) if match else None


def locate_region(dataset_root: str | Path, image: str, entry_key: Any) -> RegionSource:
    """Find an example's photo (and its mask) through the DCI loader; raises DensecapError."""
    from densecap_eval.datasets.dci.loader import DCIDataset
    from densecap_eval.datasets.dci.masks import decode_mask

    dataset = DCIDataset(dataset_root)
    record = dataset.load_record(image)
    photo = dataset.photo_path(record)
    if not photo.is_file():
        raise DensecapError(f"photo {photo} not found")
    number = mask_index(entry_key)
    mask = None
    if number is not None:
        found = next((m for m in record.masks.values() if m.idx == number), None)
        if found is not None and found.outer_mask:
            mask = decode_mask(found, image=image)
    return RegionSource(photo, mask)


def _box(value: Any) -> tuple[int, int, int, int] | None:
    items = as_list(value)
    if len(items) != 4 or any(v is None for v in items):
        return None
    left, top, right, bottom = (int(v) for v in items)
    return left, top, right, bottom


def draw_region(source: RegionSource, box: Any, *, width: int = IMAGE_WIDTH) -> Image.Image:
    """The photo scaled to ``width`` with the mask tinted and the crop box outlined.

    The photo is scaled down before the mask is laid on it (and a JPEG is decoded at a reduced
    size), so a full-size DCI photo costs about what the small picture costs.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    with Image.open(source.photo) as img:
        full = img.size
        scale = min(1.0, width / full[0])
        target = (max(1, round(full[0] * scale)), max(1, round(full[1] * scale)))
        img.draft("RGB", target)  # JPEG only: decode at 1/2, 1/4 or 1/8 size; else a no-op
        img.load()
        photo = img.convert("RGB")
    if photo.size != target:
        photo = photo.resize(target, Image.Resampling.BILINEAR)
    if source.mask is not None and source.mask.shape == (full[1], full[0]):
        alpha = Image.fromarray(source.mask.astype(np.uint8) * 110, mode="L")
        if alpha.size != target:
            alpha = alpha.resize(target, Image.Resampling.NEAREST)
        photo = Image.composite(Image.new("RGB", target, MASK_COLOUR), photo, alpha)
    crop = _box(box)
    if crop is not None:
        draw = ImageDraw.Draw(photo)
        left, top, right, bottom = (round(v * scale) for v in crop)
        draw.rectangle((left, top, max(left, right - 1), max(top, bottom - 1)),
                       outline=BOX_COLOUR, width=3)  # fmt: skip
    return photo


def region_png(dataset_root: str | Path, image: str, entry_key: Any, box: Any) -> bytes:
    """The drawn region as PNG bytes (what the page shows and caches)."""
    picture = draw_region(locate_region(dataset_root, image, entry_key), box)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- one example


def example_fields(row: Any) -> dict[str, Any]:
    """Scores, token counts and cut flags of one example (a Series or a dict), for display."""
    fields: dict[str, Any] = {}
    for column in ("pos_scores", "neg_score", "pos_tokens", "neg_tokens", "pos_cut", "neg_cut",
                   "diff_position", "negative_key"):  # fmt: skip
        if column in row:
            value = row[column]
            fields[column] = as_list(value) if column.startswith("pos_") else _scalar(value)
    return fields


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value
