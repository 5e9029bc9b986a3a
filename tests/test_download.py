"""`densecap-eval download dci`: the real pooch download path against a local HTTP server on
127.0.0.1, checksum failures, unsafe archives, and the photo check with its SA-1B message."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from dci_records import add_sdci, make_mask, make_record, photo_bytes, write_release

from densecap_eval.cli.app import main
from densecap_eval.core.errors import DatasetError, DownloadError, UnknownNameError
from densecap_eval.datasets import download as shared
from densecap_eval.datasets.dci import download as dl

RELEASE = "densely_captioned_images"

# --- a local server and archives in the real layout ----------------------------------------


def _records() -> dict[str, dict]:
    masks = [make_mask(1, label="dog", caption="brown", bounds=(10, 10, 300, 300), photo_size=None)]
    return {
        "a.json": add_sdci(make_record("a.jpg", masks=masks)),
        "b.json": add_sdci(make_record("b.jpg")),
    }


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def release_members(prefix: str = f"{RELEASE}/") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The annotations archive as published: densely_captioned_images/{splits.json, complete/}."""
    records = _records()
    splits = {"train": [], "valid": ["b.json"], "test": ["a.json"]}
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    if prefix:
        members.append(_dir(prefix.rstrip("/")))
    members += [
        _file(f"{prefix}splits.json", json.dumps(splits).encode()),
        _dir(f"{prefix}complete"),
    ]
    members += [_file(f"{prefix}complete/{n}", json.dumps(r).encode()) for n, r in records.items()]
    return members


