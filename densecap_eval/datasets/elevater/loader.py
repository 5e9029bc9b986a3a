"""The registered dataset ``elevater``: ELEVATER's test splits under one data root.

The root is ELEVATER's ``DATASET.ROOT`` (DCI's ``ElevaterDownload/classification/data/``): each
dataset sits in its own ``<root_folder>`` below it (`layout`). The "splits" are the datasets
found there (DCI's keys), so ``densecap-eval inspect elevater`` profiles each one. Records carry
the class index(es) in ``meta["labels"]`` and point at the decoded photo (`photos`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from densecap_eval.core.errors import BadRecordError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.elevater import catalog, layout
from densecap_eval.datasets.elevater.photos import ELEVATER_SIZE, ZipPhotos
from densecap_eval.datasets.records import ImageRecord


@dataclass(frozen=True, slots=True)
class ZeroShotSample:
    """One usable test image: its reference in the release, decoded photo and labels."""

    ref: str
    photo: Path
    labels: tuple[int, ...]


class ElevaterDataset(DatasetBase):
    name: ClassVar[str] = "elevater"
    title: ClassVar[str] = "ELEVATER"

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        return (
            "point --data-root at ELEVATER's DATASET.ROOT (the folder holding classification/); "
            f"`densecap-eval download elevater --root {root}` says how to fill it"
        )

    def __init__(self, root: str | Path, *, strict: bool = False, cache_dir: Path | None = None):
        super().__init__(root, strict=strict)
        from densecap_eval.core.paths import default_cache_dir

        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._samples: dict[str, list[ZeroShotSample]] = {}

    def available(self) -> list[str]:
        """The datasets (DCI keys) whose folder is under the root, in catalog order."""
        return [k for k in catalog.dataset_keys() if layout.present(self.root, catalog.spec(k))]

    def splits(self) -> list[str]:
        return self.available()

    def known_splits(self) -> list[str]:
        return list(catalog.dataset_keys())

    def skip_where(self, error: BadRecordError) -> str | None:
        return error.image

    def samples(self, key: str) -> list[ZeroShotSample]:
        """The usable test images of ``key`` in ELEVATER's order; bad ones skipped (named) or,
        under strict, raised. A missing or unreadable index/zip raises `DatasetError`."""
        if key not in self._samples:
            spec = catalog.spec(key)
            folder = layout.dataset_dir(self.root, spec)
            raw = layout.read_samples(self.root, spec, self.skip)
            square = None if spec.center_crop else ELEVATER_SIZE
            photos = ZipPhotos(folder, self.cache_dir, square=square)
            out: list[ZeroShotSample] = []
            try:
                for s in raw:
                    where = f"{spec.root_folder}/{s.ref}"
                    try:
                        path = photos.photo(s.zip_name, s.member, image=where)
                    except BadRecordError as exc:
                        self.skip(exc)
                        continue
                    out.append(ZeroShotSample(s.ref, path, s.labels))
            finally:
                photos.close()
            self._samples[key] = out
        return self._samples[key]

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        keys = self.available() if split is None else [split]
        for key in keys:
            for s in self.samples(key):
                yield ImageRecord(
                    id=f"{key}/{s.ref}",
                    image=s.photo,
                    texts=(),
                    split=key,
                    meta={"labels": s.labels},
                )

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """Each dataset's index and label map files, and its zips by size only."""
        files: list[FingerprintFile] = []
        for key in sorted(splits):
            spec = catalog.spec(key)
            folder = layout.dataset_dir(self.root, spec)
            files += [
                FingerprintFile(f"{key}/{name}", folder / name, content=name not in spec.test_files)
                for name in layout.required_files(spec)
            ]
        return files

    def describe(self) -> dict[str, Any]:
        """What is under the root: per dataset found, its photos read (after `records`) and
        skipped, classes and metric; the absent ones with the command that says how to get
        them; ``lines``: the same as text (`densecap-eval inspect elevater`)."""
        found = self.available()
        absent = [k for k in catalog.dataset_keys() if k not in found]
        datasets: dict[str, Any] = {}
        lines = [f"ELEVATER datasets under {self.root}: {len(found)} of "
                 f"{len(catalog.dataset_keys())} present"]  # fmt: skip
        for key in found:
            s = catalog.spec(key)
            n = len(self._samples[key]) if key in self._samples else None
            datasets[key] = {"images": n, "classes": len(s.classes), "metric": s.metric,
                             "folder": s.root_folder}  # fmt: skip
            lines.append(f"  {key}: {'?' if n is None else n} photos, {len(s.classes)} classes, "
                         f"{s.metric} ({s.root_folder}/)")  # fmt: skip
        if absent:
            lines.append(f"  absent: {', '.join(absent)} (`densecap-eval download "
                         "elevater/<key>` says how to get each)")  # fmt: skip
        return {"available": found, "known": list(catalog.dataset_keys()), "datasets": datasets,
                "absent": absent, "lines": lines}  # fmt: skip
