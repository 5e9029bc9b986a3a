"""The DOCCI loader on its real layout (docci_descriptions.jsonlines + images/), written here:
records, bad lines, whole-input errors, docci/retrieval end to end against a direct computation,
and `download` against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets import load_dataset
from densecap_eval.datasets.docci import loader as docci_module
from densecap_eval.datasets.docci.loader import DOCCIDataset
from densecap_eval.datasets.download import DOWNLOADS_DIR
from densecap_eval.datasets.records import Text

# --- shared helpers (also used by test_datasets_iiw.py) ---------------------------------------


def write_photo(path: Path, seed: int, *, mode: str = "RGB", fmt: str = "JPEG") -> None:
    """A small photo with four seeded colour blocks (the fake scorer tells them apart);
    ``mode`` RGBA (half-transparent alpha) or L (grayscale) for the decode cases."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((24, 32, 3), dtype=np.uint8)
    for top in (0, 12):
        for left in (0, 16):
            arr[top : top + 12, left : left + 16] = rng.integers(0, 256, 3)
    img = Image.fromarray(arr, "RGB")
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(rng.integers(0, 256, (24, 32), dtype=np.uint8), "L"))
    elif mode == "L":
        img = img.convert("L")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)


def direct_ranks(
    scorer: FakeEmbeddingScorer, photos: Sequence[Path], texts: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Pessimistic i2t / t2i ranks of item i (owning text i) from the fake's own score matrix,
    photos decoded as the engine does (Pillow, convert("RGB"))."""
    images = []
    for path in photos:
        with Image.open(path) as img:
            images.append(img.convert("RGB"))
    s = scorer.score(images, list(texts)).numpy()
    n = len(texts)
    i2t = [int((s[i] >= s[i, i]).sum()) for i in range(n)]
    t2i = [int((s[:, i] >= s[i, i]).sum()) for i in range(n)]
    return i2t, t2i


def check_recalls(metrics: dict[str, Any], i2t: list[int], t2i: list[int]) -> None:
    assert metrics["n"] == len(i2t)
    for k in (1, 5, 10):
        assert metrics[f"i2t_r{k}"] == pytest.approx(np.mean([r <= k for r in i2t]))
        assert metrics[f"t2i_r{k}"] == pytest.approx(np.mean([r <= k for r in t2i]))


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, message
    return message


# --- a release in the published layout --------------------------------------------------------

DESCRIPTIONS = "docci_descriptions.jsonlines"


def rec(example_id: str, description: str, image_file: str | None = None) -> dict[str, str]:
    split = example_id.rsplit("_", 1)[0]
    return {
        "example_id": example_id,
        "split": split,
        "image_file": image_file or f"{example_id}.jpg",
        "description": description,
    }


RECORDS = [
    rec("train_00000", "A red bicycle leans on a brick wall."),
    rec("test_00000", "A white toilet in an alcove on beige glossy tiles."),
    rec("test_00001", "A transparent sticker on glass.\nIt reads 1.5 m.", "test_00001.png"),
    rec("qual_dev_00000", "Two dogs on a beach at dusk."),
    rec("test_00002", "A grey  stone bridge over a river, café sign, \u00e9t\u00e9.  "),
    rec("qual_test_00000", "A bowl of lemons."),
    rec("test_00003", "Four green chairs around a round table.\n\nA lamp above."),
]


def write_release(root: Path, records: Sequence[dict[str, Any] | str] = RECORDS) -> Path:
    """The descriptions file (a str item is written as a raw line) and the photos of every
    well-formed record: the RGBA PNG and the grayscale JPEG among them."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (root / DESCRIPTIONS).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    for i, r in enumerate(records):
        if isinstance(r, str) or not isinstance(r.get("image_file"), str):
            continue
        path = root / "images" / r["image_file"]
        if "/" in r["image_file"] or ".." in r["image_file"]:
            continue
        if path.suffix == ".png":
            write_photo(path, i, mode="RGBA", fmt="PNG")
        elif r.get("example_id") == "test_00002":
            write_photo(path, i, mode="L")
        else:
            write_photo(path, i)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_release(tmp_path / "docci")


# --- records ----------------------------------------------------------------------------------


def test_splits_and_records_in_file_order(root: Path) -> None:
    ds = DOCCIDataset(root)
    assert ds.name == "docci" and ds.root == root
    assert ds.splits() == ["train", "test", "qual_dev", "qual_test"]

    test = list(ds.records("test"))
    assert [r.id for r in test] == ["test_00000", "test_00001", "test_00002", "test_00003"]
    assert [r.image for r in test] == [
        root / "images" / "test_00000.jpg",
        root / "images" / "test_00001.png",
        root / "images" / "test_00002.jpg",
        root / "images" / "test_00003.jpg",
    ]
    by_id = {r["example_id"]: r for r in RECORDS}
    for record in test:
        assert record.split == "test"
        # exactly the stored text: newlines, double spaces, trailing spaces, non-ASCII
        assert record.texts == (Text(by_id[record.id]["description"], "description", "caption"),)
        assert record.description() == by_id[record.id]["description"]
    assert [r.id for r in ds.records()] == [r["example_id"] for r in RECORDS]
    assert [r.split for r in ds.records()] == [r["split"] for r in RECORDS]
    assert ds.skipped == []


def test_registered_name_and_load_dataset(root: Path) -> None:
    ds = load_dataset("docci", root=str(root))
    assert isinstance(ds, DOCCIDataset)
    assert len(list(ds.records("qual_dev"))) == 1


def test_records_open_no_photo(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader decoded a photo")

    monkeypatch.setattr(Image, "open", refuse)
    for path in (root / "images").iterdir():
        path.write_bytes(b"not an image")  # the loader does not care; the task checks photos
    assert len(list(DOCCIDataset(root).records())) == len(RECORDS)


def test_aar_split_reads_images_aar(tmp_path: Path) -> None:
    records = [*RECORDS[:2], rec("aar_test_04600", "An unannotated photo, described here.")]
    root = write_release(tmp_path / "d", records)
    (root / "images_aar").mkdir()
    ds = DOCCIDataset(root)
    assert ds.splits() == ["train", "test", "aar_test"]
    (record,) = ds.records("aar_test")
    assert record.image == root / "images_aar" / "aar_test_04600.jpg"


BAD_LINES: list[dict[str, Any] | str] = [
    RECORDS[1],
    '{"example_id": "test_00009", "split": "test", ',  # line 2: cut short
    {k: v for k, v in rec("test_00010", "x").items() if k != "description"},  # line 3
    rec("test_00011", "   \n "),  # line 4: empty text
    rec("test_00012", "Fine text.", "../escape.jpg"),  # line 5
    "",  # line 6: blank, passed over
    "[1, 2]",  # line 7: not an object
    rec("test_00000", "Listed twice."),  # line 8
    rec("train_00001", ""),  # line 9: another split's bad record, not read for `test`
    {"example_id": "test_00013", "image_file": "a.jpg", "description": "no split"},  # line 10
    RECORDS[2],  # line 11
]


def test_bad_lines_are_skipped_loudly_with_their_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_release(tmp_path / "d", BAD_LINES)
    ds = DOCCIDataset(root)
    assert [r.id for r in ds.records("test")] == ["test_00000", "test_00001"]
    got = [(s.image, s.reason) for s in ds.skipped]
    assert got == [
        ("line 2", f"{DESCRIPTIONS} line 2: invalid JSON (Expecting property name enclosed "
         "in double quotes at column 47)"),
        ("test_00010", f"{DESCRIPTIONS} line 3: missing field(s) description"),
        ("test_00011", f"{DESCRIPTIONS} line 4: empty description"),
        ("test_00012", f"{DESCRIPTIONS} line 5: image_file '../escape.jpg' is not a file name"),
        ("line 7", f"{DESCRIPTIONS} line 7: not a JSON object (found list)"),
        (
            "test_00000",
            f"{DESCRIPTIONS} line 8: example_id 'test_00000' repeats the one at {DESCRIPTIONS} "
            "line 1",
        ),
        ("test_00013", f"{DESCRIPTIONS} line 10: missing field(s) split"),
    ]  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("line 4: empty description" in w for w in warnings)
    # every split: the train record's empty description is reported too
    ds = DOCCIDataset(root)
    assert len(list(ds.records())) == 2
    assert ("train_00001", f"{DESCRIPTIONS} line 9: empty description") in [
        (s.image, s.reason) for s in ds.skipped
    ]


def test_strict_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    root = write_release(tmp_path / "d", BAD_LINES)
    with pytest.raises(BadRecordError, match="line 2: invalid JSON"):
        list(DOCCIDataset(root, strict=True).records("test"))


# --- whole-input errors -----------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        DOCCIDataset(tmp_path / "nowhere")
    message = one_line(err.value)
    assert f"DOCCI root {tmp_path / 'nowhere'} does not exist" in message
    assert f"densecap-eval download docci --root {tmp_path / 'nowhere'}" in message
    assert f"{tmp_path / 'nowhere' / 'images'}/" in message


def test_missing_descriptions_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        DOCCIDataset(tmp_path)
    message = one_line(err.value)
    assert message.startswith(f"{tmp_path / DESCRIPTIONS} not found; ")
    assert f"`densecap-eval download docci --root {tmp_path}`" in message
    assert "docci_images.tar.gz" in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the file is empty"),
        (json.dumps(RECORDS, indent=2).encode(), "line 1: invalid JSON"),
        (json.dumps(RECORDS).encode(), "line 1: not a JSON object (found list)"),
        (b"\x1f\x8b\x08\x00\xff\xfe binary", "line 1: not UTF-8 text"),
    ],
)
def test_not_json_lines(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / DESCRIPTIONS).write_bytes(content)
    with pytest.raises(DatasetError) as err:
        DOCCIDataset(tmp_path)
    message = one_line(err.value)
    assert message.startswith(f"{tmp_path / DESCRIPTIONS} is not JSON Lines")
    assert problem in message and "densecap-eval download docci" in message


