"""No package function over 60 lines: a long function is split by phase (plan, score, compute...).

Every function and method of densecap_eval/ and of the top-level dashboard/ (shipped as
densecap_eval.dashboard) counts, nested ones included, from its ``def`` line to its last line
(decorators excluded). A Typer command (a function decorated with ``@<app>.command`` or
``@<app>.callback``) declares each option as a parameter, so its length is counted from the end
of its signature: the option declarations may make the signature long, not the body.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60
# Folders of the package mapped from elsewhere (symlinks in some checkouts): dashboard/ is
# read from the top level, data/ holds no code.
MAPPED = ("dashboard", "bundled")

# Current offenders outside the function-length work, as "path:function". Being removed in the
# parallel work; the integrator empties this set. The test fails on any function over the limit
# not listed here, and on a listed one that is now short enough (so the set only shrinks).
KNOWN_OVER_60: set[str] = set()


def package_files() -> list[Path]:
    files = [
        path
        for path in sorted((ROOT / "densecap_eval").rglob("*.py"))
        if path.relative_to(ROOT / "densecap_eval").parts[0] not in MAPPED
    ]
    return files + sorted((ROOT / "dashboard").rglob("*.py"))


def is_typer_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "callback"):
            return True
    return False


def length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the last line; a Typer command's signature counts as one line."""
    end = node.end_lineno
    assert end is not None
    start = node.body[0].lineno - 1 if is_typer_command(node) else node.lineno
    return end - start + 1


def long_functions() -> dict[str, int]:
    """``path:qualified.name`` -> length, for every function over the limit."""
    out: dict[str, int] = {}
    for path in package_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(ROOT).as_posix()
        for name, node in _functions(tree, ""):
            if length(node) > LIMIT:
                out[f"{rel}:{name}"] = length(node)
    return out


def _functions(
    parent: ast.AST, prefix: str
) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for node in ast.iter_child_nodes(parent):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                found.append((name, node))
            found.extend(_functions(node, f"{name}."))
        else:
            found.extend(_functions(node, prefix))
    return found


def test_no_function_over_60_lines() -> None:
    found = long_functions()
    new = [f"{name}: {n} lines" for name, n in sorted(found.items()) if name not in KNOWN_OVER_60]
    assert not new, f"split these by phase (at most {LIMIT} lines each):\n" + "\n".join(new)
    gone = sorted(KNOWN_OVER_60 - set(found))
    assert not gone, f"now short enough, so remove from KNOWN_OVER_60: {gone}"


def test_length_rules() -> None:
    code = (
        "@app.command('x')\n"
        "def command(\n" + "    a: int = 1,\n" * 70 + ") -> None:\n"
        "    pass\n"
        "\n"
        "@decorated\n"
        "def plain(\n" + "    a: int = 1,\n" * 70 + ") -> None:\n"
        "    pass\n"
    )
    command, plain = (n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef))
    assert length(command) == 2 and length(plain) == 73
