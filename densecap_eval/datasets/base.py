"""What every dataset loader shares: loud, counted skipping of bad images (or a stop under strict)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.records import SkippedImage

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


class DatasetBase:
    """The skeleton every loader shares: its root, strictness, skip log and the root check.

    A loader sets ``name`` (the registered name) and ``title`` (how messages name it), calls
    ``super().__init__(root, strict=strict, hint=...)`` first, and may override `skip_where`
    to name the file a skipped record came from.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""

    def __init__(self, root: str | Path, *, strict: bool = False, hint: str) -> None:
        self.root = Path(root)
        self.strict = strict
        self._skips = SkipLog(strict=strict)
        self.skipped: list[SkippedImage] = self._skips.skipped
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.title} root {self.root} does not exist or is not a folder; {hint}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, strict={self.strict})"

    def skip_where(self, error: BadRecordError) -> str | None:
        """What the warning names for a skipped record (default: the record's id)."""
        del error
        return None

    def skip(self, error: BadRecordError) -> SkippedImage:
        """Report a bad image: raise under ``strict``, else log it and list it once in `skipped`."""
        return self._skips.skip(error, where=self.skip_where(error))
