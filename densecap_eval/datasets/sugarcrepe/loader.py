"""Read SugarCrepe (Hsieh et al., NeurIPS 2023) in its released layout, and fetch its annotations.

The benchmark is the seven files ``data/<category>.json`` of the GitHub repository
``RAIVNLab/sugar-crepe`` (``data_unrefined/`` is the pre-refinement set, not the benchmark):
add_obj, add_att, replace_obj, replace_att, replace_rel, swap_obj, swap_att. Each file maps a
key to ``{"filename", "caption", "negative_caption"}``; the keys are not contiguous (swap_obj
has a gap), so the records follow the file's order of values, as the peer's ``main_eval.py``
iterates them. Photos are COCO-2017 val (``000000xxxxxx.jpg``); they repeat across items.

Layout: the data root holds the seven ``<category>.json``, or a ``data/`` folder of them
(``densecap-eval download sugarcrepe --root DIR`` writes ``DIR/data/``). Photos are read from
``coco/images/val2017/`` below the root, or from the loader option ``images_root``
(``--dataset-option images_root=DIR``).

A split is a category. Each item is one record: id ``<category>/<key>``, the photo
``images_root/filename``, a ``positive`` text (``caption``) and a ``negative`` text
(``negative_caption``). An item that is not such an object (a missing or empty field) is a bad
record: skipped loudly (named and counted in ``skipped``), or raised under ``strict``. Photos
are checked by the task, not here.

Bad input (docs/data.md): a ``filename`` that is absolute or climbs out with ``..`` is refused
unopened (`guards.release_path`); a key listed twice in one file (JSON would keep the last
silently; here the first is kept) or equal to an earlier one after Unicode NFC is a bad record;
a file unreadable as a JSON object is `DatasetError` (exit 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    fetch_source,
    install_file,
    make_dir,
    url_and_sha256,
    url_file_name,
)
from densecap_eval.datasets.guards import SeenIds, release_path
from densecap_eval.datasets.records import ImageRecord, Text
from densecap_eval.datasets.sugarcrepe.categories import CATEGORIES

DATA_DIR = "data"
IMAGES_DIR = Path("coco", "images", "val2017")
FIELDS: tuple[str, ...] = ("filename", "caption", "negative_caption")

# The repository's newest commit when this loader was written; data/ has not changed since the
# refined release. Each digest was computed from a copy of that commit's file.
SUGARCREPE_COMMIT = "0047054b243992f0fad63d6f64f7544862daf846"
SUGARCREPE_RAW = f"https://raw.githubusercontent.com/RAIVNLab/sugar-crepe/{SUGARCREPE_COMMIT}"
SUGARCREPE_SHA256: Mapping[str, str] = {
    "add_obj": "1b9d76b93139a937b8dc1ada92a4f05ecc821bb3c291d752428bafadd4bb0682",
    "add_att": "012d88d729693d193760e6f3393b06a1cf874380a9db0062e937201199fe044d",
    "replace_obj": "9d299600639947e9d15281a9ded1382b376cf4ea088a8d08a1314bfe76e81898",
    "replace_att": "9fe55fd4c0a9ad1f85d486d9f6d0215b41f867eb025026e7f7b5ce44352545ee",
    "replace_rel": "356bcc2fc4c6aed3f4d9fd50acc58489bb1fe70c28791f9368d4cbf9ea39cdc9",
    "swap_obj": "073cdb8e253d053614e80710834d9773b09dbc1dd0a412f6f9492262caa1dcad",
    "swap_att": "7a7ce04e5c4c80412b48c6f0c1347fb1a2f5d54c0be6aa429b64d390e442f8d0",
}
COCO_VAL2017_URL = "http://images.cocodataset.org/zips/val2017.zip"


def category_sources(raw_base: str, digests: Mapping[str, str]) -> dict[str, Source]:
    """The seven ``data/<category>.json`` under ``raw_base`` (the repository at a commit)."""
    return {
        c: Source(
            f"{c}.json",
            f"{raw_base}/{DATA_DIR}/{c}.json",
            "file",
            install=f"{DATA_DIR}/{c}.json",
            sha256=digests[c],
            commit=SUGARCREPE_COMMIT,
        )
        for c in CATEGORIES
    }


SOURCES: dict[str, Source] = {
    **category_sources(SUGARCREPE_RAW, SUGARCREPE_SHA256),
    "photos": Source("val2017.zip", COCO_VAL2017_URL, "manual", install=str(IMAGES_DIR)),
}


def coco_steps(images: Path) -> str:
    """How to put the COCO-2017 val photos where the loader looks (never downloaded here)."""
    return "\n".join(
        [
            f"Photos (not downloaded): COCO-2017 val, 5,000 images (~1 GB), into {images}:",
            f"  wget {COCO_VAL2017_URL}",
            f"  mkdir -p {images.parent} && unzip -q val2017.zip -d {images.parent}",
            "Or keep them elsewhere and pass --dataset-option images_root=DIR (DIR holds "
            "000000xxxxxx.jpg). A run names and counts every photo it cannot find.",
        ]
    )


class SugarCrepeDataset(DatasetBase):
    """SugarCrepe under ``root``: the seven ``<category>.json`` there or in ``root/data/``."""

    name = "sugarcrepe"
    title = "SugarCrepe"
    get_what = "the annotations"

    def __init__(
        self, root: str | Path, *, strict: bool = False, images_root: str | None = None
    ) -> None:
        super().__init__(root, strict=strict)
        self.data_dir = self._find_data_dir(self.root)
        self.images_root = (
            Path(images_root).expanduser() if images_root is not None else self.root / IMAGES_DIR
        )
        if not self.images_root.is_dir():
            raise DatasetError(
                f"SugarCrepe photo folder {self.images_root} not found\n"
                + coco_steps(self.images_root)
            )
        self._items: dict[str, list[tuple[str, Any]]] = {}

    @classmethod
    def _find_data_dir(cls, root: Path) -> Path:
        for base in (root, root / DATA_DIR):
            if any((base / f"{c}.json").is_file() for c in CATEGORIES):
                return base
        raise DatasetError(
            f"no SugarCrepe category file (add_obj.json ...) in {root} nor {root / DATA_DIR}; "
            f"{cls.how_to_get(root)}"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.root)!r}, strict={self.strict}, "
            f"images_root={str(self.images_root)!r})"
        )

    # --- splits -------------------------------------------------------------------------------

    def splits(self) -> list[str]:
        """The categories whose file is present, in the paper's order."""
        return [c for c in CATEGORIES if self.path(c).is_file()]

    def path(self, category: str) -> Path:
        return self.data_dir / f"{category}.json"

    def known_splits(self) -> list[str]:
        return list(CATEGORIES)

    def _check_present(self, category: str) -> Path:
        self.check_split(category)
        if not self.path(category).is_file():
            raise DatasetError(f"{self.path(category)} not found; {self.how_to_get(self.root)}")
        return self.path(category)

    def items(self, category: str) -> list[tuple[str, Any]]:
        """(key, value) of ``category``'s file, in file order (read once)."""
        self._check_present(category)
        if category not in self._items:
            path = self.path(category)
            try:
                data = json.loads(path.read_bytes(), object_pairs_hook=_Object)
            except (OSError, ValueError, RecursionError) as exc:
                raise DatasetError(
                    f"cannot read {path}: {exc}; {self.how_to_get(self.root)}"
                ) from None
            if not isinstance(data, _Object):
                raise DatasetError(
                    f"{path}: expected an object of items, got {type(data).__name__}"
                )
            self._items[category] = [*data.items(), *data.repeated]
        return self._items[category]

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """Each category file, by category, in the order asked (photos are not read)."""
        return [FingerprintFile(c, self._check_present(c)) for c in splits]

    # --- records ------------------------------------------------------------------------------

    def skip_where(self, error: BadRecordError) -> str:
        return f"{self.data_dir}: {error.image}"

    def record(self, category: str, key: str, value: Any) -> ImageRecord:
        """One item as a record; BadRecordError when a field is missing, not text or empty."""
        rid = f"{category}/{key}"
        if isinstance(value, _Repeated):
            raise BadRecordError(rid, f"key {key!r} is listed twice in {category}.json")
        if not isinstance(value, dict):
            raise BadRecordError(rid, f"item is a {type(value).__name__}, not an object")
        for name in FIELDS:
            text = value.get(name)
            if not isinstance(text, str) or not text.strip():
                raise BadRecordError(rid, f"field {name!r} is missing, not text or empty")
        photo = release_path(self.images_root, value["filename"], image=rid, what="filename")
        return ImageRecord(
            rid,
            photo,
            (
                Text(value["caption"], role="positive", kind="caption"),
                Text(value["negative_caption"], role="negative", kind=category),
            ),
            split=category,
            meta={"key": key, "filename": value["filename"]},
        )

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """The items of ``split`` (a category; every present category when None), file order."""
        for category in [split] if split is not None else self.splits():
            yield from self.iter_parsed(
                (
                    (f"{category}.json", (category, key, value))
                    for key, value in self.items(category)
                ),
                lambda item: self.record(*item),
                ids=SeenIds("key"),
                key=lambda record: record.meta["key"],
                image=lambda record: record.id,
            )