def test_a_file_without_splits_is_refused(tmp_path: Path) -> None:
    (tmp_path / DESCRIPTIONS).write_text('{"example_id": "x", "cluster_id": 3}\n')
    with pytest.raises(DatasetError, match="no record with a `split`"):
        DOCCIDataset(tmp_path)


def test_unknown_split_and_missing_photo_folder(root: Path) -> None:
    ds = DOCCIDataset(root)
    with pytest.raises(DatasetError, match=r"unknown split 'val' .*known: train, test"):
        ds.records("val")
    for path in (root / "images").iterdir():
        path.unlink()
    (root / "images").rmdir()
    with pytest.raises(DatasetError) as err:
        ds.records("test")
    message = one_line(err.value)
    assert message.startswith(f"{root / 'images'} not found: the DOCCI photos are ")
    assert docci_module.IMAGES_URL in message


def test_fingerprint(root: Path) -> None:
    ds = DOCCIDataset(root)
    first = ds.fingerprint(["test"])
    assert first == DOCCIDataset(root).fingerprint(["test"]) == ds.fingerprint(["test", "test"])
    assert len(first) == 64
    assert ds.fingerprint(["train", "test"]) != first
    with (root / DESCRIPTIONS).open("a") as stream:
        stream.write(json.dumps(rec("test_00004", "More.")) + "\n")
    assert ds.fingerprint(["test"]) != first
    with pytest.raises(DatasetError, match="unknown split"):
        ds.fingerprint(["dev"])


