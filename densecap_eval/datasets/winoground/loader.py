"""Read Winoground (Thrush et al., 2022) as the Hugging Face Hub stores it; no download (gated).

``facebook/winoground`` is gated: its files come only after accepting the terms on the Hub
with a logged-in account, so `download` fetches nothing and prints the steps. The data root is
the folder ``huggingface-cli download facebook/winoground --repo-type dataset --local-dir DIR``
wrote (``DIR``), or a folder holding it as ``winoground/``. Two layouts are read:

- the current one: ``README.md`` + ``data/test-*.parquet`` (all ``data/*.parquet`` when no file
  is named ``test-*``), read with Hugging Face ``datasets`` offline
  (``load_dataset("parquet", data_files=...)``); features ``id``, ``image_0``, ``image_1``
  (embedded images), ``caption_0``, ``caption_1``, ``tag``, ``secondary_tag``,
  ``num_main_preds``, ``collapsed_tag``;
- the 2022 one: ``data/examples.jsonl`` (one example a line, the same fields, the images as
  names such as ``ex_0_img_0``) + ``data/images.zip`` holding ``images/<name>.png``. Only the
  members the examples name are read from the zip (nothing is extracted to the data root); an
  already unzipped ``data/images/<name>.png`` is read when there is no zip.

Either way each image is written once, by content, to ``<cache>/files-images/<sha256>.<ext>``
(as `files` does with embedded images) so the engine opens it by path and the embedding cache
keys it by content. Images are decoded like the peers: ``convert("RGB")`` (the engine's
`open_photo`), so the alpha channel of an RGBA PNG is dropped, not composited.

One split, ``test`` (400 examples in the release). `examples` gives the `WinogroundExample`
list the task scores; `records` gives two neutral records per example (``ex_<id>_img_<k>``:
its caption as the description and positive, the other caption as the negative) for
``inspect``. A bad example (no id, a missing, empty or unreadable image, an empty or non-string
caption, an id seen before) is skipped loudly as ``ex_<id>`` (``row N`` without an id) with the
reason, or raised under ``strict``. A missing layout or an unreadable table raises
`DatasetError`.

Bad input (docs/data.md): every image is decoded from its bytes before it is written to the
cache (`photos.check_image_bytes`), so one that is truncated, not an image or over the pixel
limit is one bad example, named by its place in the release (``images.zip:images/...``, ``image_0
of row N in data/...parquet``), never by its cache copy. ``examples.jsonl`` is read with the
shared JSON Lines reader (a BOM, CRLF; one bad line is one bad row). A parquet table without
Winoground's columns is `DatasetError` (exit 1).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import DownloadMessage, Source
from densecap_eval.datasets.guards import SeenIds, iter_json_lines, missing_shards
from densecap_eval.datasets.hub import HF_CACHE_DIR, image_parts, materialise_image, quiet_hf
from densecap_eval.datasets.records import ImageRecord, Text

SPLIT = "test"
HUB_REPO = "facebook/winoground"
HUB_PAGE = f"https://huggingface.co/datasets/{HUB_REPO}"
SUBDIR = "winoground"  # the data root may hold the release under this name
DATA_DIR = "data"
EXAMPLES_FILE = "examples.jsonl"  # the 2022 layout
IMAGES_ZIP = "images.zip"
IMAGES_DIR = "images"
PARQUET = "parquet"
JSONL = "jsonl"
REQUIRED_COLUMNS = ("id", "image_0", "image_1", "caption_0", "caption_1")
TAG_FIELDS: tuple[str, ...] = ("tag", "secondary_tag", "collapsed_tag")
# Gated: fetched by the user with their own Hub token, never by densecap-eval.
SOURCES: dict[str, Source] = {"release": Source(HUB_REPO, HUB_PAGE, "hf-gated", install=SUBDIR)}


@dataclass(frozen=True)
class WinogroundExample:
    """One example: two images, two captions; caption k describes image k."""

    id: str
    images: tuple[Path, Path]  # files (content-addressed copies of the stored images)
    image_names: tuple[str, str]  # ``ex_<id>_img_0`` / ``ex_<id>_img_1``
    captions: tuple[str, str]
    tag: str | None = None
    secondary_tag: str | None = None
    collapsed_tag: str | None = None
    num_main_preds: int | None = None

    @property
    def key(self) -> str:
        """``ex_<id>``: the example's identity (the cluster of intervals and paired tests)."""
        return f"ex_{self.id}"


