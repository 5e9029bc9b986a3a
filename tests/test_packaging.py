"""The package ships everything it needs and exposes a small, explicit API."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import densecap_eval

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_every_subpackage_and_its_data(tmp_path: Path) -> None:
    """A new benchmark folder (with a ``data/`` table) ships without editing any list. Built from
    a copy, so setuptools' build/ and egg-info never land in the checkout."""
    src = tmp_path / "src"
    for name in ("densecap_eval", "data", "dashboard"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    on_disk = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "densecap_eval").rglob("*")
        if p.suffix in (".py", ".json") and "__pycache__" not in p.parts
    }
    assert on_disk - shipped == set(), "setup.py / package-data misses these"
    assert "densecap_eval/dashboard/app.py" in shipped
    assert "densecap_eval/bundled/sample/README.md" in shipped or any(
        name.startswith("densecap_eval/bundled/sample/") for name in shipped
    )


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
