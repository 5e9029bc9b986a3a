"""The package ships everything it needs and exposes a small, explicit API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

import densecap_eval

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "densecap_eval").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk - listed == set(), "add these subpackages to [tool.setuptools] packages"
    assert {"densecap_eval.bundled", "densecap_eval.dashboard"} <= listed


def test_public_api_is_sorted_and_resolves() -> None:
    assert densecap_eval.__all__ == sorted(densecap_eval._EXPORTS)
    for name in densecap_eval.__all__:
        assert getattr(densecap_eval, name) is not None, name


def test_type_checkers_see_every_public_name() -> None:
    """The ``if TYPE_CHECKING:`` block of densecap_eval/__init__.py imports exactly __all__."""
    import ast

    tree = ast.parse(Path(densecap_eval.__file__).read_text(encoding="utf-8"))
    (block,) = [
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    ]
    seen = {
        a.asname or a.name for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert seen == set(densecap_eval.__all__)
    for node in block.body:  # each from the module the lazy __getattr__ reads it from
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            assert densecap_eval._EXPORTS[alias.name] == node.module, alias.name


def test_import_does_not_pull_in_torch() -> None:
    code = "import sys, densecap_eval, densecap_eval.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bundled_data_is_found_through_the_package() -> None:
    from densecap_eval.core.paths import bundled_models_dir, bundled_sample_root

    assert (bundled_sample_root() / "densely_captioned_images" / "splits.json").is_file()
    assert (bundled_models_dir() / "tiny_clip.json").is_file()
