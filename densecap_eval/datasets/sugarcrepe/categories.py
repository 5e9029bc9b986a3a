"""SugarCrepe's seven categories, in the release's order: written once, for the loader, the
tasks and the registration (which must not import the loader)."""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "add_obj", "add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att",
)  # fmt: skip
