"""One small generic registry for scorers, datasets and tasks.

Entries are either objects or lazy ``"module:attr"`` strings, so heavy backends are imported
only when used. Third-party plugins register through an entry-point group; the package's own
benchmarks register themselves: a registry given ``discover="densecap_eval.datasets"`` imports
every sub-package of that package on first use, and each benchmark folder's ``__init__`` adds its
entries (docs/architecture.md, "Adding a benchmark").
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from densecap_eval.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects, resolving ``"module:attr"`` strings on first use."""

    def __init__(
        self, kind: str, *, entry_point_group: str | None = None, discover: str | None = None
    ) -> None:
        self.kind = kind
        self._entry_point_group = entry_point_group
        self._discover = discover
        self._entries: dict[str, T | str] = {}
        self._plugins_loaded = entry_point_group is None and discover is None

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | None:
        """Register ``obj`` (or a lazy ``"module:attr"``) under ``name``; usable as a decorator."""
        if obj is not None:
            self._add(name, obj)
            return None

        def decorator(target: T) -> T:
            self._add(name, target)
            return target

        return decorator

    def _add(self, name: str, obj: T | str) -> None:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        if self._discover is not None:
            discover_packages(self._discover)
        if self._entry_point_group is not None:
            for ep in entry_points(group=self._entry_point_group):
                self._entries.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        obj = self._entries[name]
        if isinstance(obj, str):
            module_name, _, attr = obj.partition(":")
            resolved: T = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = resolved
            return resolved
        return obj

    def unknown_message(self, name: str) -> str:
        known = self.names()
        hint = difflib.get_close_matches(name, known, n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown {self.kind} {name!r}{did_you_mean} (known: {', '.join(known)})"


def discover_packages(package: str) -> list[str]:
    """Import every sub-package of ``package`` (each registers itself on import); their names."""
    parent = importlib.import_module(package)
    found = [
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(parent.__path__)
        if info.ispkg and not info.name.startswith("_")
    ]
    for name in found:
        importlib.import_module(name)
    return found
