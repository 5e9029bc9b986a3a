"""Reading ELEVATER's release layout offline: order, labels, photos, and bad input
(a whole dataset unusable -> one DatasetError; one bad record -> skipped, named, counted)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from densecap_eval.core.errors import BadRecordError, DatasetError
from densecap_eval.datasets.elevater import catalog
from densecap_eval.datasets.elevater.download import download
from densecap_eval.datasets.elevater.loader import ElevaterDataset
from densecap_eval.datasets.elevater.synth import write_dataset


def _folder(root: Path, key: str) -> Path:
    return root / catalog.spec(key).root_folder


def _open(root: Path, tmp: Path, *, strict: bool = False) -> ElevaterDataset:
    return ElevaterDataset(root, strict=strict, cache_dir=tmp / "cache")


def test_iris_order_labels_and_photos(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dataset(root, "cifar10", images=6)
    ds = _open(root, tmp_path)
    assert ds.available() == ["cifar10"]
    samples = ds.samples("cifar10")
    lines = (_folder(root, "cifar10") / "test.txt").read_text().splitlines()
    assert [s.ref for s in samples] == [ln.rsplit(" ", 1)[0] for ln in lines]
    assert [s.labels for s in samples] == [(int(ln.rsplit(" ", 1)[1]),) for ln in lines]
    # Photos 0 and 5 are RGB PNGs with nothing to rotate: kept as stored. L, P, RGBA and the
    # EXIF-rotated JPEG are decoded as ELEVATER decodes them and written as RGB PNGs.
    assert [s.photo.suffix for s in samples] == [".stored", ".png", ".png", ".png", ".png",
                                                  ".stored"]  # fmt: skip
    with zipfile.ZipFile(_folder(root, "cifar10") / "val.zip") as zf:
        assert samples[0].photo.read_bytes() == zf.read(samples[0].ref.split("@", 1)[1])
    for s in samples:
        with Image.open(s.photo) as img:
            assert img.mode == "RGB"
    # photo 4 is a 64x48 JPEG whose EXIF says "rotate 90 degrees": ELEVATER sees it 48x64
    assert samples[4].ref.endswith(".jpg")
    with Image.open(samples[4].photo) as img:
        assert img.size == (48, 64)
    records = list(ds.records())
    assert [r.meta["labels"] for r in records] == [s.labels for s in samples]
    assert len(ds.fingerprint(["cifar10"])) == 64


def test_coco_sorted_by_id_and_kitti_squashed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dataset(root, "kitti-distance", images=6)
    manifest = json.loads((_folder(root, "kitti-distance") / "test_meta.json").read_text())
    ids = [i["id"] for i in manifest["images"]]
    assert ids != sorted(ids)  # written out of order on purpose
    by_id = sorted(manifest["images"], key=lambda i: i["id"])
    samples = _open(root, tmp_path).samples("kitti-distance")
    assert [s.ref for s in samples] == [f"{i['zip_file']}@{i['file_name']}" for i in by_id]
    for s in samples:  # no centre crop: resized to ELEVATER's 224 square
        with Image.open(s.photo) as img:
            assert img.size == (224, 224)


def test_voc_multilabel(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dataset(root, "voc2007classification", images=6)
    samples = _open(root, tmp_path).samples("voc2007classification")
    lines = (_folder(root, "voc2007classification") / "test_ic.txt").read_text().splitlines()
    written = [tuple(int(x) for x in ln.rsplit(" ", 1)[1].split(",")) for ln in lines]
    assert [s.labels for s in samples] == written
    assert any(len(labels) > 1 for labels in written)  # several labels on one image
    assert all(0 not in s.labels for s in samples)  # class 0 has no positive


# -- bad input ------------------------------------------------------------------------------


def _rewrite_index(key: str, edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / catalog.spec(key).test_index
        path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")

    return apply


def _line0(new: str) -> Callable[[list[str]], list[str]]:
    return lambda lines: [new, *lines[1:]]


def _add_member(name: str, data: bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        with zipfile.ZipFile(folder / "val.zip", "a") as zf:
            zf.writestr(name, data)
        _rewrite_index("cifar10", _line0(f"val.zip@{name} 1"))(folder)

    return apply


def _coco(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "test_meta.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))

    return apply


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


# (key, what is wrong, the edit, the words the reason holds) -- one bad record each.
BAD_RECORDS = [
    ("cifar10", "no space", _rewrite_index("cifar10", _line0("val.zip@test/000.png")), "not '<zip>"),
    ("cifar10", "label not int", _rewrite_index("cifar10", _line0("val.zip@test/000.png x")),
     "not integers"),
    ("cifar10", "label too big", _rewrite_index("cifar10", _line0("val.zip@test/000.png 10")),
     "outside 0..9"),
    ("cifar10", "negative label", _rewrite_index("cifar10", _line0("val.zip@test/000.png -1")),
     "outside"),
    ("cifar10", "two labels", _rewrite_index("cifar10", _line0("val.zip@test/000.png 1,2")),
     "single-label"),
    ("cifar10", "no @", _rewrite_index("cifar10", _line0("val.zip/test/000.png 1")), "<zip>@"),
    ("cifar10", "climbs out", _rewrite_index("cifar10", _line0("val.zip@../x.png 1")), ".."),
    ("cifar10", "absolute zip", _rewrite_index("cifar10", _line0("/etc/val.zip@a.png 1")),
     "absolute"),
    ("cifar10", "repeated line", _rewrite_index("cifar10", lambda ls: [ls[0], *ls]), "repeats"),
    ("cifar10", "member missing", _rewrite_index("cifar10", _line0("val.zip@test/nope.png 1")),
     "is not in"),
    ("cifar10", "not an image", _add_member("test/bad.png", b"hello"), "not an image"),
    ("cifar10", "empty photo", _add_member("test/empty.png", b""), "is empty"),
    ("cifar10", "truncated photo", _add_member("test/cut.png", _png_bytes()[:400]), "truncated"),
    ("kitti-distance", "id not int", _coco(lambda d: d["images"][0].update(id="a")),
     "not an integer"),
    ("kitti-distance", "id repeated",
     _coco(lambda d: d["images"][1].update(id=d["images"][0]["id"])), "repeats"),
    ("kitti-distance", "no annotation",
     _coco(lambda d: d.update(annotations=d["annotations"][1:])), "no annotation"),
    ("kitti-distance", "unknown category",
     _coco(lambda d: d["annotations"][0].update(category_id=99)), "category_id"),
    ("kitti-distance", "file_name missing",
     _coco(lambda d: d["images"][0].pop("file_name")), "file_name"),
    ("kitti-distance", "image not an object", _coco(lambda d: d["images"].append(3)), "object"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "what", "edit", "reason"), BAD_RECORDS,
                         ids=[c[1] for c in BAD_RECORDS])  # fmt: skip
def test_one_bad_record_is_skipped_and_named(
    tmp_path: Path, key: str, what: str, edit: Callable[[Path], None], reason: str
) -> None:
    root = tmp_path / "data"
    write_dataset(root, key, images=6)
    edit(_folder(root, key))
    ds = _open(root, tmp_path)
    samples = ds.samples(key)
    assert ds.skipped, what
    assert any(reason in item.reason for item in ds.skipped), [i.reason for i in ds.skipped]
    assert len(samples) >= 4  # the good records are all still there
    with pytest.raises(BadRecordError):  # --strict: the first bad record stops the run
        _open(root, tmp_path / "strict", strict=True).samples(key)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


BAD_RELEASES = [
    ("cifar10", _remove("test.txt"), "test.txt is missing"),
    ("cifar10", _remove("val.zip"), "val.zip is missing"),
    ("cifar10", _remove("labels.txt"), "labels.txt is missing"),
    ("cifar10", _write("labels.txt", "a\nb\n"), "lists 2 classes"),
    ("cifar10", _write("val.zip", "<html>not a zip</html>"), "not a readable zip"),
    ("cifar10", lambda f: (f / "test.txt").write_bytes(b"\xff\xfe\x00bad"), "not UTF-8"),
    ("kitti-distance", _write("test_meta.json", "{\"images\": ["), "not valid JSON"),
    ("kitti-distance", _write("test_meta.json", "[]"), "not a COCO manifest object"),
    ("kitti-distance", _write("test_meta.json", "{\"images\": []}"), "no 'annotations' list"),
    ("kitti-distance", _coco(lambda d: d.update(categories=d["categories"][:2])),
     "has 2 categories"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "edit", "message"), BAD_RELEASES,
                         ids=[c[2] for c in BAD_RELEASES])  # fmt: skip
def test_an_unusable_release_is_one_error(
    tmp_path: Path, key: str, edit: Callable[[Path], None], message: str
) -> None:
    root = tmp_path / "data"
    write_dataset(root, key, images=4)
    edit(_folder(root, key))
    with pytest.raises(DatasetError, match=message):
        _open(root, tmp_path).samples(key)


def test_download_says_what_is_there_and_what_is_missing(tmp_path: Path) -> None:
    write_dataset(tmp_path, "mnist", images=2)
    message = download(tmp_path)
    assert message.done.startswith(f"ELEVATER under {tmp_path}: 1 of 20 test splits present")
    assert "cifar10: classification/cifar_10_20211007/ needs test.txt, val.zip, labels.txt" in (
        message.todo
    )
    assert "mnist:" not in message.todo


def test_download_one_dataset_says_exactly_how(tmp_path: Path) -> None:
    from densecap_eval.core.errors import DownloadError

    write_dataset(tmp_path, "mnist", images=2)
    here = download(tmp_path, part="mnist")
    assert "present (test.txt, val.zip, labels.txt)" in here.done and here.todo == ""
    assert f"wds/mnist copy (its own split, not ELEVATER's) at {tmp_path / 'wds_mnist'}/" in (
        here.done
    )
    assert "git clone https://huggingface.co/datasets/clip-benchmark/wds_mnist" in here.done
    gone = download(tmp_path, part="voc2007classification")
    assert "missing test_ic.txt, test.zip, labels.txt" in gone.done
    assert "wds/voc2007_multilabel copy" in gone.done
    assert f"python download_datasets.py --ds voc-2007-classification --output_dir {tmp_path}" in (
        gone.todo
    )
    assert "pip install vision-datasets==0.2.17" in gone.todo
    assert f"{tmp_path / 'classification/voc2007_20211007'}/" in gone.todo
    assert "CLIP_benchmark has no copy" in download(tmp_path, part="hateful-memes").done
    with pytest.raises(DownloadError, match="no ELEVATER dataset 'nope'; known: cifar10"):
        download(tmp_path, part="nope")


def test_download_cli_takes_name_slash_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from densecap_eval.cli.app import main

    assert main(["download", "elevater/kitti-distance", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "elevater/kitti-distance (ELEVATER's kitti-distance: coco layout" in out.out
    assert "--ds kitti-distance --output_dir" in out.err
    assert main(["download", "elevater", "--root", str(tmp_path)]) == 0
    assert "0 of 20 test splits present" in capsys.readouterr().out
    assert main(["download", "dci/x", "--root", str(tmp_path)]) != 0
    assert "dataset 'dci' has no parts" in capsys.readouterr().err


def test_inspect_says_what_is_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from densecap_eval.cli.app import main

    write_dataset(tmp_path / "data", "mnist", images=3)
    write_dataset(tmp_path / "data", "kitti-distance", images=2)
    assert main(["inspect", "elevater", "--root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "ELEVATER datasets under" in out and "2 of 20 present" in out
    assert "kitti-distance: 2 photos, 4 classes, accuracy" in out
    assert "mnist: 3 photos, 10 classes, accuracy" in out
    assert "absent: cifar10, cifar100," in out and "download elevater/<key>" in out
    assert main(["inspect", "elevater", "--root", str(tmp_path / "data"), "--format", "json"]) == 0
    about = json.loads(capsys.readouterr().out)["about"]
    assert about["available"] == ["kitti-distance", "mnist"]
    assert about["datasets"]["mnist"]["images"] == 3 and len(about["absent"]) == 18
