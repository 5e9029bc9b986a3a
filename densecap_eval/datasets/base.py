"""The skeleton every dataset loader shares (`DatasetBase`), and loud, counted skipping.

A loader declares its splits, the files its content depends on (`DatasetBase.fingerprint_files`)
and how to parse one raw record; the base checks a split (one message), computes the
fingerprint, parses records with `DatasetBase.iter_parsed` (a bad record is skipped loudly, or
stops the run under ``strict``; a repeated id is a bad record) and refuses a missing root with
the sentence naming ``densecap-eval download <name>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.download import how_to_get
from densecap_eval.datasets.guards import SeenIds
from densecap_eval.datasets.records import SkippedImage

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("densecap_eval.datasets")


class SkipLog:
    """Bad images of one dataset: raised under ``strict``, else logged once each and listed."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.skipped: list[SkippedImage] = []
        self._seen: set[str] = set()

    def skip(self, error: BadRecordError, *, where: str | None = None) -> SkippedImage:
        """Report ``error``'s image (``where`` names the file in the warning)."""
        if self.strict:
            raise error
        item = SkippedImage(error.image, error.reason)
        if error.image not in self._seen:
            self._seen.add(error.image)
            self.skipped.append(item)
            logger.warning("skipping %s: %s (%d skipped so far)", where or error.image,
                           error.reason, len(self.skipped))  # fmt: skip
        return item


def label_and_size(label: str, size: int) -> bytes:
    """The default header of a `FingerprintFile` in the digest: ``label NUL size NUL``."""
    return f"{label}\0{size}\0".encode()


@dataclass(frozen=True)
class FingerprintFile:
    """One file a dataset's content depends on, as `DatasetBase.fingerprint` hashes it: its
    ``label`` (what names it in the digest), its byte length and its bytes; an unreadable or
    missing file counts as its label and ``-1``.

    ``content=False`` hashes the length alone (thousands of large files, such as DCI's records
    or zips of photos, would make every run re-read gigabytes). ``sample=(whole, head, tail)``
    hashes a file over ``whole`` bytes by its first ``head`` and last ``tail`` bytes (a 1.5 GB
    annotation file): an edit deeper inside that keeps the length goes unnoticed.

    ``header(label, size)`` is what introduces the file in the digest (default
    `label_and_size`; ``size`` is -1 when unreadable). A loader whose fingerprints were stored
    with runs before it used this base may give the framing it used then, so they still match.
    """

    label: str
    path: Path
    content: bool = True
    sample: tuple[int, int, int] | None = None
    header: Callable[[str, int], bytes] = label_and_size

    def feed(self, digest: hashlib._Hash) -> None:
        try:
            size = self.path.stat().st_size
            digest.update(self.header(self.label, size))
            if not self.content:
                return
            with self.path.open("rb") as fh:
                if self.sample is not None and size > self.sample[0]:
                    _, head, tail = self.sample
                    digest.update(fh.read(head))
                    fh.seek(max(size - tail, 0))
                    digest.update(fh.read(tail))
                    return
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            digest.update(self.header(self.label, -1))


