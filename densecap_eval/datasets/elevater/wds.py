"""CLIP_benchmark's protocol on its own local ``wds/<name>`` copies: dataset ``clip_benchmark``.

CLIP_benchmark (1.6.x, ``datasets/builder.py build_wds_dataset``) reads a self-contained folder:
``test/nshards.txt`` (an int) and ``test/{0..n-1}.tar``, whose samples are a ``__key__`` with an
image (the first of ``webp``, ``png``, ``jpg``, ``jpeg``) and ``cls`` (an int), plus
``classnames.txt`` and ``zeroshot_classification_templates.txt`` (one per line, ``{c}``
placeholders, each line stripped). When ``dataset_type.txt`` says ``multilabel`` (VOC 2007), a
sample's label is an ``npy`` 0/1 vector over the classes instead of ``cls``. Its own copies are named ``wds_<name>`` with ``/`` as ``-``
(``wds_vtab-cifar10``). The root given to densecap-eval holds those folders.

Photos are decoded as stored (Pillow, no EXIF rotation), then converted to RGB by the model's
preprocessing: exactly what the engine does with a file, so each image member is copied as it
is to the photo cache. The class names and templates are the folder's own.

`CLIP_BENCHMARK_NAMES` pairs DCI's ELEVATER keys with CLIP_benchmark's dataset names (its
``vtab+`` list); Hateful Memes and Food-101 have no copy there. VOC 2007 is its
``voc2007_multilabel`` (ELEVATER's VOC is multilabel; CLIP_benchmark's ``voc2007`` is single-label
crops of the boxes, another task).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.elevater.loader import ZeroShotSample
from densecap_eval.datasets.photos import check_image_bytes
from densecap_eval.datasets.records import ImageRecord

CLIP_BENCHMARK_NAMES: dict[str, str] = {
    "cifar10": "vtab/cifar10", "cifar100": "vtab/cifar100", "caltech101": "vtab/caltech101",
    "country211": "country211", "dtd": "vtab/dtd", "eurosat-clip": "vtab/eurosat",
    "fer2013": "fer2013", "fgvc-aircraft-2013b": "fgvc_aircraft", "gtsrb": "gtsrb",
    "kitti-distance": "vtab/kitti_closest_vehicle_distance", "mnist": "mnist",
    "flower102": "vtab/flowers", "oxford-iiit-pets": "vtab/pets", "patchcamelyon": "vtab/pcam",
    "rendered-sst2": "renderedsst2", "resisc45-clip": "vtab/resisc45", "stanfordcar": "cars",
    "voc2007classification": "voc2007_multilabel",
}  # fmt: skip
IMAGE_EXTENSIONS: tuple[str, ...] = ("webp", "png", "jpg", "jpeg")


def folder_name(key: str) -> str:
    return "wds_" + CLIP_BENCHMARK_NAMES[key].replace("/", "-")


@dataclass(frozen=True)
class WdsSplit:
    classnames: list[str]
    templates: list[str]
    samples: list[ZeroShotSample]
    multilabel: bool = False  # dataset_type.txt says multilabel: labels from a 0/1 ``npy``


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path} as UTF-8 text ({exc})") from None


class ClipBenchmarkDataset(DatasetBase):
    """CLIP_benchmark's local ``wds_<name>`` folders under one root (module doc)."""

    name: ClassVar[str] = "clip_benchmark"
    title: ClassVar[str] = "CLIP_benchmark wds"

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        # CLIP_benchmark's copies are not downloaded by densecap-eval (no downloader).
        return (
            "point --data-root at the folder holding CLIP_benchmark's wds_<name> copies (e.g. "
            "a clone of the Hub's clip-benchmark/wds_vtab-cifar10)"
        )

    def __init__(self, root: str | Path, *, strict: bool = False, cache_dir: Path | None = None):
        super().__init__(root, strict=strict)
        from densecap_eval.core.paths import default_cache_dir

        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._splits: dict[str, WdsSplit] = {}

    def available(self) -> list[str]:
        return [k for k in CLIP_BENCHMARK_NAMES if (self.root / folder_name(k)).is_dir()]

    def splits(self) -> list[str]:
        return self.available()

    def known_splits(self) -> list[str]:
        return list(CLIP_BENCHMARK_NAMES)

    def skip_where(self, error: BadRecordError) -> str | None:
        return error.image

    def split(self, key: str) -> WdsSplit:
        if key not in self._splits:
            self._splits[key] = self._read(key)
        return self._splits[key]

    def _read(self, key: str) -> WdsSplit:
        folder = self.root / folder_name(key)
        classnames = [line.strip() for line in _text(folder / "classnames.txt").splitlines()]
        templates_file = folder / "zeroshot_classification_templates.txt"
        templates = [line.strip() for line in _text(templates_file).splitlines()]
        kind_file = folder / "dataset_type.txt"
        kind = _text(kind_file).strip().lower() if kind_file.is_file() else "classification"
        if kind not in ("classification", "multilabel"):
            raise DatasetError(
                f"{kind_file} says {kind!r}: only classification and multilabel sets are read here"
            )
        try:
            nshards = int(_text(folder / "test" / "nshards.txt").strip())
        except ValueError:
            raise DatasetError(
                f"{folder / 'test' / 'nshards.txt'} does not hold an integer"
            ) from None
        out: list[ZeroShotSample] = []
        for shard in range(nshards):
            out.extend(self._shard(folder / "test" / f"{shard}.tar", len(classnames), kind))
        return WdsSplit(classnames, templates, out, multilabel=kind == "multilabel")

    def _shard(self, path: Path, n_classes: int, kind: str) -> list[ZeroShotSample]:
        groups: dict[str, dict[str, bytes]] = {}
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    directory, _, base = member.name.rpartition("/")
                    stem, dot, ext = base.partition(".")
                    if not dot:
                        continue
                    handle = tar.extractfile(member)
                    if handle is not None:
                        key = f"{directory}/{stem}" if directory else stem
                        groups.setdefault(key, {})[ext.lower()] = handle.read()
        except FileNotFoundError:
            raise DatasetError(f"{path} is missing") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"{path} is not a readable tar ({exc})") from None
        cache = self.cache_dir / "clip-benchmark-photos"
        out = []
        for key, parts in groups.items():
            where = f"{path.name}#{key}"
            try:
                image_ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
                label_ext = "npy" if kind == "multilabel" else "cls"
                if image_ext is None or label_ext not in parts:
                    raise BadRecordError(where, f"has no image or no {label_ext}")
                read = _multilabel if kind == "multilabel" else _single_label
                labels = read(parts[label_ext], n_classes, where)
                data = parts[image_ext]
                check_image_bytes(data, image=where, where=where)
            except BadRecordError as exc:
                self.skip(exc)
                continue
            out.append(ZeroShotSample(where, _store(cache, data, image_ext), labels))
        return out

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        keys = self.available() if split is None else [split]
        for k in keys:
            for s in self.split(k).samples:
                yield ImageRecord(id=f"{k}/{s.ref}", image=s.photo, texts=(), split=k,
                                  meta={"labels": s.labels})  # fmt: skip

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """Each folder's class names and templates, and its test shards by size only."""
        files: list[FingerprintFile] = []
        for key in sorted(splits):
            folder = self.root / folder_name(key)
            for name in ("classnames.txt", "zeroshot_classification_templates.txt"):
                files.append(FingerprintFile(f"{key}/{name}", folder / name))
            for tar in sorted((folder / "test").glob("*.tar")):
                files.append(ShardIndex(f"{key}/test/{tar.name}", tar, content=False))
        return files