def serve_archive(
    served: Path, base_url: str, members: list, name: str = "dci.tar.gz"
) -> tuple[str, str]:
    """Write a .tar.gz of ``members`` into the served folder; returns (url, sha256)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    payload = buf.getvalue()
    (served / name).write_bytes(payload)
    return f"{base_url}/{name}", hashlib.sha256(payload).hexdigest()


def _download(root: Path, url: str, sha: str) -> int:
    return main(
        ["download", "dci", "--root", str(root), "--url", url, "--sha256", sha, "--no-progress"]
    )


def _leftovers(root: Path) -> list[str]:
    """Anything in root besides the kept download folder."""
    return sorted(p.name for p in root.iterdir() if p.name != shared.DOWNLOADS_DIR)


# --- the good path ----------------------------------------------------------------------------


def test_download_extracts_release_and_names_sa1b_for_missing_photos(
    server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, sha = serve_archive(*server, release_members())
    root = tmp_path / "data"

    assert _download(root, url, sha) == 0

    base = root / RELEASE
    assert json.loads((base / "splits.json").read_text()) == {
        "train": [],
        "valid": ["b.json"],
        "test": ["a.json"],
    }
    assert json.loads((base / "complete" / "a.json").read_text()) == _records()["a.json"]
    assert (base / "photos").is_dir() and not any((base / "photos").iterdir())
    assert _leftovers(root) == [RELEASE]  # no staging folder left behind
    assert (root / shared.DOWNLOADS_DIR / "dci.tar.gz").is_file()  # kept: a re-run fetches nothing

    out, err = capsys.readouterr()
    assert f"annotations extracted to {base}" in out
    photos = base / "photos"
    assert f"2 of 2 photos are missing from {photos} (first: b.jpg, a.jpg)." in err
    assert "sa_000138.tar" in err
    assert "https://ai.meta.com/datasets/segment-anything-downloads/" in err
    assert f"tar -xf sa_000138.tar -C {photos}" in err


def test_verify_fails_until_photos_are_unpacked_then_passes(
    server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, sha = serve_archive(*server, release_members())
    root = tmp_path / "data"
    assert _download(root, url, sha) == 0
    capsys.readouterr()

    assert main(["download", "dci", "--root", str(root), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 photos are missing" in err and "sa_000138.tar" in err
    photos = root / RELEASE / "photos"
    assert err.endswith(f"error: photo check failed for {photos}: 0 of 2 usable, 2 missing\n")

    (photos / "a.jpg").write_bytes(photo_bytes(400, 300))
    assert main(["download", "dci", "--root", str(root), "--verify"]) == 1
    err = capsys.readouterr().err
    assert f"1 of 2 photos are missing from {photos} (first: b.jpg)." in err

    (photos / "b.jpg").write_bytes(photo_bytes(64, 64))
    assert main(["download", "dci", "--root", str(root), "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"all 2 photos named by 2 records are in {photos}" in out

    # The downloaded release is what the loader and inspect read.
    assert main(["inspect", "dci", "--root", str(root), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["skipped"]) == (1, [])


def test_redownload_keeps_unpacked_photos(
    server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, sha = serve_archive(*server, release_members())
    root = tmp_path / "data"
    assert _download(root, url, sha) == 0
    photo = root / RELEASE / "photos" / "a.jpg"
    photo.write_bytes(photo_bytes(32, 32))
    (root / RELEASE / "complete" / "stale.json").write_text("{}")

    assert _download(root, url, sha) == 0
    assert photo.read_bytes() == photo_bytes(32, 32)
    assert not (root / RELEASE / "complete" / "stale.json").exists()  # annotations replaced
    assert _leftovers(root) == [RELEASE]
    assert "1 of 2 photos are missing" in capsys.readouterr().err


def test_archive_packed_without_the_release_folder_still_lands_in_it(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    url, sha = serve_archive(*server, release_members(prefix=""))
    root = tmp_path / "data"
    assert dl.download_dci(root, url=url, sha256=sha, progress=False) == root / RELEASE
    assert (root / RELEASE / "splits.json").is_file()
    assert (root / RELEASE / "complete" / "b.json").is_file()


def test_archive_that_is_not_the_release_installs_nothing(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    url, sha = serve_archive(*server, [_file("readme.txt", b"hello")])
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"holds no densely_captioned_images/splits\.json"):
        dl.download_dci(root, url=url, sha256=sha, progress=False)
    assert _leftovers(root) == []


# --- bad downloads ----------------------------------------------------------------------------


def test_wrong_checksum_extracts_nothing(
    server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = serve_archive(*server, release_members())
    root = tmp_path / "data"

    assert _download(root, url, "0" * 64) == 2

    err = capsys.readouterr().err
    served = hashlib.sha256((server[0] / "dci.tar.gz").read_bytes()).hexdigest()
    assert err.startswith(
        f"error: checksum mismatch for {url}: expected sha256 {'0' * 64}, got {served}; "
        "the download was deleted and nothing was extracted"
    )
    assert err.count("\n") == 1
    assert _leftovers(root) == []
    assert list((root / shared.DOWNLOADS_DIR).iterdir()) == []  # pooch deleted the bad file


def _escape_members(tmp_path: Path) -> dict[str, list]:
    """Archives that try to write outside the target (each also holds a valid release)."""
    outside = str(tmp_path / "outside")
    p = f"{RELEASE}/"
    return {
        "dotdot": [_file("../evil", b"x")],
        "nested-dotdot": [_file(f"{p}complete/../../../evil", b"x")],
        "absolute": [_file(str(tmp_path / "abs-evil"), b"x")],
        "symlink-out": [_link(f"{p}link", "../../outside")],
        "symlink-absolute": [_link(f"{p}link", outside)],
        "hardlink-out": [_link(f"{p}hard", "../outside", tarfile.LNKTYPE)],
        "hardlink-absolute": [_link(f"{p}hard", outside, tarfile.LNKTYPE)],
        "through-symlink": [_link(f"{p}d", "complete"), _file(f"{p}d/x.json", b"{}")],
        "device": [_link(f"{p}dev", "", tarfile.CHRTYPE)],
        "fifo": [_link(f"{p}fifo", "", tarfile.FIFOTYPE)],
    }


ESCAPES = sorted(_escape_members(Path("/x")))


@pytest.mark.parametrize("case", ESCAPES)
def test_unsafe_archive_is_refused_and_nothing_extracted(
    case: str, server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _escape_members(tmp_path)[case]
    url, sha = serve_archive(*server, release_members() + bad)
    root = tmp_path / "deep" / "data"

    assert _download(root, url, sha) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: dci.tar.gz: refusing to extract member ")
    assert bad[-1][0].name in err and "nothing was extracted" in err
    assert err.count("\n") == 1
    assert _leftovers(root) == []
    for name in ("evil", "abs-evil", "outside"):
        assert not (tmp_path / name).exists() and not (tmp_path / "deep" / name).exists()


def test_symlink_chain_escaping_at_extraction_time_is_refused(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    # Each link stays inside by name ("d/up" -> "..", "a" -> "d/up/../.." reads as the release
    # folder), but on disk "a" resolves two levels above the release folder, outside the
    # target; the extraction filter, which resolves real paths, catches it.
    p = f"{RELEASE}/"
    chain = [_dir(f"{p}d"), _link(f"{p}d/up", ".."), _link(f"{p}a", "d/up/../..")]
    url, sha = serve_archive(*server, release_members() + chain)
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="refusing to extract"):
        dl.download_dci(root, url=url, sha256=sha, progress=False)
    assert _leftovers(root) == []


def test_unreachable_url_is_a_download_error(
    server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, base_url = server
    assert _download(tmp_path / "data", f"{base_url}/nope.tar.gz", "a" * 64) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot download {base_url}/nope.tar.gz")
    assert err.count("\n") == 1


CLI_ERRORS = [
    (
        ["download", "imagenet", "--root", "R"],
        "unknown dataset 'imagenet'",
        "known: aro-coco, aro-flickr30k, aro-vg, clip_benchmark, dci, docci",
    ),
    (
        ["download", "dci", "--root", "R", "--url", "http://127.0.0.1:9/x"],
        "--url needs --sha256",
        "",
    ),
    (["download", "dci", "--root", "R", "--sha256", "xyz"], "--sha256 must be 64 hexadecimal", ""),
    (
        ["download", "dci", "--root", "R/missing", "--verify"],
        "does not exist; nothing to verify",
        "",
    ),
    (
        ["download", "dci", "--root", "R", "--verify"],
        "not found: run `densecap-eval download dci",
        "",
    ),
    (["download", "files", "--root", "R"], "no download path for dataset 'files'", "dci"),
    (["download", "urban1k", "--root", "R", "--verify"], "--verify checks DCI's photos", ""),
]


@pytest.mark.parametrize(("argv", "message", "also"), CLI_ERRORS)
def test_cli_errors_are_one_line(
    argv: list[str], message: str, also: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("R", str(tmp_path), 1) if a.startswith("R") else a for a in argv]
    # usage errors exit 2; a release found unusable (DatasetError, here by --verify) exits 1
    assert main(argv) == (1 if "not found: run" in message else 2)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err and also in err


def test_every_downloader_goes_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from densecap_eval.datasets import DOWNLOADERS

    calls: list[tuple[Path, dict[str, Any]]] = []

    def fake(root: Path, **options: Any) -> str:
        calls.append((root, options))
        return "fetched caption/ and image/; nothing left to do"

    monkeypatch.setitem(DOWNLOADERS._entries, "urban1k", fake)
    argv = ["download", "urban1k", "--root", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert calls == [(tmp_path, {"url": None, "sha256": None, "progress": False})]
    out, err = capsys.readouterr()
    assert out == (
        f"downloading urban1k into {tmp_path}\nfetched caption/ and image/; nothing left to do\n"
    )
    assert err == ""


def test_dci_wrapper_returns_the_message(server: tuple[Path, str], tmp_path: Path) -> None:
    url, sha = serve_archive(*server, release_members())
    message = dl.download(tmp_path, url=url, sha256=sha, progress=False)
    base = tmp_path / RELEASE
    assert isinstance(message, str) and isinstance(message, shared.DownloadMessage)
    assert message.done == f"annotations extracted to {base}"
    assert message.todo.startswith(f"0 of 2 photos are usable in {base / 'photos'}")
    assert str(message) == f"{message.done}\n{message.todo}"
    for name in ("a.jpg", "b.jpg"):
        (base / "photos" / name).write_bytes(photo_bytes(8, 8))
    again = dl.download(tmp_path, url=url, sha256=sha, progress=False)
    assert isinstance(again, shared.DownloadMessage) and again.todo == ""
    assert again.done.endswith(f"all 2 photos named by 2 records are in {base / 'photos'}")
    with pytest.raises(DownloadError, match="--url needs --sha256"):
        dl.download(tmp_path, url=url)


# --- photos -----------------------------------------------------------------------------------


def test_verify_photos_reports_missing_empty_and_unreadable(tmp_path: Path) -> None:
    records: dict[str, Any] = {
        f"{s}.json": make_record(f"{s}.jpg") for s in ("ok", "gone", "empty", "text", "cut")
    }
    records["broken.json"] = "{not json"
    records["twin.json"] = make_record("ok.jpg")  # a second record of the same photo
    root = write_release(
        tmp_path,
        records,
        photo_files={"gone.jpg": None, "empty.jpg": b"", "text.jpg": b"hello", "cut.jpg": b"\xff"},
    )
    report = dl.verify_photos(root)
    assert (report.records, report.present) == (6, 1)
    assert report.missing == ["gone.jpg"]
    assert report.empty == ["empty.jpg"]
    assert [name for name, _ in report.unreadable] == ["text.jpg", "cut.jpg"]
    assert [name for name, _ in report.bad_records] == ["broken.json"]
    assert not report.ok
    text = report.message()
    assert "1 of 6 photos are missing" in text and "sa_000138.tar" in text
    assert "1 photos are empty files (first: empty.jpg)" in text
    assert "2 photos have no readable image header" in text
    assert report.to_dict()["missing"] == ["gone.jpg"]


def test_verify_photos_without_photos_folder_counts_all_missing(tmp_path: Path) -> None:
    root = write_release(tmp_path, {f"{i}.json": make_record(f"sa_{i}.jpg") for i in range(7)})
    photos = root / RELEASE / "photos"
    for item in photos.iterdir():
        item.unlink()
    photos.rmdir()
    report = dl.verify_photos(root)
    assert report.missing == [f"sa_{i}.jpg" for i in range(7)]
    text = report.message()
    assert (
        f"7 of 7 photos are missing from {photos} "
        "(first: sa_0.jpg, sa_1.jpg, sa_2.jpg, sa_3.jpg, sa_4.jpg, ... 2 more)."
    ) in text
    assert f"Unpack its .jpg images directly into {photos}" in text


def test_verify_photos_needs_a_release(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="densely_captioned_images not found"):
        dl.verify_photos(tmp_path)
    (tmp_path / RELEASE).mkdir()
    with pytest.raises(DatasetError, match=r"splits\.json not found"):
        dl.verify_photos(tmp_path)


# --- constants and adapters -------------------------------------------------------------------

PUBLISHED = [
    (
        dl.SOURCES["annotations"].url,
        dl.SOURCES["annotations"].sha256,
        "https://dl.fbaipublicfiles.com/densely_captioned_images/dci.tar.gz",
        "d865c244150168d3f25daaad0bf5b70b2123cf3e83ca7b0e207d5b26943c5fc7",
    ),
    (
        dl.SOURCES["dci_pick1"].url,
        dl.SOURCES["dci_pick1"].sha256,
        "https://dl.fbaipublicfiles.com/densely_captioned_images/dci_pick1.tar.gz",
        "225b9e1c88a00a2dd62cd5b0e23d4133efbbffe8d28b6de796ba894db1a2aa6a",
    ),
    (
        dl.SOURCES["dci_pick1_nl0"].url,
        dl.SOURCES["dci_pick1_nl0"].sha256,
        "https://dl.fbaipublicfiles.com/densely_captioned_images/dci_pick1_nl0.tar.gz",
        "2943daaba2489492c274284631223e02933cc9436db201c23abe5939ed01d446",
    ),
]


@pytest.mark.parametrize(("url", "sha", "expected_url", "expected_sha"), PUBLISHED)
def test_published_locations(url: str, sha: str, expected_url: str, expected_sha: str) -> None:
    assert (url, sha) == (expected_url, expected_sha)


def test_sha256_forms() -> None:
    digest = "ab" * 32
    assert shared.normalize_sha256(f"sha256:{digest.upper()}") == digest
    with pytest.raises(DownloadError, match="64 hexadecimal"):
        shared.normalize_sha256("md5:abc")


def test_download_adapter(server: tuple[Path, str], tmp_path: Path) -> None:
    members = [_dir("dci_pick1"), _file("dci_pick1/adapter_config.json", b'{"r": 8}')]
    url, sha = serve_archive(*server, members, name="dci_pick1.tar.gz")
    dest = tmp_path / "models"
    path = dl.download_adapter("dci_pick1", dest, url=url, sha256=sha, progress=False)
    assert path == dest / "dci_pick1"
    assert (path / "adapter_config.json").read_bytes() == b'{"r": 8}'
    with pytest.raises(UnknownNameError, match="known: dci_pick1, dci_pick1_nl0"):
        dl.download_adapter("dci_pick2", dest)
