"""Dataset loaders, one module each, registered by name (see `load_dataset`).

Every loader subclasses `densecap_eval.datasets.base.DatasetBase` and yields the neutral records
of `densecap_eval.datasets.records`. ``DOWNLOADERS`` maps a dataset to its ``download(root, *,
url, sha256, progress) -> str`` (a `densecap_eval.datasets.download.DownloadMessage`: what was
fetched, and what is left to do by hand); each benchmark declares its ``SOURCES`` and fetches
through `densecap_eval.datasets.download` and `densecap_eval.datasets.archives`.

Shared modules (any benchmark folder may import them, never another benchmark's files): base,
records, guards, photos, regions, download, archives, hub.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from densecap_eval.core.registry import Registry

if TYPE_CHECKING:
    from densecap_eval.datasets.base import DatasetBase

# Each benchmark folder below registers its loader (and download) on import; the registries
# import every folder on first use (core/registry.py), third-party loaders come through the
# entry-point group.
DATASETS: Registry[type[DatasetBase]] = Registry(
    "dataset", entry_point_group="densecap_eval.datasets", discover="densecap_eval.datasets"
)
DOWNLOADERS: Registry[Any] = Registry("downloadable dataset", discover="densecap_eval.datasets")


def load_dataset(
    name: str, *, root: str | None = None, strict: bool = False, **options: Any
) -> DatasetBase:
    """Open a dataset by name; ``root`` resolves from the argument, DENSECAP_EVAL_DATA, then a
    per-user default. ``options`` go to the loader (e.g. the ``files`` column mapping)."""
    from densecap_eval.core.paths import resolve_data_root

    cls = DATASETS.get(name)
    return cls(resolve_data_root(root), strict=strict, **options)


def accepted_options(name: str) -> set[str]:
    """The loader options (keyword arguments besides root and strict) dataset ``name`` takes."""
    import inspect

    params = inspect.signature(DATASETS.get(name)).parameters
    return {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY and p != "strict"}


def options_for(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``options`` (``--dataset-option KEY=VALUE``) that dataset ``name`` takes."""
    accepted = accepted_options(name)
    return {key: value for key, value in options.items() if key in accepted}


def check_options(names: Iterable[str], options: Mapping[str, Any]) -> None:
    """Raise `ConfigError` for an option none of these datasets takes (a typo, or no such dataset)."""
    from densecap_eval.core.config import ConfigError

    names = list(names)
    accepted = set().union(*(accepted_options(n) for n in names)) if names else set()
    unknown = sorted(set(options) - accepted)
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise ConfigError(
            f"--dataset-option {unknown[0]}: no dataset of this run ({', '.join(names)}) takes "
            f"it (they take: {known})"
        )


def list_datasets() -> list[str]:
    return DATASETS.names()