class _Repeated:
    """A value whose key was already used in the same JSON object (json.loads keeps the last
    one silently; here the first is kept and the repeat is a bad record)."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _Object(dict[str, Any]):
    """A decoded JSON object that keeps its first value per key and lists the repeats."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.repeated: list[tuple[str, _Repeated]] = []
        for key, value in pairs:
            if key in self:
                self.repeated.append((key, _Repeated(value)))
            else:
                self[key] = value


# --- download ---------------------------------------------------------------------------------


def download(
    root: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch the seven category files into ``root/data/`` (pooch, sha256 checked).

    Without ``url``: each file from the repository at `SUGARCREPE_COMMIT` against its pinned
    sha256. With ``url`` (and its ``sha256``): that one file, whose name must be
    ``<category>.json`` (a mirror). The COCO photos are never downloaded: the message says how.
    """
    root = Path(root).expanduser()
    url_and_sha256(url, sha256, pinned="the seven SugarCrepe files have pinned checksums")
    if url is not None:
        name = url_file_name(url.rstrip("/"))
        category = name.removesuffix(".json")
        if category not in CATEGORIES or not name.endswith(".json"):
            raise DownloadError(
                f"{url} does not name a SugarCrepe file "
                f"(expected one of: {', '.join(c + '.json' for c in CATEGORIES)})"
            )
        wanted = {category: replace(SOURCES[category], url=url, sha256=sha256)}
    else:
        wanted = {c: SOURCES[c] for c in CATEGORIES}
    target = make_dir(root / DATA_DIR)
    for source in wanted.values():
        fetched = fetch_source(source, root, progress=progress)
        install_file(fetched, root / source.install)  # never a half-written file in data/
    return DownloadMessage(
        f"SugarCrepe: {', '.join(c + '.json' for c in wanted)} saved to {target} "
        f"(commit {SUGARCREPE_COMMIT[:7]}, MIT licence); evaluate with --data-root {root}",
        coco_steps(root / IMAGES_DIR),
    )
