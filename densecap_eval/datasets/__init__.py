"""Dataset loaders, one module each, registered by name (see `load_dataset`)."""

from __future__ import annotations

from typing import Any

from densecap_eval.registry import Registry

DATASETS: Registry[Any] = Registry("dataset", entry_point_group="densecap_eval.datasets")
DATASETS.register("dci", "densecap_eval.datasets.dci.loader:DCIDataset")


def load_dataset(name: str, *, root: str | None = None, strict: bool = False) -> Any:
    """Open a dataset by name; ``root`` resolves from the argument, DENSECAP_EVAL_DATA, then a per-user default."""
    from densecap_eval.paths import resolve_data_root

    cls = DATASETS.get(name)
    return cls(resolve_data_root(root), strict=strict)


def list_datasets() -> list[str]:
    return DATASETS.names()
