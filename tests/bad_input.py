"""The bad-input harness every dataset family's table runs through (issue 22, section 1).

A family's test module builds ONE valid release (module-scoped), and each case copies it to a
fresh folder, applies one defect and runs the real CLI in-process (``densecap-eval run --model
builtin:tiny``). `check` then asserts the one policy per kind of defect (docs/data.md):

- ``fail``: the release as a whole is unusable: exit 1, exactly one ``error:`` line naming the
  file (and the problem), no traceback, no complete run stored;
- ``skip``: bad records left out: exit 0, each named in the output and in the run card
  (``skipped``, ``n_skipped``), every good record scored;
- ``ok``: odd but valid input: exit 0, nothing skipped, every record scored.

In every case nothing is written inside the release folder (the run writes only to ``--out``,
the cache and ``$TMPDIR``).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from densecap_eval.cli.app import main
from densecap_eval.run import runner

_LOADED: dict[str, Any] = {}


def _load_once(spec: str, **options: Any) -> Any:
    """The runner's model loading, once per (spec, options) per test process: the cases differ
    in their data only, and loading the bundled model is most of a small run's time."""
    key = f"{spec} {sorted(options.items())}"
    if key not in _LOADED:
        _LOADED[key] = _real_load(spec, **options)
    return _LOADED[key]


_real_load = runner.load_scorer