class WinogroundDataset(DatasetBase):
    """Winoground under ``root`` (module doc: layouts, images, bad examples)."""

    name = "winoground"
    title = "Winoground"
    declared_splits = (SPLIT,)

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        return (
            f"Winoground is gated on the Hugging Face Hub: see `densecap-eval download winoground "
            f"--root {root}` for the steps"
        )

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        self.base, self.layout, self.files = self._find(self.root)
        self._examples: list[WinogroundExample] | None = None

    @classmethod
    def _find(cls, root: Path) -> tuple[Path, str, list[Path]]:
        """(release folder, layout, the annotation files)."""
        for base in (root, root / SUBDIR):
            data = base / DATA_DIR
            parquet = sorted(data.glob("test-*.parquet")) or sorted(data.glob("*.parquet"))
            if parquet:
                missing = missing_shards(parquet)
                if missing:  # an interrupted snapshot: scoring the rest would drop examples
                    raise DatasetError(
                        f"{data} is missing {', '.join(missing)} (the other shards are there): "
                        f"the download is incomplete; run it again. {cls.how_to_get(root)}"
                    )
                return base, PARQUET, parquet
            if (data / EXAMPLES_FILE).is_file():
                return base, JSONL, [data / EXAMPLES_FILE]
        raise DatasetError(
            f"no Winoground data in {root}: expected {DATA_DIR}/test-*.parquet (the Hub's "
            f"layout) or {DATA_DIR}/{EXAMPLES_FILE} with {DATA_DIR}/{IMAGES_ZIP} (the 2022 "
            f"layout), there or under {SUBDIR}/; {cls.how_to_get(root)}"
        )

    # --- the Dataset protocol -----------------------------------------------------------------

    def splits_source(self) -> Path:
        return self.base

    def fingerprint_extra(self, splits: Sequence[str]) -> object:
        """The layout and its files' names; for the 2022 layout also each zip member's name,
        size and CRC-32 (the zip's bytes are not read)."""
        extra: list[object] = [self.layout, [p.name for p in self.files]]
        archive = self.base / DATA_DIR / IMAGES_ZIP
        if self.layout == JSONL and archive.is_file():
            try:
                with zipfile.ZipFile(archive) as zf:
                    extra.append([[i.filename, i.file_size, i.CRC] for i in zf.infolist()])
            except (OSError, zipfile.BadZipFile):
                extra.append([["unreadable", archive.stat().st_size]])
        return extra

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """The annotation files (the parquet files hold the images too)."""
        return [FingerprintFile(path.name, path) for path in self.files]

    def skip_where(self, error: BadRecordError) -> str:
        return f"{self.files[0] if self.layout == JSONL else self.base / DATA_DIR}: {error.image}"

    def examples(self, split: str | None = None) -> list[WinogroundExample]:
        """The usable examples in stored order (read, and their images written, once)."""
        self.check_split(split)
        if self._examples is None:
            rows = self._parquet_rows() if self.layout == PARQUET else self._jsonl_rows()
            self._examples = self._parse_rows(rows)
        return list(self._examples)

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Two records per example (module doc), ids ``ex_<id>_img_0`` / ``ex_<id>_img_1``."""
        for ex in self.examples(split):
            meta = {f: getattr(ex, f) for f in TAG_FIELDS} | {"example": ex.id}
            for k in (0, 1):
                mine, other = ex.captions[k], ex.captions[1 - k]
                texts = (
                    Text(mine, role="description", kind="caption"),
                    Text(mine, role="positive", kind="caption"),
                    Text(other, role="negative", kind="swapped", meta={"positive": 0}),
                )
                yield ImageRecord(ex.image_names[k], ex.images[k], texts, split=SPLIT, meta=meta)

    # --- reading ------------------------------------------------------------------------------

    def _parquet_rows(self) -> Iterator[Mapping[str, Any]]:
        import datasets

        from densecap_eval.core.paths import default_cache_dir

        try:
            with quiet_hf():
                table = datasets.load_dataset(
                    "parquet",
                    data_files={SPLIT: [str(p) for p in self.files]},
                    split=SPLIT,
                    cache_dir=str(default_cache_dir() / HF_CACHE_DIR),
                )
        except Exception as exc:  # whatever the reader raises, the table is unreadable
            raise DatasetError(
                f"cannot read {self.base / DATA_DIR} as parquet: {exc}; {self.how_to_get(self.root)}"
            ) from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise DatasetError(
                f"{self.base / DATA_DIR}: the parquet table has no {', '.join(missing)} column "
                f"(columns: {', '.join(table.column_names) or 'none'}): it is not Winoground's; "
                f"{self.how_to_get(self.root)}"
            )
        for column, feature in table.features.items():
            if isinstance(feature, datasets.Image) and feature.decode:
                table = table.cast_column(column, datasets.Image(decode=False))
        names = ", ".join(p.name for p in self.files)
        for row in table:
            yield {**row, "__source__": f"{DATA_DIR}/{names}"}

    def _jsonl_rows(self) -> Iterator[Mapping[str, Any]]:
        path = self.files[0]
        data = path.parent
        archive = data / IMAGES_ZIP
        folder = data / IMAGES_DIR
        if not archive.is_file() and not folder.is_dir():
            raise DatasetError(
                f"{archive} not found (nor an unzipped {folder}/): the 2022 layout keeps its "
                f"images there; {self.how_to_get(self.root)}"
            )
        lines = list(iter_json_lines(path))  # the shared policy: one bad line, one bad row
        if lines and all(raw is None for _, raw, _ in lines):
            raise DatasetError(
                f"{path} is not JSON Lines (no line holds a JSON object; line {lines[0][0]}: "
                f"{lines[0][2]}); {self.how_to_get(self.root)}"
            )
        zf = _open_zip(archive) if archive.is_file() else None
        try:
            members = _zip_index(zf) if zf is not None else {}
            for number, raw, problem in lines:
                if raw is None:
                    yield {"__error__": f"line {number}: {problem}", "__row__": number}
                    continue
                row: dict[str, Any] = {**raw, "__row__": number}
                for k in (0, 1):
                    row[f"image_{k}"], row[f"__source_{k}__"] = _named_image(
                        row.get(f"image_{k}"), zf, members, folder, archive
                    )
                yield row
        finally:
            if zf is not None:
                zf.close()

    def _parse_rows(self, rows: Iterator[Mapping[str, Any]]) -> list[WinogroundExample]:
        numbered = (
            (f"row {row}", (raw, row))
            for row, raw in ((int(raw.get("__row__", n)), raw) for n, raw in enumerate(rows, 1))
        )
        return list(
            self.iter_parsed(
                numbered,
                lambda item: _parse_row(*item),
                ids=SeenIds("id"),
                key=lambda ex: ex.id,
                image=lambda ex: ex.key,
            )
        )


# --- rows -------------------------------------------------------------------------------------


def _parse_row(raw: Mapping[str, Any], number: int) -> WinogroundExample:
    """One example from a row; raises BadRecordError naming the first problem."""
    if "__error__" in raw:
        raise BadRecordError(f"row {number}", str(raw["__error__"]))
    ident = raw.get("id")
    if ident is None or isinstance(ident, bool) or not str(ident).strip():
        raise BadRecordError(f"row {number}", "no id")
    ident = str(ident).strip()
    name = f"ex_{ident}"
    captions: list[str] = []
    for k in (0, 1):
        caption = raw.get(f"caption_{k}")
        if not isinstance(caption, str):
            found = "nothing" if caption is None else type(caption).__name__
            raise BadRecordError(name, f"caption_{k} is not a string (found {found})")
        if not caption.strip():
            raise BadRecordError(name, f"empty caption_{k}")
        captions.append(caption)
    images = tuple(
        _image_file(name, k, raw.get(f"image_{k}"), raw.get(f"__source_{k}__") or _where(raw, k))
        for k in (0, 1)
    )
    preds = raw.get("num_main_preds")
    return WinogroundExample(
        id=ident,
        images=(images[0], images[1]),
        image_names=(f"{name}_img_0", f"{name}_img_1"),
        captions=(captions[0], captions[1]),
        tag=_tag(raw.get("tag")),
        secondary_tag=_tag(raw.get("secondary_tag")),
        collapsed_tag=_tag(raw.get("collapsed_tag")),
        num_main_preds=int(preds) if isinstance(preds, (int, float)) and _finite(preds) else None,
    )


def _finite(value: float) -> bool:
    return not isinstance(value, bool) and math.isfinite(value)


def _tag(value: Any) -> str | None:
    """A tag as stored, stripped; None for a missing or empty one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _where(raw: Mapping[str, Any], k: int) -> str:
    """Where a parquet row's ``image_k`` lives in the release (for messages)."""
    return f"image_{k} of row {raw.get('__row__', '?')} in {raw.get('__source__', DATA_DIR)}"


