"""CLI commands (placeholder until implemented)."""

from __future__ import annotations

from densecap_eval.cli.app import app  # noqa: F401