class ShardIndex(FingerprintFile):
    """A shard as its member index (every member's name and size) plus the bytes of every
    member that is not an image: a changed label (``.cls``) or a renamed or resized sample
    changes the fingerprint, while the photos are never read (as for every dataset)."""

    def feed(self, digest: hashlib._Hash) -> None:
        super().feed(digest)  # the label and the shard's length
        try:
            with tarfile.open(self.path, mode="r:") as tar:
                for member in tar:
                    digest.update(f"{member.name}\0{member.size}\0".encode())
                    ext = member.name.rpartition(".")[2].lower()
                    if member.isfile() and ext not in IMAGE_EXTENSIONS:
                        fh = tar.extractfile(member)
                        digest.update(fh.read() if fh is not None else b"")
        except (OSError, tarfile.TarError):
            digest.update(b"unreadable\0")  # the loader names the broken shard when it reads it


def _single_label(data: bytes, n_classes: int, where: str) -> tuple[int, ...]:
    """A ``cls`` member: one class index (webdataset's ``int(text)``)."""
    try:
        label = int(data.decode("utf-8").strip())
    except (UnicodeDecodeError, ValueError):
        raise BadRecordError(where, "cls is not an integer") from None
    if not 0 <= label < n_classes:
        raise BadRecordError(where, f"cls {label} is outside 0..{n_classes - 1}")
    return (label,)


def _multilabel(data: bytes, n_classes: int, where: str) -> tuple[int, ...]:
    """An ``npy`` member: a 0/1 vector over the classes (CLIP_benchmark's multilabel target);
    the indices of its ones (none is allowed: a photo of no listed class)."""
    import numpy as np

    try:
        vector = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadRecordError(where, f"npy is not a numpy array ({exc})") from None
    if vector.shape != (n_classes,) or not np.isin(vector, (0, 1)).all():
        raise BadRecordError(where, f"npy is not a 0/1 vector of {n_classes} classes")
    return tuple(int(i) for i in np.flatnonzero(vector))


def _store(cache: Path, data: bytes, ext: str) -> Path:
    """The photo's bytes as a file in the cache, named by content (written once)."""
    target = cache / f"{hashlib.sha256(data).hexdigest()[:32]}.{ext}"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    return target