def _image_file(name: str, k: int, value: Any, where: str) -> Path:
    """The content-addressed file of ``image_k`` (embedded bytes, or the bytes the 2022 layout's
    zip gave), after checking the bytes decode; BadRecordError naming ``where`` (the image's
    place in the release, not its cache copy) when missing or unusable."""
    from densecap_eval.datasets.photos import check_image_bytes

    if isinstance(value, BadRecordError):
        raise BadRecordError(name, f"image_{k}: {value.reason}")
    data, stored = image_parts(value) or (None, None)
    if not data:
        raise BadRecordError(name, f"no image_{k}")
    check_image_bytes(data, image=name, where=where)
    return materialise_image(name, data, stored or f"{name}_img_{k}.png")


# --- the 2022 layout's images -------------------------------------------------------------------


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot open {archive}: {exc}") from None


def _zip_index(zf: zipfile.ZipFile) -> dict[str, str]:
    """Image name (file stem, ``ex_0_img_0``) -> member name; ``images/<name>.png`` first."""
    index: dict[str, str] = {}
    for info in sorted(zf.infolist(), key=lambda i: (not i.filename.startswith("images/"),)):
        if info.is_dir() or info.filename.startswith("__MACOSX/"):
            continue
        index.setdefault(Path(info.filename).stem, info.filename)
    return index


