"""What each model spec prefix loads: family, text limit, scorer kind, conversion, an example.

One row per (prefix, family): ``hf:`` alone reads several families. The rows are declared
beside the registrations in `densecap_eval.scorers`, so `densecap-eval models`,
`list_models()`, the run validation (which prefixes are pair scorers) and the README's table
read one source. A plugin prefix without a row is listed as ``kind="unknown"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

ScorerKind = Literal["embedding", "late-interaction", "pair"]
SCORER_KINDS: tuple[str, ...] = ("embedding", "late-interaction", "pair")


@dataclass(frozen=True)
class ModelFamily:
    """One row of the model table.

    ``text_limit`` is what the loaded scorer reports as ``max_text_tokens`` (a number, or a
    short rule such as "from the config" where it depends on the checkpoint);
    ``conversion`` says what the loader does to the released files before scoring.
    """

    prefix: str
    family: str
    text_limit: str
    kind: ScorerKind | Literal["unknown"]
    conversion: str
    example: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelCatalog:
    """The rows, in registration order; several rows may share a prefix."""

    def __init__(self) -> None:
        self._rows: list[ModelFamily] = []

    def add(self, row: ModelFamily) -> None:
        if any(r.prefix == row.prefix and r.family == row.family for r in self._rows):
            raise ValueError(f"model family {row.family!r} of {row.prefix!r} is already listed")
        self._rows.append(row)

    def rows(self, prefixes: list[str]) -> list[ModelFamily]:
        """Rows of the given prefixes, sorted by prefix (declaration order within one)."""
        out: list[ModelFamily] = []
        for prefix in sorted(prefixes):
            mine = [r for r in self._rows if r.prefix == prefix]
            out.extend(mine or [_unknown(prefix)])
        return out

    def kind(self, prefix: str) -> str:
        """The scorer kind of a prefix (its first row), ``unknown`` for an unlisted plugin."""
        for row in self._rows:
            if row.prefix == prefix:
                return row.kind
        return "unknown"

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
