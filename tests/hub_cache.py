"""A local Hugging Face hub cache for the tests: hub ids resolve from it with no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def _snapshot(cache: Path, repo: str, commit: str) -> Path:
    """The snapshot folder of ``repo`` at ``commit`` (not made), with refs/main -> commit."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit, encoding="utf-8")
    return base / "snapshots" / commit


def hub_snapshot(cache: Path, repo: str, commit: str, source: Path) -> None:
    """Lay out one snapshot of ``repo`` in the hub cache format: a copy of the folder ``source``."""
    shutil.copytree(source, _snapshot(cache, repo, commit))


def hub_file(cache: Path, repo: str, commit: str, name: str, data: bytes) -> None:
    """Lay out one snapshot of ``repo`` holding the one file ``name``."""
    snapshot = _snapshot(cache, repo, commit)
    snapshot.mkdir(parents=True)
    (snapshot / name).write_bytes(data)


def use_hub_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache``, offline (its constants are read at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