Change = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One defect applied to a copy of the valid release, and what the run must give."""

    change: Change
    expect: str  # ok | skip | fail
    scored: int | None = None  # examples scored (ok / skip)
    names: tuple[str, ...] = ()  # words the error line (fail) or each skip (skip) must hold
    n_skipped: int = 1
    args: tuple[str, ...] = ()  # extra CLI arguments (e.g. --split)
    data: str = ""  # the data root, relative to the release ("": the release folder)


def ok(change: Change, scored: int, *, args: Sequence[str] = (), data: str = "") -> Case:
    return Case(change, "ok", scored, (), 0, tuple(args), data)


def skip(
    change: Change,
    scored: int,
    *names: str,
    n: int = 1,
    args: Sequence[str] = (),
    data: str = "",
) -> Case:
    return Case(change, "skip", scored, names, n, tuple(args), data)


def fail(change: Change, *names: str, args: Sequence[str] = (), data: str = "") -> Case:
    return Case(change, "fail", None, names, 0, tuple(args), data)


def _tree(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size if not p.is_dir() else -1)
        for p in root.rglob("*")
    }


@dataclass
class Outcome:
    code: int
    err: str
    runs: list[dict] = field(default_factory=list)


def run_case(
    release: Path,
    tmp_path: Path,
    case: Case,
    *,
    task: str,
    capsys: pytest.CaptureFixture[str],
    data_root: Callable[[Path], Path] = lambda root: root,
) -> Outcome:
    """Copy ``release``, apply the case's defect and run ``task`` on it through the CLI.

    The embedding cache (the session's, see conftest) stays on: it is keyed by content, so the
    cases, which share most of their photos and texts, encode only what is new to them."""
    root = tmp_path / release.name
    shutil.copytree(release, root, symlinks=True)
    case.change(root)
    before = _tree(root)
    out = tmp_path / "out"
    argv = ["run", "--model", "builtin:tiny", "--task", task, "--out", str(out),
            "--data-root", str(data_root(root) / case.data), "--bootstrap", "0",
            *case.args]  # fmt: skip
    capsys.readouterr()
    with mock.patch.object(runner, "load_scorer", _load_once):
        code = main(argv)
    captured = capsys.readouterr()
    err = captured.err + captured.out
    assert _tree(root) == before, "the run wrote inside the release folder"
    runs = []
    for card in sorted(out.glob("*/run.json")) if out.is_dir() else []:
        data = json.loads(card.read_text(encoding="utf-8"))
        examples = card.parent / "examples.parquet"
        data["n_examples"] = len(pd.read_parquet(examples)) if examples.is_file() else None
        runs.append(data)
    return Outcome(code, err, runs)


def check(outcome: Outcome, case: Case) -> None:
    """Assert the policy of ``case.expect`` on a run's outcome (see the module doc)."""
    err = outcome.err
    assert "Traceback" not in err, err
    if case.expect == "fail":
        assert outcome.code == 1, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        for word in case.names:
            assert word in errors[0], (word, errors[0])
        assert not [r for r in outcome.runs if r["status"] == "complete"], outcome.runs
        return
    assert outcome.code == 0, err
    assert not [line for line in err.splitlines() if line.startswith("error:")], err
    (run,) = outcome.runs
    assert run["status"] == "complete"
    assert run["n_examples"] == case.scored, (run["n_examples"], run["skipped"], err)
    assert run["n_skipped"] == len(run["skipped"]) == case.n_skipped, (run["skipped"], err)
    for item in run["skipped"]:
        said = f"{item['image']}: {item['reason']}"
        for word in case.names:
            assert word in said, (word, said)
        assert f"skipped image {item['image']}" in err, err


# --- defects shared by every family ----------------------------------------------------------


def photo_bytes(mode: str = "RGB", size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    """A small photo in ``mode`` (RGB, CMYK, P, I;16, L ...), encoded as ``fmt``."""
    import io

    rng = np.random.default_rng(len(mode) + size[0])
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode == "I;16":
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def png_header(width: int, height: int, *, idat: bytes | None = None) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data is allocated); ``idat``:
    the image data chunk's bytes (default: a little valid zlib), each chunk's CRC correct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def put(relative: str, data: bytes | None) -> Change:
    """Replace (None: remove) one file of the release."""

    def change(root: Path) -> None:
        path = root / relative
        if data is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    return change


def edit(relative: str, fn: Callable[[bytes], bytes]) -> Change:
    """Rewrite one file of the release through ``fn`` (bytes -> bytes)."""

    def change(root: Path) -> None:
        path = root / relative
        path.write_bytes(fn(path.read_bytes()))

    return change


def both(*changes: Change) -> Change:
    def change(root: Path) -> None:
        for one in changes:
            one(root)

    return change


HTML = b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>Denied</body></html>\n"
NOT_UTF8 = "caf\u00e9".encode("latin-1")
HUGE_TEXT = "a long caption, " * 12_800  # 204,800 characters


def photo_cases(photo: str, ident: str, scored: int, *, encoded: str = "PNG") -> dict[str, Case]:
    """The image-level defects of one photo (``photo``, relative to the release; the record it
    belongs to is named ``ident`` in the skip): each skips that record alone, or, for odd but
    valid photos, scores it. ``scored``: examples of the intact release; ``encoded``: the
    format the photo's file name promises (Pillow reads by content, not by suffix)."""
    del encoded
    jpeg = photo_bytes(fmt="JPEG")
    return {
        "photo missing": skip(put(photo, None), scored - 1, ident),
        "photo zero bytes": skip(put(photo, b""), scored - 1, ident),
        "photo truncated": skip(put(photo, jpeg[: len(jpeg) // 2]), scored - 1, ident),
        "photo not an image": skip(put(photo, b"just some text\n"), scored - 1, ident),
        "photo in a format Pillow cannot decode": skip(
            put(photo, b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 64),
            scored - 1,
            ident,
        ),
        "photo PNG with good CRCs around a stream that does not inflate": skip(
            put(photo, png_header(32, 24, idat=b"not a zlib stream" * 4)), scored - 1, ident
        ),
        "photo 30000x30000 (decompression bomb)": skip(
            put(photo, png_header(30_000, 30_000)), scored - 1, ident, "pixels"
        ),
        "photo 1x1": ok(put(photo, photo_bytes(size=(1, 1))), scored),
        "photo CMYK": ok(put(photo, photo_bytes("CMYK", fmt="JPEG")), scored),
        "photo 16-bit": ok(put(photo, photo_bytes("I;16")), scored),
        "photo palette": ok(put(photo, photo_bytes("P")), scored),
    }


DELETE = object()  # a field value in `jsonl_edit`: remove the field


def jsonl_edit(relative: str, index: int, **changes: object) -> Change:
    """Set (or with `DELETE` remove) fields of the ``index``-th line (from 0) of a JSONL file."""

    def fn(data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        raw = json.loads(lines[index])
        for key, value in changes.items():
            if value is DELETE:
                del raw[key]
            else:
                raw[key] = value
        lines[index] = (json.dumps(raw) + "\n").encode()
        return b"".join(lines)

    return edit(relative, fn)


def jsonl_append(relative: str, *rows: object) -> Change:
    """Append rows (a str is written as a raw line) to a JSONL file."""
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    return edit(relative, lambda data: data + text.encode())


def check_strict(
    release: Path,
    tmp_path: Path,
    case: Case,
    *,
    task: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under ``--strict`` a bad record (a ``skip`` case) stops the run: exit 1 and one
    ``error:`` line naming it, no traceback, no complete run."""
    assert case.expect == "skip"
    strict = Case(case.change, "fail", None, case.names, 0, (*case.args, "--strict"), case.data)
    check(run_case(release, tmp_path, strict, task=task, capsys=capsys), strict)


def family_tests(cases: dict[str, Case], *, task: str) -> tuple[Callable[..., None], ...]:
    """The three tests every family's table runs: each case, the table's size (at least 20
    cases) and ``--strict`` on the "photo truncated" case. A family module binds them to its own
    ``test_*`` names (pytest collects a module's test functions wherever they were defined, and
    gives them the ``release`` fixture of that module)."""

    @pytest.mark.parametrize("name", list(cases))
    def each_case(
        name: str, release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        case = cases[name]
        check(run_case(release, tmp_path, case, task=task, capsys=capsys), case)

    def enough_cases() -> None:
        assert len(cases) >= 20

    def strict_stops_at_the_bad_record(
        release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        check_strict(release, tmp_path, cases["photo truncated"], task=task, capsys=capsys)

    return each_case, enough_cases, strict_stops_at_the_bad_record