# --- docci/retrieval end to end ---------------------------------------------------------------


def test_docci_retrieval_end_to_end(root: Path) -> None:
    # a test record whose photo is missing is skipped by the task and reported
    with (root / DESCRIPTIONS).open("a") as stream:
        stream.write(json.dumps(rec("test_00004", "A photo nobody unpacked.")) + "\n")
    scorer = FakeEmbeddingScorer(max_text_tokens=77)
    result = densecap_eval.evaluate(
        scorer, "docci/retrieval", data_root=root, n_boot=0, use_cache=False
    )
    metrics = result.metrics["docci/retrieval"]
    frame = result.examples
    ds = DOCCIDataset(root)
    test = [r for r in ds.records("test") if r.id != "test_00004"]
    assert frame["image"].tolist() == [r.id for r in test]
    assert frame["text"].tolist() == [r.description() for r in test]  # raw: unchanged
    assert frame["split"].unique().tolist() == ["test"]
    assert [s.image for s in result.skipped] == ["test_00004"]
    assert "not found" in result.skipped[0].reason

    i2t, t2i = direct_ranks(
        FakeEmbeddingScorer(max_text_tokens=77),
        [r.image for r in test],
        [r.description() or "" for r in test],
    )
    assert frame["rank_i2t"].tolist() == i2t
    assert frame["rank_t2i"].tolist() == t2i
    check_recalls(metrics, i2t, t2i)
    assert metrics["gallery"] == len(test)


