"""The shared skeleton (`DatasetBase`) and download helpers every benchmark uses."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.archives import extract_zip_safely, find_extracted
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    how_to_get,
    install_file,
    sha256_for,
    staging,
    url_and_sha256,
)
from densecap_eval.datasets.guards import SeenIds


class Toy(DatasetBase):
    name = "toy"
    title = "Toy"
    declared_splits = ("test",)

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        return [FingerprintFile("a.txt", self.root / "a.txt")]

    def parse_all(self, rows: list[str]) -> Iterator[str]:
        def parse(raw: str) -> str:
            if not raw:
                raise BadRecordError("?", "empty")
            return raw

        numbered = ((f"row {i}", raw) for i, raw in enumerate(rows))
        return self.iter_parsed(numbered, parse, ids=SeenIds("id"), key=lambda r: r)


def test_missing_root_names_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"`densecap-eval download toy --root .*nowhere`"):
        Toy(tmp_path / "nowhere")


def test_unknown_split_is_refused_with_one_message(tmp_path: Path) -> None:
    ds = Toy(tmp_path)
    ds.check_split(None)
    ds.check_split("test")
    with pytest.raises(DatasetError, match=r"unknown split 'dev' of Toy \(known: test\)"):
        ds.check_split("dev")
    with pytest.raises(DatasetError, match="unknown split"):
        ds.fingerprint(["dev"])


def test_fingerprint_follows_the_listed_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"one")
    ds = Toy(tmp_path)
    expected = hashlib.sha256(b"a.txt\x003\x00one").hexdigest()
    assert ds.fingerprint(["test"]) == expected
    (tmp_path / "a.txt").unlink()
    assert ds.fingerprint(["test"]) == hashlib.sha256(b"a.txt\x00-1\x00").hexdigest()


def test_fingerprint_file_size_only_and_sample(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"0123456789")
    sized, sampled = hashlib.sha256(), hashlib.sha256()
    FingerprintFile("big", path, content=False).feed(sized)
    FingerprintFile("big", path, sample=(4, 2, 3)).feed(sampled)
    assert sized.hexdigest() == hashlib.sha256(b"big\x0010\x00").hexdigest()
    assert sampled.hexdigest() == hashlib.sha256(b"big\x0010\x0001789").hexdigest()


def test_fingerprint_file_header_frames_the_entry(tmp_path: Path) -> None:
    """A loader may keep the framing its stored fingerprints used (``header``)."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"one")
    framed, gone = hashlib.sha256(), hashlib.sha256()
    FingerprintFile("a.txt", path, header=lambda label, size: f"[{label},{size}]".encode()).feed(
        framed
    )
    FingerprintFile("b.txt", tmp_path / "b.txt", header=lambda label, size: b"%d" % size).feed(gone)
    assert framed.hexdigest() == hashlib.sha256(b"[a.txt,3]one").hexdigest()
    assert gone.hexdigest() == hashlib.sha256(b"-1").hexdigest()


def test_check_root_may_accept_a_file(tmp_path: Path) -> None:
    """A loader whose root may be a single file overrides `check_root`; the rest is the base's."""

    class OneFile(Toy):
        def check_root(self) -> None:
            if not self.root.is_file():
                raise DatasetError(f"{self.root}: no such file")

        def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
            return [FingerprintFile("a.txt", self.root)]

    table = tmp_path / "a.txt"
    table.write_bytes(b"one")
    assert OneFile(table).fingerprint(["test"]) == Toy(tmp_path).fingerprint(["test"])
    with pytest.raises(DatasetError, match="no such file"):
        OneFile(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="not a folder"):
        Toy(table)


def test_iter_parsed_skips_loudly_and_refuses_repeats(tmp_path: Path) -> None:
    ds = Toy(tmp_path)
    assert list(ds.parse_all(["a", "", "b", "a"])) == ["a", "b"]
    assert [(s.image, s.reason) for s in ds.skipped] == [
        ("?", "empty"),
        ("a", "row 3: id 'a' repeats the one at row 0"),
    ]
    with pytest.raises(BadRecordError, match="empty"):
        list(Toy(tmp_path, strict=True).parse_all(["a", ""]))


def test_how_to_get_and_checksum_rules() -> None:
    assert (
        how_to_get("x", Path("/d"), what="them")
        == "get them with `densecap-eval download x --root /d`"
    )
    with pytest.raises(DownloadError, match="--url needs --sha256"):
        url_and_sha256("http://h/f", None, pinned="")
    with pytest.raises(DownloadError, match="--sha256 needs --url: pinned"):
        url_and_sha256(None, "0" * 64, pinned="pinned")
    loose = Source("f.json", "http://h/f.json", "file", check="ask the author")
    with pytest.raises(DownloadError, match=r"f\.json .*no pinned sha256.*ask the author"):
        sha256_for(loose, None)
    assert sha256_for(loose, "1" * 64) == "1" * 64
    message = DownloadMessage("done", "todo")
    assert (message, message.done, message.todo) == ("done\ntodo", "done", "todo")


def test_staging_extract_find_and_install(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("repo-abc/inner/marker.txt", "x")
        zf.writestr("__MACOSX/marker.txt", "x")
    archive = tmp_path / "a.zip"
    archive.write_bytes(buf.getvalue())
    root = tmp_path / "root"
    with staging(root) as content:
        extract_zip_safely(archive, content)
        found = find_extracted(content, lambda folder: (folder / "marker.txt").is_file())
        assert found == content / "repo-abc" / "inner"
        install_file(found / "marker.txt", root / "sub" / "marker.txt")
    assert [p.name for p in root.iterdir()] == ["sub"]  # the staging folder is gone
    assert (root / "sub" / "marker.txt").read_text() == "x"


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", "x")
    archive = tmp_path / "bad.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match=r"refusing to extract member '\.\./evil\.txt'"):
        extract_zip_safely(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