class DatasetBase:
    """The skeleton every loader shares: its root, strictness, skip log, split check,
    fingerprint and record parsing.

    A loader sets ``name`` (the registered name, also the ``densecap-eval download`` name) and
    ``title`` (how messages name it), and ``declared_splits`` when its splits are fixed (else it
    overrides `splits`; `known_splits` lists what `check_split` accepts). It calls
    ``super().__init__(root, strict=strict)`` first (a missing root names the download command:
    `how_to_get`, which a loader may extend; `check_root` is the check), lists its content files in `fingerprint_files`,
    and parses records through `iter_parsed`. It may override `skip_where` to name the file a
    skipped record came from.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    declared_splits: ClassVar[tuple[str, ...]] = ()
    get_what: ClassVar[str] = "it"  # what `how_to_get` says the download gets

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        self.root = Path(root)
        self.strict = strict
        self._skips = SkipLog(strict=strict)
        self.skipped: list[SkippedImage] = self._skips.skipped
        self.check_root()

    def check_root(self) -> None:
        """Refuse a root that is not a folder, naming how to get the data (`how_to_get`). A
        loader whose root may also be a single file (a user's own table) overrides it."""
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.title} root {self.root} does not exist or is not a folder; "
                f"{self.how_to_get(self.root)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, strict={self.strict})"

    @classmethod
    def how_to_get(cls, root: Path) -> str:
        """The sentence a missing file's error ends with: ``get it with `densecap-eval download
        <name> --root <root>```."""
        return how_to_get(cls.name, root, what=cls.get_what)

    # --- splits -------------------------------------------------------------------------------

    def splits(self) -> list[str]:
        """The split names, in order (default: ``declared_splits``)."""
        return list(self.declared_splits)

    def known_splits(self) -> list[str]:
        """The split names `check_split` accepts (default: `splits`)."""
        return list(self.splits())

    def splits_source(self) -> Path | None:
        """The file or folder the split names come from, for the unknown-split message."""
        return None

    def check_split(self, split: str | None) -> None:
        """Refuse a split this dataset does not have (None, every split, is always accepted)."""
        if split is not None and split not in self.known_splits():
            known = ", ".join(self.known_splits()) or "none"
            source = self.splits_source()
            where = f" in {source}" if source is not None else ""
            raise DatasetError(f"unknown split {split!r} of {self.title}{where} (known: {known})")

    # --- fingerprint --------------------------------------------------------------------------

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """The files the records of ``splits`` depend on (photos excepted), in a fixed order."""
        raise NotImplementedError(f"{type(self).__name__} lists no fingerprint files")

    def fingerprint_extra(self, splits: Sequence[str]) -> object:
        """What besides the files' bytes the records depend on (JSON-able: the split names
        when the files hold every split, a layout's name...); None: nothing."""
        del splits
        return None

    def fingerprint(self, splits: Sequence[str]) -> str:
        """sha256 over `fingerprint_extra` (as JSON, when not None) and `fingerprint_files`
        (each file's label, length and bytes), after checking every split; photos are never
        read. Equal for equal content, wherever the release was copied (no mtimes)."""
        for split in splits:
            self.check_split(split)
        digest = hashlib.sha256()
        extra = self.fingerprint_extra(splits)
        if extra is not None:
            digest.update(json.dumps(extra).encode("utf-8"))
        for item in self.fingerprint_files(splits):
            item.feed(digest)
        return digest.hexdigest()

    # --- records ------------------------------------------------------------------------------

    def skip_where(self, error: BadRecordError) -> str | None:
        """What the warning names for a skipped record (default: the record's id)."""
        del error
        return None

    def skip(self, error: BadRecordError) -> SkippedImage:
        """Report a bad image: raise under ``strict``, else log it and list it once in `skipped`."""
        return self._skips.skip(error, where=self.skip_where(error))

    def iter_parsed(
        self,
        items: Iterable[tuple[str, T]],
        parse: Callable[[T], R],
        *,
        ids: SeenIds | None = None,
        key: Callable[[R], str] | None = None,
        image: Callable[[R], str] | None = None,
    ) -> Iterator[R]:
        """``parse(raw)`` for each ``(where, raw)`` of ``items``, in order. A `BadRecordError`
        (from ``parse``, or a ``key`` already met in ``ids``: the repeat names ``where`` and the
        first one's) is skipped loudly, named, counted and listed in `skipped`, or raised under
        ``strict``. ``image`` names a repeated record (default: its key)."""
        for where, raw in items:
            try:
                record = parse(raw)
                if ids is not None and key is not None:
                    ids.check(key(record), where=where, image=image(record) if image else None)
            except BadRecordError as exc:
                self.skip(exc)
                continue
            yield record
