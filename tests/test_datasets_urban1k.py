"""Urban1k: the loader on the released layout (Urban1k/{image,caption}), both peer protocols end
to end with the fake scorer against a direct computation, and the download from 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, load_region
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets import DOWNLOADERS, load_dataset
from densecap_eval.datasets.regions import Region
from densecap_eval.datasets.urban1k.loader import Urban1kDataset, caption_order, download

# n -> caption file bytes; photo colour by n. Real captions are one long paragraph; these cover
# a second line, CRLF, no final newline, LoTLIP's "1.5" and "</s>" cases and non-ASCII text.
CAPTIONS: dict[int, bytes] = {
    1: b"A red tram passes a bakery; the sign reads 1.5 euro per roll.\n",
    2: b"Two cyclists wait at a light.\nA second line the peers never read.\n",
    3: b"A crowded market street under striped awnings.\r\nSecond line after CRLF.\r\n",
    4: b"An empty plaza at dusk with wet cobbles",  # no final newline
    5: "Caf\u00e9 terrace, na\u00efve mural, \u201cquotes\u201d and a dog.\n".encode(),
    6: b"A bus stop</s>with an advert. Three people wait. 2.0 minutes left\n",
    7: b"A narrow alley with laundry lines overhead.\n\nA paragraph after a blank line.\n",
    8: b"  Leading spaces before a taxi rank by the station.  \n",
    9: b"A bridge over a canal with moored boats.\n",
    10: b"A rooftop view of tiled roofs and a church tower.\n",
    11: b"A night scene: neon signs. Reflections on the road.\n",
    12: b"A school crossing with a lollipop lady. A van waits.\n",
}
BAD = {13: b"", 14: b"\xff\xfe not utf-8 \xc3\x28\n", 15: b" \n\t\n"}
MISSING_PHOTO = 16  # caption file without its image: the task skips it


def _colour(n: int) -> tuple[int, int, int]:
    return ((n * 53) % 256, (n * 97 + 40) % 256, (n * 151 + 80) % 256)


def write_urban1k(parent: Path, captions: dict[int, bytes] | None = None) -> Path:
    """The unzipped release under ``parent``: Urban1k/image/<n>.jpg, Urban1k/caption/<n>.txt."""
    base = parent / "Urban1k"
    (base / "image").mkdir(parents=True)
    (base / "caption").mkdir()
    captions = captions if captions is not None else {**CAPTIONS, **BAD}
    for n, data in captions.items():
        (base / "caption" / f"{n}.txt").write_bytes(data)
        if n == MISSING_PHOTO:
            continue
        if n == 5:  # a grayscale JPEG
            Image.new("L", (16, 12), 90).save(base / "image" / f"{n}.jpg", quality=95)
        else:
            Image.new("RGB", (16, 12), _colour(n)).save(base / "image" / f"{n}.jpg", quality=95)
    (base / "caption" / ".DS_Store").write_bytes(b"\0\1")  # not a caption: ignored
    return base


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_urban1k(tmp_path, {**CAPTIONS, **BAD, MISSING_PHOTO: b"A caption, no photo.\n"})


# --- the loader -------------------------------------------------------------------------------


def test_records_in_integer_order_with_the_whole_file_as_text(base: Path) -> None:
    ds = Urban1kDataset(base)
    assert ds.splits() == ["test"]
    records = list(ds.records())
    assert [r.id for r in records] == [f"{n}.jpg" for n in [*range(1, 13), MISSING_PHOTO]]
    for record in records:
        n = int(record.id.removesuffix(".jpg"))
        assert record.image == base / "image" / f"{n}.jpg"
        assert record.split == "test"
        assert record.meta == {"caption_file": f"{n}.txt"}
        (text,) = record.texts
        assert (text.role, text.kind) == ("description", "caption")
        if n in CAPTIONS:  # byte-exact: second lines, CRLF and spaces kept
            assert text.text.encode("utf-8") == CAPTIONS[n]
    assert list(ds.records("test")) == records


def test_bad_caption_files_are_named_counted_and_skipped(base: Path) -> None:
    ds = Urban1kDataset(base)
    list(ds.records())
    assert [(s.image, s.reason.split(" (")[0]) for s in ds.skipped] == [
        ("13.jpg", "caption file 13.txt is empty"),
        ("14.jpg", "caption file 14.txt is not UTF-8"),
        ("15.jpg", "caption file 15.txt is empty"),
    ]
    list(ds.records())  # a second pass lists nobody twice
    assert len(ds.skipped) == 3


def test_strict_stops_at_the_first_bad_caption(base: Path) -> None:
    ds = Urban1kDataset(base, strict=True)
    with pytest.raises(BadRecordError, match=r"13\.jpg: caption file 13\.txt is empty"):
        list(ds.records())


def test_caption_order_is_numeric_then_by_name() -> None:
    names = ["10.txt", "2.txt", "b.txt", "1.txt", "a.txt", "100.txt", "02.txt"]
    assert sorted(names, key=caption_order) == [
        "1.txt",
        "02.txt",
        "2.txt",
        "10.txt",
        "100.txt",
        "a.txt",
        "b.txt",
    ]


def test_root_is_the_release_folder_or_its_parent(base: Path) -> None:
    by_parent = Urban1kDataset(base.parent)
    by_folder = Urban1kDataset(base)
    assert by_parent.base == by_folder.base == base
    assert by_parent.fingerprint(["test"]) == by_folder.fingerprint(["test"])
    assert load_dataset("urban1k", root=str(base.parent)).base == base


def test_fingerprint_follows_caption_bytes_only(base: Path) -> None:
    ds = Urban1kDataset(base)
    before = ds.fingerprint(["test"])
    (base / "image" / "1.jpg").write_bytes(b"changed photo")  # photos are not fingerprinted
    assert Urban1kDataset(base).fingerprint(["test"]) == before
    (base / "caption" / "2.txt").write_bytes(CAPTIONS[2] + b"x")
    assert Urban1kDataset(base).fingerprint(["test"]) != before
    with pytest.raises(DatasetError, match="unknown split 'train'"):
        ds.fingerprint(["train"])
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        list(ds.records("val"))


@pytest.mark.parametrize(
    "layout, problem",
    [
        ("absent", r"Urban1k root .*/nowhere does not exist or is not a folder"),
        ("empty", r"caption not found \(nor .*Urban1k/caption\)"),
        ("no-images", r"Urban1k/image not found: Urban1k needs image/ beside caption/"),
        ("no-captions", r"Urban1k/caption holds no \.txt caption file"),
    ],
)
def test_whole_input_problems_are_one_line_with_the_fix(
    tmp_path: Path, layout: str, problem: str
) -> None:
    root = tmp_path / ("nowhere" if layout == "absent" else "data")
    if layout != "absent":
        root.mkdir()
    if layout == "no-images":
        (root / "Urban1k" / "caption").mkdir(parents=True)
        (root / "Urban1k" / "caption" / "1.txt").write_text("x\n")
    if layout == "no-captions":
        (root / "Urban1k" / "caption").mkdir(parents=True)
        (root / "Urban1k" / "image").mkdir()
    with pytest.raises(DatasetError) as caught:
        Urban1kDataset(root)
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(problem, message), message
    assert f"`densecap-eval download urban1k --root {root}`" in message


# --- both protocols end to end ----------------------------------------------------------------


def _lotlip(text: str) -> str:
    """LoTLIP's split_caption + '. '.join, as in its dataloaders/urban1k.py."""
    return ". ".join(p.strip() for p in re.split(r"\n|</s>|[.]", text) if len(p.strip()) != 0)


