"""The scorer registry and the model table.

`ScorerRegistry` maps each model spec prefix to its loader and records the prefix's scorer kind
(embedding / late-interaction / pair), declared once at registration. The model table
(`ModelCatalog`) has one row per (prefix, family): ``hf:`` alone reads several families; a row
takes its kind from the registry. `densecap-eval models`, `list_models()`, the run validation
(which prefixes are pair scorers) and the README's table read these two. A plugin prefix
(entry point) has no declared kind and is listed as ``kind="unknown"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from densecap_eval.core.registry import Registry
from densecap_eval.scorers.base import SCORER_KINDS, ScorerKind, ScorerLoader

__all__ = [
    "SCORER_KINDS",
    "KindOrUnknown",
    "ModelCatalog",
    "ModelFamily",
    "ScorerKind",
    "ScorerRegistry",
]

KindOrUnknown = ScorerKind | Literal["unknown"]


class ScorerRegistry(Registry[ScorerLoader]):
    """Spec prefix -> loader (lazy ``"module:attr"`` or a callable), with the prefix's kind."""

    def __init__(self) -> None:
        super().__init__("model spec prefix", entry_point_group="densecap_eval.scorers")
        self._kinds: dict[str, ScorerKind] = {}

    def register_prefix(self, prefix: str, loader: ScorerLoader | str, *, kind: ScorerKind) -> None:
        if kind not in SCORER_KINDS:
            raise ValueError(f"scorer kind {kind!r} is not one of {', '.join(SCORER_KINDS)}")
        self.register(prefix, loader)
        self._kinds[prefix] = kind

    def kind_of(self, prefix: str) -> KindOrUnknown:
        """The prefix's declared kind; ``unknown`` for a plugin (or an unregistered prefix)."""
        return self._kinds.get(prefix, "unknown")


@dataclass(frozen=True)
class ModelFamily:
    """One row of the model table.

    ``text_limit`` is what the loaded scorer reports as ``max_text_tokens`` (a number, or a
    short rule such as "from the config" where it depends on the checkpoint);
    ``conversion`` says what the loader does to the released files before scoring;
    ``kind`` is the prefix's, from the registry.
    """

    prefix: str
    family: str
    text_limit: str
    kind: KindOrUnknown
    conversion: str
    example: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelCatalog:
    """The rows, in declaration order; several rows may share a prefix."""

    def __init__(self, kind_of: Callable[[str], KindOrUnknown]) -> None:
        self._kind_of = kind_of
        self._rows: list[ModelFamily] = []

    def add(
        self, prefix: str, *, family: str, text_limit: str, conversion: str, example: str
    ) -> None:
        """Declare a family a prefix reads; its kind is the registered prefix's."""
        if any(r.prefix == prefix and r.family == family for r in self._rows):
            raise ValueError(f"model family {family!r} of {prefix!r} is already listed")
        kind = self._kind_of(prefix)
        if kind == "unknown":
            raise ValueError(f"register the prefix {prefix!r} (with its kind) before its rows")
        self._rows.append(ModelFamily(prefix, family, text_limit, kind, conversion, example))

    def rows(self, prefixes: list[str]) -> list[ModelFamily]:
        """Rows of the given prefixes, sorted by prefix (declaration order within one)."""
        out: list[ModelFamily] = []
        for prefix in sorted(prefixes):
            mine = [r for r in self._rows if r.prefix == prefix]
            out.extend(mine or [_unknown(prefix)])
        return out

    def example(self, prefix: str) -> str:
        for row in self._rows:
            if row.prefix == prefix:
                return row.example
        return f"{prefix}:..."


def _unknown(prefix: str) -> ModelFamily:
    return ModelFamily(
        prefix=prefix,
        family="(plugin)",
        text_limit="?",
        kind="unknown",
        conversion="the plugin's own loader",
        example=f"{prefix}:...",
    )
