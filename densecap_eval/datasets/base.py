"""What every dataset loader shares: loud, counted skipping of bad images (or a stop under strict)."""

from __future__ import annotations

import logging

from densecap_eval.datasets.records import SkippedImage
from densecap_eval.errors import BadRecordError

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