# --- download ---------------------------------------------------------------------------------


def serve(served: Path, name: str, payload: bytes) -> tuple[str, str]:
    path = served / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return name, hashlib.sha256(payload).hexdigest()


def images_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _photo(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def test_download_descriptions_then_images(server: tuple[Path, str], tmp_path: Path) -> None:
    served, base = server
    source = write_release(tmp_path / "source")
    payload = (source / DESCRIPTIONS).read_bytes()
    name, sha = serve(served, DESCRIPTIONS, payload)
    root = tmp_path / "data"

    message = docci_module.download(root, url=f"{base}/{name}", sha256=sha, progress=False)
    assert (root / DESCRIPTIONS).read_bytes() == payload
    assert message.startswith(f"fetched {DESCRIPTIONS} into {root / DESCRIPTIONS}")
    todo = getattr(message, "todo", message)
    assert "7.1 GB" in todo and docci_module.IMAGES_URL in todo
    assert f"tar -xzf docci_images.tar.gz -C {root}" in todo
    assert sorted(p.name for p in root.iterdir()) == [DOWNLOADS_DIR, DESCRIPTIONS]

    photos = {f"images/{r['image_file']}": _photo(i) for i, r in enumerate(RECORDS)}
    name, sha = serve(served, "docci_images.tar.gz", images_tar(photos))
    message = docci_module.download(root, url=f"{base}/{name}", sha256=sha, progress=False)
    assert "extracted docci_images.tar.gz" in message
    assert f"{root} is ready for docci/retrieval" in message
    assert getattr(message, "todo", "") == ""
    assert (root / "images" / "test_00001.png").read_bytes() == photos["images/test_00001.png"]
    assert sorted(p.name for p in root.iterdir()) == [DOWNLOADS_DIR, DESCRIPTIONS, "images"]
    assert [r.id for r in DOCCIDataset(root).records("test")][:2] == ["test_00000", "test_00001"]


def test_bad_checksum_installs_nothing(server: tuple[Path, str], tmp_path: Path) -> None:
    served, base = server
    name, _ = serve(served, "docci_images.tar.gz", images_tar({"images/a.jpg": _photo(1)}))
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        docci_module.download(root, url=f"{base}/{name}", sha256="0" * 64, progress=False)
    assert "checksum mismatch" in one_line(err.value)
    assert not (root / "images").exists()
    assert [p.name for p in root.iterdir()] == [DOWNLOADS_DIR]  # no staging folder left
    assert not any((root / DOWNLOADS_DIR).iterdir())  # the bad download was deleted


def test_an_archive_without_images_is_refused(server: tuple[Path, str], tmp_path: Path) -> None:
    served, base = server
    name, sha = serve(served, "other.tar.gz", images_tar({"photos/a.jpg": _photo(1)}))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="holds no images/ or images_aar/ folder"):
        docci_module.download(root, url=f"{base}/{name}", sha256=sha, progress=False)
    assert sorted(p.name for p in root.iterdir()) == [DOWNLOADS_DIR]


def test_unsafe_archive_extracts_nothing(server: tuple[Path, str], tmp_path: Path) -> None:
    served, base = server
    name, sha = serve(served, "docci_images.tar.gz", images_tar({"images/../../evil.jpg": b"x"}))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="refusing to extract"):
        docci_module.download(root, url=f"{base}/{name}", sha256=sha, progress=False)
    assert not (tmp_path / "evil.jpg").exists() and not (root / "images").exists()


def test_no_pinned_checksum_means_sha256_is_required(tmp_path: Path) -> None:
    assert docci_module.SOURCES["descriptions"].sha256 is None
    with pytest.raises(DownloadError) as err:
        docci_module.download(tmp_path / "data", progress=False)  # refused before any network
    message = one_line(err.value)
    assert docci_module.DESCRIPTIONS_URL in message and "--sha256" in message
    assert not (tmp_path / "data").exists()