def _named_image(
    value: Any, zf: zipfile.ZipFile | None, members: Mapping[str, str], folder: Path,
    archive: Path,
) -> tuple[bytes | BadRecordError, str]:  # fmt: skip
    """(the bytes of the image a 2022 row names (``ex_0_img_0``) or why there are none, where
    that image lives in the release)."""
    if not isinstance(value, str) or not value.strip():
        return BadRecordError("", "no image name"), ""
    stem = Path(value.strip()).stem
    if zf is not None:
        member = members.get(stem)
        if member is None:
            return BadRecordError("", f"{stem} is not in {IMAGES_ZIP}"), ""
        where = f"{archive}:{member}"
        try:
            return zf.read(member), where
        except (OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
            return BadRecordError("", f"cannot read {where} ({exc})"), where
    path = folder / f"{stem}.png"
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        return BadRecordError("", f"cannot read {path} ({exc.strerror or exc})"), str(path)


# --- download ---------------------------------------------------------------------------------


def download(
    root: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch nothing: Winoground is gated on the Hub. Returns the steps to get it by hand (and,
    when ``root`` already holds it, says so)."""
    del progress
    if url is not None or sha256 is not None:
        raise DownloadError(
            "Winoground is gated on the Hugging Face Hub: densecap-eval downloads nothing, so "
            "--url/--sha256 do not apply; follow the steps `densecap-eval download winoground` "
            "prints"
        )
    root = Path(root).expanduser()
    target = root / SUBDIR
    try:
        found = WinogroundDataset._find(root)[0]
    except DatasetError:
        found = None
    if found is not None:
        return DownloadMessage(
            f"Winoground is already in {found}; evaluate with --data-root {root}"
        )
    steps = "\n".join(
        [
            "To get Winoground by hand:",
            f"  1. sign in on huggingface.co and accept the terms at {HUB_PAGE}",
            "  2. log in on this machine with a token that can read it: huggingface-cli login",
            f"  3. huggingface-cli download {HUB_REPO} --repo-type dataset --local-dir {target}",
            f"then evaluate with --task winoground --data-root {root} (or --data-root {target})",
        ]
    )
    return DownloadMessage(
        "nothing downloaded: Winoground is gated on the Hugging Face Hub (accept its terms, "
        "then fetch it with your own token)",
        steps,
    )
