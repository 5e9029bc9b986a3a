"""Dataset loaders, one module each, registered by name (see `load_dataset`).

Every loader yields the neutral records of `densecap_eval.datasets.records`; ``DOWNLOADERS``
maps a dataset to its ``download(root, *, url, sha256, progress) -> str`` (the message says
what was fetched and what is left to do by hand).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from densecap_eval.registry import Registry

DATASETS: Registry[Any] = Registry("dataset", entry_point_group="densecap_eval.datasets")
DOWNLOADERS: Registry[Any] = Registry("downloadable dataset")
for _name, _module, _cls in (
    ("dci", "densecap_eval.datasets.dci.loader", "DCIDataset"),
    ("docci", "densecap_eval.datasets.docci", "DOCCIDataset"),
    ("iiw", "densecap_eval.datasets.iiw", "IIWDataset"),
    ("urban1k", "densecap_eval.datasets.urban1k", "Urban1kDataset"),
    ("sharegpt4v", "densecap_eval.datasets.sharegpt4v", "ShareGPT4VDataset"),
    ("files", "densecap_eval.datasets.files", "FilesDataset"),
    ("aro-vg", "densecap_eval.datasets.aro", "AROVGDataset"),
    ("aro-coco", "densecap_eval.datasets.aro_order", "COCOOrderDataset"),
    ("aro-flickr30k", "densecap_eval.datasets.aro_order", "Flickr30kOrderDataset"),
    ("sugarcrepe", "densecap_eval.datasets.sugarcrepe", "SugarCrepeDataset"),
    ("vlc", "densecap_eval.datasets.vlc", "VLCheckListDataset"),
    ("winoground", "densecap_eval.datasets.winoground", "WinogroundDataset"),
    ("elevater", "densecap_eval.datasets.elevater.loader", "ElevaterDataset"),
    ("clip_benchmark", "densecap_eval.datasets.elevater.wds", "ClipBenchmarkDataset"),
):
    DATASETS.register(_name, f"{_module}:{_cls}")
for _name, _target in (
    ("dci", "densecap_eval.datasets.dci.download:download"),
    ("docci", "densecap_eval.datasets.docci:download"),
    ("iiw", "densecap_eval.datasets.iiw:download"),
    ("urban1k", "densecap_eval.datasets.urban1k:download"),
    ("sharegpt4v", "densecap_eval.datasets.sharegpt4v:download"),
    ("aro-vg", "densecap_eval.datasets.aro:download"),
    ("aro-coco", "densecap_eval.datasets.aro_order:download_coco"),
    ("aro-flickr30k", "densecap_eval.datasets.aro_order:download_flickr30k"),
    ("sugarcrepe", "densecap_eval.datasets.sugarcrepe:download"),
    ("vlc", "densecap_eval.datasets.vlc:download"),
    ("winoground", "densecap_eval.datasets.winoground:download"),
    ("elevater", "densecap_eval.datasets.elevater.download:download"),
):
    DOWNLOADERS.register(_name, _target)


def load_dataset(
    name: str, *, root: str | None = None, strict: bool = False, **options: Any
) -> Any:
    """Open a dataset by name; ``root`` resolves from the argument, DENSECAP_EVAL_DATA, then a
    per-user default. ``options`` go to the loader (e.g. the ``files`` column mapping)."""
    from densecap_eval.paths import resolve_data_root

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
    from densecap_eval.config import ConfigError

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
