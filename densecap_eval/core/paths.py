"""Where things live: data roots, the bundled sample and model, the cache, the results."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import platformdirs

APP_NAME = "densecap-eval"
DATA_ENV = "DENSECAP_EVAL_DATA"
CACHE_ENV = "DENSECAP_EVAL_CACHE"
# Where `run` stores and `report`, `demo` and `dashboard` read, unless told (relative: the cwd).
DEFAULT_RESULTS_DIR = Path("densecap-results")


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path:
    """Argument first, then $DENSECAP_EVAL_DATA, then the per-user data directory."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME))


def get_data_hint(dataset: str, root: str | os.PathLike[str]) -> str:
    """How to get ``dataset`` into ``root``, for the error of a root without the release.

    Names the download command (with ``--root`` unless ``root`` is where a plain
    ``densecap-eval download`` puts it) and the bundled sample, so the message is the fix.
    """
    target = "" if Path(root).expanduser() == resolve_data_root(None) else f" --root {root}"
    return (
        f"get the release with `densecap-eval download {dataset}{target}`, "
        f"set ${DATA_ENV} to a root that has it, "
        "or use the bundled sample with --sample"
    )


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME))


def bundled_dir() -> Path:
    """The shipped data/ folder (package ``densecap_eval.bundled``), installed or editable."""
    return Path(str(files("densecap_eval.bundled")))


def bundled_sample_root() -> Path:
    """Root of the bundled synthetic DCI sample (contains densely_captioned_images/)."""
    return bundled_dir() / "sample"


def bundled_models_dir() -> Path:
    return bundled_dir() / "models"
