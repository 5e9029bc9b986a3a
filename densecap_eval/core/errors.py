"""Errors users see. Every one carries a message that names the file or spec and the problem.

The CLI turns any `DensecapError` into a one-line `error: ...` on stderr and a non-zero exit;
anything else escaping is a bug in densecap-eval.
"""

from __future__ import annotations


class DensecapError(Exception):
    """Base class for every error densecap-eval raises on purpose."""

    exit_code: int = 2


class UnknownNameError(DensecapError, KeyError):
    """A registry lookup (model spec prefix, dataset, task) found nothing."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetError(DensecapError):
    """The dataset as a whole cannot be used (no root, no splits.json, no photos/, a file
    unreadable as its format, no record left after skipping): exit 1, not a usage error."""

    exit_code = 1


class BadRecordError(DensecapError):
    """One record (image) of a dataset cannot be used; skipped unless strict (then exit 1)."""

    exit_code = 1

    def __init__(self, image: str, reason: str) -> None:
        super().__init__(f"{image}: {reason}")
        self.image = image
        self.reason = reason


class ModelLoadError(DensecapError):
    """A model spec could not be turned into a scorer (missing file, wrong architecture ...)."""


class TextTooLongError(DensecapError):
    """The `error` text policy met a text longer than the model's limit."""


class ResultsError(DensecapError):
    """A results directory is unusable (not writable, corrupt run, unknown schema)."""


class DownloadError(DensecapError):
    """A download failed or its checksum did not match."""


class TaskUnavailableError(DensecapError):
    """A task cannot run on this machine (an optional tool is missing); the run's other tasks
    still run, and this one is reported as failed with the message (which says how to fix it)."""


class DataAbsentError(TaskUnavailableError):
    """A suite member's data is simply not under the data root (nothing is broken): the suite's
    other members run and are stored, the suite reads as partial, and the run is not failed for
    it when something was scored; the message says how to get the data."""
