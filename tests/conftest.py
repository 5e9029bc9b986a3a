"""Shared test set-up: everything offline, every cache and data root inside pytest's temp dirs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests import helper modules (tiny_models, fake_scorers, dci_records) from this folder.
sys.path.insert(0, str(Path(__file__).parent))

# No test may reach a model hub; fail fast instead of hanging on a socket.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep the embedding cache and the default data root out of the user's home."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("DENSECAP_EVAL_CACHE", str(base / "user-cache"))
    monkeypatch.delenv("DENSECAP_EVAL_DATA", raising=False)
