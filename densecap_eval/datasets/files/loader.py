"""Users' own captioned images (``files``), read through Hugging Face ``datasets``.

``root`` (``--data-root PATH``) is one of:

- a JSONL / JSON, CSV / TSV or parquet file; image paths are relative to the file's folder;
- an ``imagefolder`` folder: images plus ``metadata.jsonl`` (or ``metadata.csv`` /
  ``metadata.parquet``) whose ``file_name`` column names each row's image;
- a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``, whose image
  column holds paths (relative to that folder) or embedded images.

Columns (each name can be mapped: ``image_column=``, ``caption_column=``, ``negative_column=``,
``box_column=``; None turns an optional column off):

- ``image`` (required): a path, or an embedded image (bytes). An embedded image is written once
  to ``<cache>/files-images/<sha256><suffix>`` (content-addressed), so the engine opens it by
  path and the embedding cache keys it by content.
- ``caption`` (required): a string or a list of strings, none of them empty.
- ``negative`` (optional): a string or a list of strings that do NOT match the row's image or box.
- ``box`` (optional): ``[x, y, width, height]`` in stored pixels (a list, or for CSV a string of
  four numbers such as ``"10 20 30 40"``); empty means the whole image.

Row -> record mapping. Rows are numbered from 1 in table order (``row 1`` is the first line of a
JSONL file, the first line after the header of a CSV file). Rows naming the same image (the
same file, or byte-identical embedded images) form ONE `ImageRecord`, images in order of first
appearance; its ``id`` is the image path as the table wrote it (relative to the input folder),
or for an embedded image its stored file name (``row N`` when it has none), prefixed with
``<split>/`` when the input has several splits.

- A row WITHOUT a box describes the whole image: each caption becomes a record text
  ``Text(c, role="description", kind="caption")`` and ``Text(c, role="positive",
  kind="caption")``; each negative ``Text(n, role="negative", kind="caption")``. Every text's
  ``meta["row"]`` is its row number; a negative's ``meta["positive"]`` is the index (among the
  record's positives) of its own row's FIRST caption, the positive it is paired with.
- A row WITH a box is a REGION of its image: ``RegionText(box, texts, key="row N")`` with the
  same texts (descriptions, positives, negatives of that row); the box is converted to (left,
  top, right, bottom) = (floor x, floor y, ceil(x + width), ceil(y + height)) and clamped to the
  image (its size read from the header only).

So ``files/retrieval`` uses each image's FIRST whole-image caption (images with only boxed rows
have none and are skipped by that task), ``files/negatives`` the whole-image rows' negatives,
each against its row's first caption (a boxed row's negatives belong to its region and are not
used there), and ``files/regions`` the regions of images with at least two boxed rows.

Bad rows (no image, image file missing or not readable by Pillow, empty or non-string caption,
malformed negative, malformed box, box outside the image) are skipped loudly and listed in
``skipped`` as ``row N`` with the reason; ``strict=True`` stops at the first. Whole-input
problems (no such path, unknown format, unreadable table, missing column, no rows) raise
`DatasetError`. An input holding one table has one split, ``all``; a saved ``DatasetDict`` or
an imagefolder with split folders keeps its split names.

Bad input (docs/data.md). A ``.jsonl`` input is read with the shared JSON Lines reader
(`densecap_eval.datasets.guards`): a line that is not UTF-8 or not a JSON object is one bad row
(``row N``, N its line number), as in every family. A ``.csv`` / ``.tsv`` input is read with
Python's csv module under the same rule (a row not UTF-8, with the wrong number of fields or
refused by the parser is one bad row; values are strings, an empty cell is no value). Paths: a user's own manifest may name
absolute image paths; relative ones resolve against the manifest's folder (``..`` allowed: it is
the user's data), unlike a published release's, which may only name files inside it. A table
with no usable row left is refused by the evaluation (exit 1).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.guards import iter_json_lines
from densecap_eval.datasets.hub import HF_CACHE_DIR, image_parts, materialise_image, quiet_hf
from densecap_eval.datasets.records import ImageRecord, RegionText, Text
from densecap_eval.datasets.regions import Box

ALL_SPLIT = "all"  # the split of an input that holds one table
# How users map a column, for error messages (the CLI passes dataset options through).
OPTION_HINT = "--dataset-option {option}=NAME on the command line, {option}= in Python"

_FILE_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".parquet": ("parquet", {}),
}
_METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
# Folder names Hugging Face's imagefolder reads as splits.
_SPLIT_DIRS = (
    "train",
    "training",
    "test",
    "testing",
    "eval",
    "evaluation",
    "validation",
    "valid",
    "val",
    "dev",
)
_SAVED_FILES = ("dataset_dict.json", "state.json")
_BOX_SPLIT = re.compile(r"[\s,;]+")
_EPS = 1e-6  # float noise allowed when rounding box edges outward


@dataclass(frozen=True)
class _Row:
    """One usable row: its image (a file), the image's size and the row's texts and box."""

    number: int
    image: Path
    image_key: str  # rows with the same key share one record
    image_label: str  # the record id this row proposes (its image's name)
    size: tuple[int, int]
    captions: tuple[str, ...]
    negatives: tuple[str, ...]
    box: Box | None


class FilesDataset(DatasetBase):
    """A user's table of captioned images (module doc: formats, columns, row -> record).

    On `DatasetBase` with three departures the base allows: the root may be a single file
    (`check_root`), the splits are the table's own (`splits`), and the fingerprint keeps the
    framing it had before the base (`_file_entry`), so stored runs' fingerprints still match.
    """

    name = "files"
    title = "files"

    def __init__(
        self,
        root: str | Path,
        *,
        strict: bool = False,
        image_column: str = "image",
        caption_column: str = "caption",
        negative_column: str | None = "negative",
        box_column: str | None = "box",
    ) -> None:
        super().__init__(Path(root).expanduser(), strict=strict)
        self.columns = {
            "image_column": image_column,
            "caption_column": caption_column,
            "negative_column": negative_column,
            "box_column": box_column,
        }
        self.format, self._base = self._detect()
        self._tables = self._load()
        self._optional = self._check_columns()

    def __repr__(self) -> str:
        return f"FilesDataset({str(self.root)!r}, strict={self.strict}, format={self.format!r})"

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        """What files reads (there is nothing to download: the data is the user's own)."""
        del root
        return (
            "files reads a JSONL, CSV or parquet file, an imagefolder with metadata.jsonl, "
            "or a save_to_disk folder"
        )

    def check_root(self) -> None:
        """The root may be a table file as well as a folder."""
        if not (self.root.is_file() or self.root.is_dir()):
            raise DatasetError(
                f"{self.root}: no such file or folder ({self.how_to_get(self.root)})"
            )

    def _detect(self) -> tuple[str, Path]:
        """(format, the folder relative image paths start from)."""
        root = self.root
        if root.is_file():
            suffix = root.suffix.lower()
            if suffix not in _FILE_BUILDERS:
                known = ", ".join(_FILE_BUILDERS)
                raise DatasetError(
                    f"{root}: unknown file format {suffix or '(no suffix)'!r} "
                    f"(files reads {known}, an imagefolder or a save_to_disk folder)"
                )
            return _FILE_BUILDERS[suffix][0], root.parent
        if any((root / name).is_file() for name in _SAVED_FILES):
            return "save_to_disk", root
        if any((root / name).is_file() for name in _METADATA_FILES):
            return "imagefolder", root
        if any(
            (root / split / name).is_file() for split in _SPLIT_DIRS for name in _METADATA_FILES
        ):
            return "imagefolder", root  # split folders (train/, test/) with their metadata
        raise DatasetError(
            f"{root} is a folder but neither an imagefolder (no metadata.jsonl) nor a "
            "save_to_disk folder (no state.json or dataset_dict.json)"
        )

    def _load(self) -> dict[str, Any]:
        """Split name -> Hugging Face Dataset, image columns left undecoded."""
        import datasets

        from densecap_eval.core.paths import default_cache_dir

        cache = str(default_cache_dir() / HF_CACHE_DIR)
        suffix = self.root.suffix.lower()
        if self.root.is_file() and suffix in (".jsonl", ".csv", ".tsv"):
            # Line-oriented tables are read here, so one bad line is one bad row (as in every
            # family's JSON Lines), never the whole file: Hugging Face's readers refuse it.
            lines: _JsonLinesTable | _CsvTable = (
                _JsonLinesTable(self.root)
                if suffix == ".jsonl"
                else _CsvTable(self.root, delimiter="\t" if suffix == ".tsv" else ",")
            )
            if not len(lines):
                raise DatasetError(f"{self.root} has no rows")
            return {ALL_SPLIT: lines}
        try:
            with quiet_hf():
                if self.format == "save_to_disk":
                    loaded = datasets.load_from_disk(str(self.root))
                elif self.format == "imagefolder":
                    loaded = datasets.load_dataset(
                        "imagefolder", data_dir=str(self.root), cache_dir=cache
                    )
                else:
                    builder, kwargs = _FILE_BUILDERS[self.root.suffix.lower()]
                    loaded = datasets.load_dataset(
                        builder, data_files=str(self.root), cache_dir=cache, **kwargs
                    )
        except Exception as exc:  # anything the reader raises means the input is unreadable
            if self.format != "save_to_disk" and _no_rows(self.root, self.format):
                raise DatasetError(f"{self.root} has no rows") from None  # HF's message is cryptic
            raise DatasetError(
                f"cannot read {self.root} as {self.format}: {_one_line(exc)}"
            ) from exc
        if isinstance(loaded, datasets.Dataset):
            tables = {ALL_SPLIT: loaded}
        elif len(loaded) == 1:
            tables = {ALL_SPLIT: next(iter(loaded.values()))}
        else:
            tables = dict(loaded)
        for split, table in tables.items():
            for column, feature in table.features.items():
                if isinstance(feature, datasets.Image) and feature.decode:
                    table = table.cast_column(column, datasets.Image(decode=False))
            tables[split] = table
        if not any(len(t) for t in tables.values()):
            raise DatasetError(f"{self.root} has no rows")
        return tables

    def _check_columns(self) -> dict[str, str | None]:
        """Raise for a missing required (or explicitly mapped) column; the optional ones in use."""
        defaults = {"negative_column": "negative", "box_column": "box"}
        optional: dict[str, str | None] = {}
        for split, table in self._tables.items():
            names = list(table.column_names)
            where = str(self.root) if len(self._tables) == 1 else f"{self.root} (split {split})"
            for option, column in self.columns.items():
                if column is None and option not in defaults:
                    raise DatasetError(f"{option} is required; it cannot be None")
                if column is None or column in names:
                    continue
                if option in defaults and column == defaults[option]:
                    continue  # an optional column under its default name may be absent
                kind = option.removesuffix("_column")
                raise DatasetError(
                    f"{where} has no {kind} column {column!r} (columns: "
                    f"{', '.join(names) or 'none'}); map yours with "
                    f"{OPTION_HINT.format(option=option)}"
                )
        for option in ("negative_column", "box_column"):
            column = self.columns[option]
            present = column is not None and all(
                column in t.column_names for t in self._tables.values()
            )
            optional[option] = column if present else None
        return optional

    # --- the skeleton's hooks ----------------------------------------------------------------

    def splits(self) -> list[str]:
        """The table's own splits: ``all`` for one table, else a DatasetDict's or the
        imagefolder's split names."""
        return list(self._tables)

    def splits_source(self) -> Path:
        return self.root

    def fingerprint_extra(self, splits: Sequence[str]) -> object:
        """The format, the column mapping and the splits: the same bytes read another way are
        other records."""
        return [self.format, self.columns, sorted(set(splits))]

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """A table file whole; a folder by the bytes of its metadata / state files and the
        ``[path, size]`` of every other file (image files are not read, as for DCI's photos)."""
        del splits  # a folder's files hold every split; the split names are in the extra
        if self.root.is_file():
            return [FingerprintFile(self.root.name, self.root, header=_no_header)]
        found = sorted(p for p in self.root.rglob("*") if p.is_file())
        return [_file_entry(path, path.relative_to(self.root).as_posix()) for path in found]

    def skip_where(self, error: BadRecordError) -> str:
        """A skipped row is named with its input: ``<root> row N``."""
        return f"{self.root} {error.image}"

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """One record per image of ``split`` (every split when None); see the module doc."""
        self.check_split(split)
        for name in [split] if split is not None else list(self._tables):
            yield from self._split_records(name)

    # --- rows -> records ----------------------------------------------------------------------

    def _split_records(self, split: str) -> Iterator[ImageRecord]:
        prefix = f"{split}/" if len(self._tables) > 1 else ""
        row_name = f"{split} row" if len(self._tables) > 1 else "row"
        sizes: dict[Path, tuple[int, int] | str] = {}

        def parse(item: tuple[int, Mapping[str, Any] | str]) -> _Row:
            number, raw = item
            try:
                return self._parse_numbered(number, raw, sizes)
            except BadRecordError as exc:  # named as the user sees the row: "<split> row N"
                raise BadRecordError(f"{row_name} {number}", exc.reason) from None

        numbered = _numbered(self._tables[split])
        items = ((f"{row_name} {number}", (number, raw)) for number, raw in numbered)
        groups: dict[str, list[_Row]] = {}
        for row in self.iter_parsed(items, parse):
            groups.setdefault(row.image_key, []).append(row)
        yield from self._group_records(split, prefix, row_name, groups)

    def _group_records(
        self, split: str, prefix: str, row_name: str, groups: dict[str, list[_Row]]
    ) -> Iterator[ImageRecord]:
        """One record per image group, in order of first appearance (see the module doc)."""
        used: set[str] = set()
        for rows in groups.values():
            first = rows[0]
            record_id = prefix + first.image_label
            if record_id in used:  # two embedded images stored under one name
                record_id = f"{prefix}{first.image_label}#row {first.number}"
            used.add(record_id)
            texts: list[Text] = []
            regions: list[RegionText] = []
            positives = 0  # the record's positives so far: where this row's first one sits
            for row in rows:
                if row.box is None:
                    texts.extend(_row_texts(row, positives))
                    positives += len(row.captions)
                else:
                    key = f"{row_name} {row.number}"
                    regions.append(RegionText(row.box, _row_texts(row, 0), key=key))
            yield ImageRecord(
                record_id,
                first.image,
                tuple(texts),
                split=split,
                regions=tuple(regions),
                meta={"rows": [row.number for row in rows], "size": list(first.size)},
            )

    def _parse_numbered(
        self, number: int, raw: Mapping[str, Any] | str, sizes: dict[Path, tuple[int, int] | str]
    ) -> _Row:
        """One row, or a line that holds no row (a str: why, see _JsonLinesTable)."""
        if isinstance(raw, str):
            where = f"line {number}" if self.root.suffix.lower() == ".jsonl" else "row"
            raise BadRecordError(f"row {number}", f"{where}: {raw}")
        return self._parse_row(number, raw, sizes)

    def _parse_row(
        self, number: int, raw: Mapping[str, Any], sizes: dict[Path, tuple[int, int] | str]
    ) -> _Row:
        """Validate one row; raises BadRecordError(row, reason) naming the first problem."""
        name = f"row {number}"
        image_col = self.columns["image_column"]
        caption_col = self.columns["caption_column"]
        assert image_col is not None and caption_col is not None  # required, checked on open
        path, key, label = self._image(name, raw.get(image_col), number)
        size = sizes.get(path)
        if size is None:
            size = sizes[path] = _header_size(path)
        if isinstance(size, str):
            raise BadRecordError(name, size)
        captions = _strings(name, raw.get(caption_col), "caption", required=True)
        negatives: tuple[str, ...] = ()
        neg_col = self._optional["negative_column"]
        if neg_col is not None:
            negatives = _strings(name, raw.get(neg_col), "negative", required=False)
        box = None
        box_col = self._optional["box_column"]
        if box_col is not None:
            box = _box(name, raw.get(box_col), size)
        return _Row(number, path, key, label, size, captions, negatives, box)

    def _image(self, name: str, value: Any, number: int) -> tuple[Path, str, str]:
        """(file, grouping key, record id) of a row's image value."""
        parts = image_parts(value)
        if parts is None:
            raise BadRecordError(
                name, f"image is neither a path nor an image (found {type(value).__name__})"
            )
        data, stored = parts
        if data:
            path = materialise_image(name, data, stored)
            label = Path(stored).name if stored else f"row {number}"
            return path, f"sha256:{path.stem}", label
        if not stored or not stored.strip():
            raise BadRecordError(name, "no image (the image column is empty)")
        written = Path(stored).expanduser()
        path = written if written.is_absolute() else self._base / written
        if not path.is_file():
            where = "" if written.is_absolute() else f" (looked for {path})"
            raise BadRecordError(name, f"image {stored} not found{where}")
        try:
            label = path.resolve().relative_to(self._base.resolve()).as_posix()
        except ValueError:
            label = written.as_posix()
        return path, str(path.resolve()), label


class _JsonLinesTable:
    """A JSONL file read line by line with the shared reader (`guards.iter_json_lines`), so a
    line that is not UTF-8 or not a JSON object is one bad row, as in every other family's
    JSON Lines, instead of the whole file (Hugging Face's JSON reader refuses the file)."""

    def __init__(self, path: Path) -> None:
        self.features: dict[str, Any] = {}  # no Hugging Face features: plain JSON values
        self.rows: list[tuple[int, dict[str, Any] | str]] = [
            (number, value if value is not None else str(problem))
            for number, value, problem in iter_json_lines(path)
        ]
        names: dict[str, None] = {}
        for _, value in self.rows:
            if isinstance(value, dict):
                names.update(dict.fromkeys(value))
        if self.rows and not names:
            first = self.rows[0]
            raise DatasetError(
                f"{path} is not JSON Lines (no line holds a JSON object; line {first[0]}: "
                f"{first[1]}); files reads one JSON object a line"
            )
        self.column_names = list(names)

    def __len__(self) -> int:
        return len(self.rows)


class _CsvTable:
    """A CSV / TSV file read with Python's csv module: row N is the N-th data row after the
    header (Hugging Face's numbering); a row that is not UTF-8 or has another number of fields
    than the header is one bad row, and so is one the parser refuses (a stray quote, an
    unterminated quote at the end of a truncated file); the rows after it are read on. Values
    are strings; an empty cell is
    None (no value), as the Hugging Face reader gives it."""

    def __init__(self, path: Path, *, delimiter: str) -> None:
        self.features: dict[str, Any] = {}
        self.rows: list[tuple[int, dict[str, Any] | str]] = []
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long captions are fine
        try:
            # utf-8-sig: a byte-order mark is not part of the first column's name;
            # surrogateescape: a bad byte marks its row, found below, not the file
            with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
                reader = csv.reader(fh, delimiter=delimiter, strict=True)
                header = self._header(path, reader)
                number = 0
                while True:
                    try:
                        fields = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:  # the reader goes on at the next line
                        number += 1
                        self.rows.append((number, f"not {path.suffix[1:].upper()} ({exc})"))
                        continue
                    if not fields:
                        continue  # a blank line
                    number += 1
                    self.rows.append((number, self._row(header, fields)))
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.column_names = header

    @staticmethod
    def _header(path: Path, reader: Any) -> list[str]:
        try:
            header: list[str] = next(reader, [])
        except csv.Error as exc:
            raise DatasetError(f"cannot read {path} as CSV: {exc}") from None
        if not _is_utf8(header):
            raise DatasetError(f"{path}: the header line is not UTF-8 text")
        return [name.strip() for name in header]

    @staticmethod
    def _row(header: list[str], fields: list[str]) -> dict[str, Any] | str:
        if not _is_utf8(fields):
            return "not UTF-8 text"
        if len(fields) != len(header):
            return f"{len(fields)} fields, the header has {len(header)}"
        return {
            name: (value if value != "" else None)
            for name, value in zip(header, fields, strict=True)
        }

    def __len__(self) -> int:
        return len(self.rows)


def _is_utf8(fields: list[str]) -> bool:
    try:
        for field in fields:
            field.encode("utf-8")
    except UnicodeEncodeError:  # a byte surrogateescape kept: the file's bytes were not UTF-8
        return False
    return True


def _numbered(table: Any) -> Iterator[tuple[int, Any]]:
    """(row number, row) of a table: a JSONL file's line numbers, else counted from 1."""
    if isinstance(table, _JsonLinesTable | _CsvTable):
        return iter(table.rows)
    return enumerate(table, start=1)


def _row_texts(row: _Row, first_positive: int) -> tuple[Text, ...]:
    """A row's descriptions, positives and negatives; each negative names (``meta["positive"]``,
    an index into its record's or region's positives) its row's first caption."""
    meta = {"row": row.number}
    neg_meta = {"row": row.number, "positive": first_positive}
    return (
        *(Text(c, role="description", kind="caption", meta=meta) for c in row.captions),
        *(Text(c, role="positive", kind="caption", meta=meta) for c in row.captions),
        *(Text(n, role="negative", kind="caption", meta=neg_meta) for n in row.negatives),
    )


def _strings(name: str, value: Any, what: str, *, required: bool) -> tuple[str, ...]:
    """A string or a list of strings, none empty; None / "" / [] is none (bad when required)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        items: list[Any] = []
    elif isinstance(value, str):
        items = [value] if value.strip() or required else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise BadRecordError(
            name, f"{what} is not a string or a list of strings (found {type(value).__name__})"
        )
    if required and not items:
        raise BadRecordError(name, f"empty {what}")
    for i, item in enumerate(items, start=1):
        which = what if len(items) == 1 else f"{what} {i} of {len(items)}"
        if not isinstance(item, str):
            raise BadRecordError(name, f"{which} is not a string (found {type(item).__name__})")
        if not item.strip():
            raise BadRecordError(name, f"empty {which}")
    return tuple(items)


def _box(name: str, value: Any, size: tuple[int, int]) -> Box | None:
    """``[x, y, w, h]`` (pixels) -> clamped (left, top, right, bottom); None: whole image."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    malformed = BadRecordError(name, f"box {value!r} is not four numbers x, y, width, height")
    if isinstance(value, str):  # CSV: "10 20 30 40", "10,20,30,40" or "[10, 20, 30, 40]"
        text = value.strip().strip("[]()").strip()
        if not text:
            return None
        items: list[Any] = _BOX_SPLIT.split(text)
    elif isinstance(value, (list, tuple)):
        items = [
            v if isinstance(v, (int, float)) and not isinstance(v, bool) else "" for v in value
        ]
    else:
        raise malformed
    try:
        numbers = [float(v) for v in items]
    except ValueError:
        raise malformed from None
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        raise malformed
    x, y, w, h = numbers
    if w <= 0 or h <= 0:
        raise BadRecordError(name, f"box {value!r} has a width or height <= 0")
    width, height = size
    left = max(0, math.floor(x + _EPS))
    top = max(0, math.floor(y + _EPS))
    right = min(width, math.ceil(x + w - _EPS))
    bottom = min(height, math.ceil(y + h - _EPS))
    if right <= left or bottom <= top:
        raise BadRecordError(name, f"box {value!r} lies outside the {width}x{height} image")
    return (left, top, right, bottom)


def _header_size(path: Path) -> tuple[int, int] | str:
    """(width, height) from the image header only, or why Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except UnidentifiedImageError:
        return f"image {path} is not an image Pillow can read"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"image {path} cannot be read ({exc})"


def _no_rows(root: Path, fmt: str) -> bool:
    """Whether a table file (or an imagefolder's metadata file) holds no data rows."""
    if root.is_dir():
        found = [root / name for name in _METADATA_FILES if (root / name).is_file()]
        if not found:
            return False
        root, fmt = found[0], _FILE_BUILDERS[found[0].suffix][0]
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return bool(pq.ParquetFile(root).metadata.num_rows == 0)
        with root.open("r", encoding="utf-8", errors="replace") as fh:
            lines = [line for line in (raw.strip() for raw in fh) if line]
    except Exception:  # not a table at all: the caller reports the reader's error
        return False
    if fmt == "csv":
        return len(lines) <= 1  # the header only
    return not lines or "".join(lines) in ("[]", "{}")


def _file_entry(path: Path, rel: str) -> FingerprintFile:
    """A folder's file as the fingerprint has always hashed it: a metadata / state / table file
    by its relative path and bytes, any other (an image, an arrow shard) by ``[path, size]``."""
    if path.suffix in (".json", ".jsonl", ".csv", ".tsv") or path.name.startswith("metadata."):
        return FingerprintFile(rel, path, header=_path_header)
    return FingerprintFile(rel, path, content=False, header=_path_size_header)


# The framings the fingerprint used before DatasetBase (see FingerprintFile.header).
def _no_header(label: str, size: int) -> bytes:
    del label, size
    return b""


def _path_header(label: str, size: int) -> bytes:
    del size
    return label.encode()


def _path_size_header(label: str, size: int) -> bytes:
    return json.dumps([label, size]).encode()


def _one_line(exc: BaseException) -> str:
    """The innermost explicit cause's message, first line (Hugging Face wraps the useful one
    in a generic "An error occurred while generating the dataset")."""
    inner: BaseException = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner).strip().splitlines()
    return text[0] if text else type(inner).__name__