def _peer_first_line(path: Path) -> str:
    """Long-CLIP's ``open(...).readlines()[0]`` (universal newlines), line ending dropped as
    every CLIP tokenizer's whitespace cleaning does."""
    with open(path, encoding="utf-8") as fh:
        return fh.readlines()[0].rstrip("\n")


def _direct(images: list[Path], texts: list[str]) -> tuple[list[int], list[int]]:
    """Pessimistic ranks from the fake's own score matrix (rows: images, columns: texts)."""
    scorer = FakeEmbeddingScorer(max_text_tokens=77)
    s = scorer.score([load_region(Region(str(p))) for p in images], texts).numpy()
    n = len(texts)
    i2t = [int((s[i] >= s[i, i]).sum()) for i in range(n)]
    t2i = [int((s[:, i] >= s[i, i]).sum()) for i in range(n)]
    return i2t, t2i


@pytest.mark.parametrize(
    "task, rule",
    [
        ("urban1k/retrieval", lambda line: line),
        ("urban1k/retrieval-lotlip", _lotlip),
    ],
    ids=["long-clip", "lotlip"],
)
def test_evaluate_matches_a_direct_computation(base: Path, task: str, rule) -> None:
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(max_text_tokens=77),
        task,
        data_root=base.parent,
        n_boot=0,
        use_cache=False,
        progress=False,
    )
    metrics = result.metrics[task]
    kept = sorted(CAPTIONS)  # bad captions and the caption without a photo are skipped
    assert metrics["n"] == metrics["gallery"] == len(kept)
    # The task's own skips (a photo it cannot decode) reach the result; the loader's bad
    # captions are logged and listed in the dataset's `skipped` (tested above).
    skipped = {s.image: s.reason for s in result.skipped}
    assert "16.jpg" in skipped and "not found" in skipped["16.jpg"]
    assert set(skipped) <= {"13.jpg", "14.jpg", "15.jpg", "16.jpg"}

    texts = [rule(_peer_first_line(base / "caption" / f"{n}.txt")) for n in kept]
    frame = result.examples
    assert frame["image"].tolist() == [f"{n}.jpg" for n in kept]
    assert frame["text"].tolist() == texts
    if task.endswith("lotlip"):
        assert "1. 5 euro per roll" in texts[0] and "A bus stop. with an advert" in texts[5]
    else:
        assert texts[1] == "Two cyclists wait at a light."  # the second line is never read
    i2t, t2i = _direct([base / "image" / f"{n}.jpg" for n in kept], texts)
    assert frame["rank_i2t"].tolist() == i2t
    assert frame["rank_t2i"].tolist() == t2i
    for k in (1, 5, 10):
        assert metrics[f"i2t_r{k}"] == pytest.approx(np.mean([r <= k for r in i2t]))
        assert metrics[f"t2i_r{k}"] == pytest.approx(np.mean([r <= k for r in t2i]))
    assert max(i2t) > 1 and max(t2i) > 1  # the check is not trivial: some queries miss
    assert result.config["dataset_fingerprint"] == Urban1kDataset(base).fingerprint(["test"])


def test_first_line_matches_readlines_on_unicode_line_separators(tmp_path: Path) -> None:
    from densecap_eval.tasks.retrieval import TEXT_RULES

    path = tmp_path / "1.txt"
    path.write_bytes("A street\u2028sign and a tram.\nSecond line.\n".encode())
    assert TEXT_RULES["first-line"](path.read_text(encoding="utf-8")) == _peer_first_line(path)


# --- download ---------------------------------------------------------------------------------


def _zip_of(folder: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip of ``folder``'s files under its own name, as Urban1k.zip (Urban1k/...)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _serve(served: Path, url: str, payload: bytes) -> tuple[str, str]:
    (served / "Urban1k.zip").write_bytes(payload)
    return f"{url}/Urban1k.zip", hashlib.sha256(payload).hexdigest()


def test_download_extracts_the_release_and_the_loader_reads_it(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    release = write_urban1k(tmp_path / "src", dict(CAPTIONS))
    url, sha = _serve(*server, _zip_of(release, {"__MACOSX/Urban1k/._1.txt": b"junk"}))
    root = tmp_path / "data"
    assert DOWNLOADERS.get("urban1k") is download

    message = download(root, url=url, sha256=sha, progress=False)

    assert f"Urban1k extracted to {root / 'Urban1k'}: 12 caption files, 12 images" in message
    assert sorted(p.name for p in root.iterdir()) == [".downloads", "Urban1k"]
    ds = Urban1kDataset(root)
    assert [r.texts[0].text.encode() for r in ds.records()] == [CAPTIONS[n] for n in CAPTIONS]
    # A second download replaces the folder (the kept archive is not fetched again).
    (server[0] / "Urban1k.zip").unlink()
    download(root, url=url, sha256=sha, progress=False)
    assert len(list(Urban1kDataset(root).records())) == 12


def test_download_with_a_bad_checksum_extracts_nothing(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    release = write_urban1k(tmp_path / "src", dict(CAPTIONS))
    url, _ = _serve(*server, _zip_of(release))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"checksum mismatch .* nothing was extracted"):
        download(root, url=url, sha256="0" * 64, progress=False)
    assert not (root / "Urban1k").exists()
    assert not any((root / ".downloads").iterdir())


def test_download_needs_a_sha256(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"no pinned sha256 .* pass --sha256"):
        download(tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "member", ["../evil.txt", "/abs/evil.txt", "Urban1k/../../evil.txt"], ids=str
)
def test_download_refuses_unsafe_zip_members(
    server: tuple[Path, str], tmp_path: Path, member: str
) -> None:
    release = write_urban1k(tmp_path / "src", {1: CAPTIONS[1]})
    url, sha = _serve(*server, _zip_of(release, {member: b"evil"}))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"refusing to extract member .* nothing was extracted"):
        download(root, url=url, sha256=sha, progress=False)
    assert not (root / "Urban1k").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_download_refuses_a_symlink_member(server: tuple[Path, str], tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("Urban1k/caption/1.txt")
        link.external_attr = (0o120777 << 16) | 0
        zf.writestr(link, "/etc/passwd")
    url, sha = _serve(*server, buf.getvalue())
    with pytest.raises(DownloadError, match="it is a symbolic link"):
        download(tmp_path / "data", url=url, sha256=sha, progress=False)


def test_download_of_a_zip_without_the_release_says_so(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    url, sha = _serve(*server, buf.getvalue())
    with pytest.raises(DownloadError, match="holds no folder with caption/ and image/"):
        download(tmp_path / "data", url=url, sha256=sha, progress=False)
    assert not (tmp_path / "data" / "Urban1k").exists()


def test_cli_download_urban1k(
    server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from densecap_eval.cli.app import main

    release = write_urban1k(tmp_path / "src", dict(CAPTIONS))
    url, sha = _serve(*server, _zip_of(release))
    root = tmp_path / "data"
    args = ["download", "urban1k", "--root", str(root), "--url", url, "--no-progress"]
    assert main([*args, "--sha256", sha]) == 0
    assert f"Urban1k extracted to {root / 'Urban1k'}: 12 caption files" in capsys.readouterr().out
    assert main(["download", "urban1k", "--root", str(tmp_path / "other"), "--no-progress"]) != 0
    assert "no pinned sha256" in capsys.readouterr().err
