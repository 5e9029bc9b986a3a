"""ShareGPT4V: the streaming JSON array reader, the loader on the released layouts (Long-CLIP's
data/ folder, LoTLIP's SA-1B root, FLAIR's variant), the three peer protocols end to end with the
fake scorer against a direct computation, the 1k limit, and the download from 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, load_region
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets import DOWNLOADERS, load_dataset
from densecap_eval.datasets.regions import Region
from densecap_eval.datasets.sharegpt4v.loader import (
    ANNOTATION_FILES,
    ShareGPT4VDataset,
    download,
    iter_json_array,
)

CAPTIONER = ANNOTATION_FILES["share-captioner"]
SAM10K = ANNOTATION_FILES["sam-10k"]


def _record(rid: Any, image: Any, caption: Any, *, human: str = "<image>\nDescribe it.") -> dict:
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": caption}],
    }


def _save_photo(path: Path, colour: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.new("L", (12, 10), colour[0]).save(path, quality=95)
    elif mode == "RGBA":
        Image.new("RGBA", (12, 10), (*colour, 100)).save(path)
    else:
        Image.new("RGB", (12, 10), colour).save(
            path, format="PNG" if path.suffix == ".png" else None
        )


def _colour(n: int) -> tuple[int, int, int]:
    return ((n * 53 + 7) % 256, (n * 97 + 40) % 256, (n * 151 + 80) % 256)


# Long-CLIP's data/ folder: the share-captioner JSON, photos at <root>/<image>.
GOOD_CAPTIONER = [
    _record("sa_545504", "sam/images/sa_545504.jpg",
            "The image shows a harbour.\n\nBoats are moored; one is 1.5 metres long.\nGulls fly."),
    _record("000000000009", "coco/train2017/000000000009.jpg",
            'A grayscale kitchen with a "quoted" sign, a [bracket] and {braces}.'),
    _record("000000010", "llava/llava_pretrain/images/00000/000000010.png",
            "An RGBA logo on a transparent background</s>with a caf\u00e9 name \U0001f600."),
    _record("sa_1", "sam/images/sa_1.jpg", "A mountain road.\nSnow on the peaks.\n"),
    _record("sa_2", "sam/images/sa_2.jpg", "A red kite over a beach. Children run."),
    _record("sa_3", "sam/images/sa_3.jpg", "A library reading room with long tables and lamps."),
    _record("sa_4", "sam/images/sa_4.jpg", "Fog over a lake at dawn; a heron stands still."),
]  # fmt: skip
BAD_CAPTIONER: list[tuple[int, Any, str, str]] = [
    # (position in the file, record, id in `skipped`, reason)
    (1, {"id": "x1", "conversations": GOOD_CAPTIONER[0]["conversations"]},
     "x1", "record 1 of share-captioner_coco_lcs_sam_1246k_1107.json has no image path"),
    (3, _record("x2", "sam/images/x2.jpg", "") | {"conversations": [{"from": "human", "value": "hi"}]},
     "sam/images/x2.jpg", "has no gpt turn (conversations[1])"),
    (5, _record("x3", "sam/images/x3.jpg", "text", human="q") | {
        "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]},
     "sam/images/x3.jpg", "conversations[1] is not the gpt turn"),
    (7, _record("x4", "sam/images/x4.jpg", "  \n "),
     "sam/images/x4.jpg", "the gpt turn's caption is empty"),
    (8, "not an object", "share-captioner_coco_lcs_sam_1246k_1107.json#8", "is not a JSON object"),
    (9, _record("x5", "../outside.jpg", "text"),
     "../outside.jpg", "is not a path inside the root"),
    (10, _record("x6", "sam/images/x6.jpg", 42),
     "sam/images/x6.jpg", "the gpt turn has no text value"),
]  # fmt: skip
MISSING = _record("sa_9", "sam/images/sa_9.jpg", "A photo that was never unpacked.")

# LoTLIP's share4v_sam_10k.json: photos at <SA-1B root>/sa_0000NN/images/sa_N.jpg.
GOOD_SAM = [
    _record("sa_545504", "sa_000048/images/sa_545504.jpg",
            "The image shows a harbour.\n\nBoats are moored; one is 1.5 metres long.\nGulls fly."),
    _record("sa_10", "sa_000001/images/sa_10.jpg", "A tram stop</s>with a kiosk. Rain. 2.0 mm"),
    _record("sa_11", "sa_000001/images/sa_11.jpg", "A vineyard in rows.\nA farmhouse beyond it."),
    _record("sa_12", "sa_000002/images/sa_12.jpg", "Flamingos wade in a shallow salt lake."),  # FLAIR
    _record("sa_13", "sa_000002/images/sa_13.jpg", "An old clock tower... at noon."),  # sam/images
    _record("sa_14", "sa_000003/images/sa_14.jpg", "Chess players in a park under plane trees."),
]  # fmt: skip


def _captioner_file() -> list[Any]:
    records: list[Any] = [*GOOD_CAPTIONER[:2], MISSING, *GOOD_CAPTIONER[2:]]
    for position, raw, _, _ in BAD_CAPTIONER:  # increasing: each lands at its position
        records.insert(position, raw)
    return records


def write_sharegpt4v(root: Path) -> Path:
    """Both annotation files (the captioner one pretty-printed with raw UTF-8, the SAM one
    compact and ASCII-escaped) and the photos they name, in their real layouts."""
    root.mkdir(parents=True, exist_ok=True)
    (root / CAPTIONER).write_text(
        json.dumps(_captioner_file(), indent=4, ensure_ascii=False), encoding="utf-8"
    )
    (root / SAM10K).write_text(json.dumps(GOOD_SAM), encoding="utf-8")
    for i, rec in enumerate(GOOD_CAPTIONER):
        image = rec["image"]
        mode = "L" if "coco" in image else "RGBA" if image.endswith(".png") else "RGB"
        _save_photo(root / image, _colour(i), mode)
    for i, rec in enumerate(GOOD_SAM):
        image = rec["image"]
        if rec["id"] == "sa_12":  # FLAIR's layout, without images/
            path = root / "sa_000002" / "sa_12.jpg"
        elif rec["id"] == "sa_13":  # only in the share-captioner layout
            path = root / "sam" / "images" / "sa_13.jpg"
        elif rec["id"] == "sa_545504":  # LoTLIP's: a different file than sam/images/sa_545504
            path = root / image
        else:
            path = root / image
        _save_photo(path, _colour(40 + i))
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_sharegpt4v(tmp_path / "data")


# --- the streaming reader ---------------------------------------------------------------------

TRICKY: list[Any] = [
    {"s": "a ] closing bracket, a [ and a } and a { inside a string"},
    {"s": 'escaped \\" quote and \\\\ backslash \\u0041 and a lone "'},
    {"u": "caf\u00e9 \u201cna\u00efve\u201d \u4e2d\u6587 \U0001f600 \u2028 line sep"},
    12345678901234567890,
    -1.5e-7,
    [1, [2, [3, {"k": [4, "]"]}]]],
    "",
    None,
    True,
    {"nested": {"deep": [{"x": "}]},{"}]}},
    3,
]


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["ascii", "utf8"])
@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
def test_streaming_reader_equals_json_load_at_every_chunk_size(
    tmp_path: Path, ensure_ascii: bool, indent: int | None
) -> None:
    path = tmp_path / "a.json"
    path.write_text(
        "\n " + json.dumps(TRICKY, indent=indent, ensure_ascii=ensure_ascii) + "\n",
        encoding="utf-8",
    )
    expected = json.loads(path.read_text(encoding="utf-8"))
    size = len(path.read_text(encoding="utf-8"))
    for chunk in [*range(1, 40), 64, 997, size, size + 1]:
        assert list(iter_json_array(path, chunk_chars=chunk)) == expected, chunk


def test_streaming_reader_accepts_a_bom_and_an_empty_array(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf[ ]")
    assert list(iter_json_array(path)) == []
    path.write_bytes(b'\xef\xbb\xbf[{"a": 1}]\n')
    assert list(iter_json_array(path, chunk_chars=2)) == [{"a": 1}]


def test_streaming_reader_stops_reading_when_the_caller_stops(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    head = json.dumps([{"i": i, "pad": "x" * 50} for i in range(5)])[:-1]
    path.write_text(head + ", {broken tail" + " " * 5000, encoding="utf-8")
    stream = iter_json_array(path, chunk_chars=64)
    assert [next(stream)["i"] for _ in range(3)] == [0, 1, 2]  # the broken tail is never read
    stream.close()
    with pytest.raises(DatasetError, match=r"a\.json is not a JSON array of records: invalid JSON"):
        list(iter_json_array(path, chunk_chars=64))


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "it does not start with '\\['"),
        ('{"a": 1}', "it does not start with '\\['"),
        ('[{"a": 1}, {"b": 2}', "the file ends inside the array at character 19"),
        ('[{"a": 1}, {"b": "cut', "invalid JSON \\(Unterminated string"),
        ('[{"a": 1} {"b": 2}]', "expected ',' or '\\]' but found '\\{' at character 10"),
        ('[{"a": 1},]', "invalid JSON"),
        ('[{"a": 1}] [2]', "data after the array"),
    ],
)
def test_streaming_reader_errors_are_one_line_with_the_file(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        list(iter_json_array(path, chunk_chars=3))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{path} is not a JSON array of records: ")
    assert re.search(problem, str(caught.value)), str(caught.value)


def test_streaming_reader_bounds_one_element(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[{"a": "' + "x" * 500, encoding="utf-8")
    with pytest.raises(DatasetError, match="an element longer than 100 characters"):
        list(iter_json_array(path, chunk_chars=16, max_value_chars=100))


def test_streaming_reader_names_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"a": "\xff"}]')
    with pytest.raises(DatasetError, match=r"a\.json is not UTF-8 text"):
        list(iter_json_array(path))


# --- the loader -------------------------------------------------------------------------------


def test_splits_are_the_annotation_files_present(root: Path) -> None:
    assert ShareGPT4VDataset(root).splits() == ["share-captioner", "sam-10k"]
    (root / CAPTIONER).unlink()
    ds = ShareGPT4VDataset(root)
    assert ds.splits() == ["sam-10k"]
    with pytest.raises(DatasetError) as caught:
        list(ds.records("share-captioner"))
    assert "share-captioner_coco_lcs_sam_1246k_1107.json not found" in str(caught.value)
    assert f"densecap-eval download sharegpt4v --root {root}" in str(caught.value)
    with pytest.raises(DatasetError, match="unknown split 'coco'"):
        list(ds.records("coco"))


def test_captioner_records_texts_and_photos(root: Path) -> None:
    ds = ShareGPT4VDataset(root)
    records = list(ds.records("share-captioner"))
    expected = [*GOOD_CAPTIONER[:2], MISSING, *GOOD_CAPTIONER[2:]]
    assert [r.id for r in records] == [e["image"] for e in expected]
    for record, raw in zip(records, expected, strict=True):
        assert record.image == root / raw["image"]  # Long-CLIP: data4v_root + image
        assert record.split == "share-captioner"
        (text,) = record.texts
        assert (text.role, text.kind) == ("description", "caption")
        assert text.text == raw["conversations"][1]["value"]  # unchanged
        assert record.meta["id"] == raw["id"] and record.meta["file"] == CAPTIONER
    positions = [r.meta["index"] for r in records]
    assert positions == sorted(positions) and records[0].meta["index"] == 0


def test_bad_records_are_named_counted_and_skipped(root: Path) -> None:
    ds = ShareGPT4VDataset(root)
    assert len(list(ds.records("share-captioner"))) == len(GOOD_CAPTIONER) + 1
    assert [s.image for s in ds.skipped] == [image for _, _, image, _ in BAD_CAPTIONER]
    for skipped, (_, _, _, reason) in zip(ds.skipped, BAD_CAPTIONER, strict=True):
        assert reason in skipped.reason
        assert re.match(rf"record \d+ of {re.escape(CAPTIONER)}", skipped.reason)


def test_strict_stops_at_the_first_bad_record(root: Path) -> None:
    ds = ShareGPT4VDataset(root, strict=True)
    with pytest.raises(BadRecordError, match=r"x1: record 1 of .* has no image path"):
        list(ds.records("share-captioner"))


def test_sam10k_photos_in_lotlip_flair_and_captioner_layouts(root: Path) -> None:
    ds = ShareGPT4VDataset(root)
    paths = {r.id: r.image for r in ds.records("sam-10k")}
    assert paths == {
        "sa_000048/images/sa_545504.jpg": root / "sa_000048/images/sa_545504.jpg",
        "sa_000001/images/sa_10.jpg": root / "sa_000001/images/sa_10.jpg",
        "sa_000001/images/sa_11.jpg": root / "sa_000001/images/sa_11.jpg",
        "sa_000002/images/sa_12.jpg": root / "sa_000002/sa_12.jpg",
        "sa_000002/images/sa_13.jpg": root / "sam/images/sa_13.jpg",
        "sa_000003/images/sa_14.jpg": root / "sa_000003/images/sa_14.jpg",
    }
    (root / "sa_000001/images/sa_10.jpg").unlink()  # nowhere: LoTLIP's path, for the message
    missing = next(r for r in ds.records("sam-10k") if r.id.endswith("sa_10.jpg"))
    assert missing.image == root / "sa_000001/images/sa_10.jpg"


def test_every_split_when_none_and_the_data_subfolder(tmp_path: Path) -> None:
    project = tmp_path / "ShareGPT4V"
    write_sharegpt4v(project / "data")
    ds = load_dataset("sharegpt4v", root=str(project))
    assert ds.base == project / "data"
    splits = [r.split for r in ds.records()]
    assert splits == ["share-captioner"] * (len(GOOD_CAPTIONER) + 1) + ["sam-10k"] * len(GOOD_SAM)


def test_fingerprint(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from densecap_eval.datasets.sharegpt4v import loader as sharegpt4v

    ds = ShareGPT4VDataset(root)
    both = ds.fingerprint(["sam-10k", "share-captioner"])
    assert both == ds.fingerprint(["share-captioner", "sam-10k", "sam-10k"])
    assert both != ds.fingerprint(["sam-10k"])
    sam = ds.fingerprint(["sam-10k"])
    (root / "sa_000001/images/sa_10.jpg").unlink()  # photos are not fingerprinted
    assert ds.fingerprint(["sam-10k"]) == sam
    (root / SAM10K).write_text(json.dumps(GOOD_SAM[:-1]), encoding="utf-8")
    assert ds.fingerprint(["sam-10k"]) != sam
    # A large file: size, head and tail only.
    monkeypatch.setattr(sharegpt4v, "_FULL_HASH_BYTES", 100)
    monkeypatch.setattr(sharegpt4v, "_HEAD_BYTES", 40)
    monkeypatch.setattr(sharegpt4v, "_TAIL_BYTES", 10)
    before = ds.fingerprint(["share-captioner"])
    data = bytearray((root / CAPTIONER).read_bytes())
    middle = len(data) // 2
    data[middle] = ord("Q") if data[middle] != ord("Q") else ord("R")
    (root / CAPTIONER).write_bytes(bytes(data))
    assert ds.fingerprint(["share-captioner"]) == before  # documented blind spot
    data[5] = ord("Q") if data[5] != ord("Q") else ord("R")
    (root / CAPTIONER).write_bytes(bytes(data))
    assert ds.fingerprint(["share-captioner"]) != before


@pytest.mark.parametrize("layout", ["absent", "empty", "other-json"])
def test_whole_input_problems_are_one_line_with_the_fix(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "nowhere"
    if layout != "absent":
        root.mkdir()
    if layout == "other-json":
        (root / "sharegpt4v_instruct_gpt4-vision_cap100k.json").write_text("[]")
    with pytest.raises(DatasetError) as caught:
        ShareGPT4VDataset(root)
    message = str(caught.value)
    assert "\n" not in message
    assert f"`densecap-eval download sharegpt4v --root {root} --sha256 HEX`" in message
    if layout == "absent":
        assert "does not exist or is not a folder" in message
    else:
        assert f"no ShareGPT4V annotation file in {root}" in message
        assert CAPTIONER in message and SAM10K in message


def test_a_corrupt_file_is_a_dataset_error_naming_it(root: Path) -> None:
    (root / SAM10K).write_text(json.dumps(GOOD_SAM)[:-40], encoding="utf-8")
    ds = ShareGPT4VDataset(root)
    with pytest.raises(DatasetError, match=rf"{re.escape(str(root / SAM10K))} is not a JSON"):
        list(ds.records("sam-10k"))


# --- the three protocols end to end -----------------------------------------------------------


def _lotlip(text: str) -> str:
    """LoTLIP's split_caption + '. '.join (dataloaders/share4v.py)."""
    return ". ".join(p.strip() for p in re.split(r"\n|</s>|[.]", text) if len(p.strip()) != 0)


RULES = {
    "sharegpt4v/retrieval-1k": lambda text: text.replace(
        "\n", " "
    ),  # Long-CLIP train/sharegpt4v.py
    "sharegpt4v/retrieval-lotlip-1k": _lotlip,
    "sharegpt4v/retrieval-lotlip-10k": _lotlip,
}


def _direct(images: list[Path], texts: list[str]) -> tuple[list[int], list[int]]:
    """Pessimistic ranks from the fake's own score matrix (rows: images, columns: texts)."""
    scorer = FakeEmbeddingScorer(max_text_tokens=77)
    s = scorer.score([load_region(Region(str(p))) for p in images], texts).numpy()
    n = len(texts)
    i2t = [int((s[i] >= s[i, i]).sum()) for i in range(n)]
    t2i = [int((s[:, i] >= s[i, i]).sum()) for i in range(n)]
    return i2t, t2i


def _evaluate(task: str, root: Path):
    return densecap_eval.evaluate(
        FakeEmbeddingScorer(max_text_tokens=77),
        task,
        data_root=root,
        n_boot=0,
        use_cache=False,
        progress=False,
    )


@pytest.mark.parametrize("task", list(RULES))
def test_evaluate_matches_a_direct_computation(root: Path, task: str) -> None:
    result = _evaluate(task, root)
    metrics = result.metrics[task]
    if task == "sharegpt4v/retrieval-1k":
        kept = GOOD_CAPTIONER  # bad records skipped by the loader, MISSING by the task
        # the task's (a missing photo) and the loader's (bad records) skips both reach the result
        skipped = [s.image for s in result.skipped]
        assert skipped[0] == MISSING["image"] and len(skipped) == 1 + len(BAD_CAPTIONER)
        assert "not found" in result.skipped[0].reason
        split = "share-captioner"
    else:
        kept, split = GOOD_SAM, "sam-10k"
    ds = ShareGPT4VDataset(root)
    photos = {r.id: r.image for r in ds.records(split)}
    images = [photos[r["image"]] for r in kept]
    texts = [RULES[task](r["conversations"][1]["value"]) for r in kept]
    frame = result.examples
    assert metrics["n"] == metrics["gallery"] == len(kept)
    assert frame["image"].tolist() == [r["image"] for r in kept]
    assert frame["text"].tolist() == texts
    if task == "sharegpt4v/retrieval-1k":
        assert texts[0] == (
            "The image shows a harbour.  Boats are moored; one is 1.5 metres long. Gulls fly."
        )
    else:
        assert texts[0] == (
            "The image shows a harbour. Boats are moored; one is 1. 5 metres long. Gulls fly"
        )
        assert texts[1] == "A tram stop. with a kiosk. Rain. 2. 0 mm"
    i2t, t2i = _direct(images, texts)
    assert frame["rank_i2t"].tolist() == i2t
    assert frame["rank_t2i"].tolist() == t2i
    for k in (1, 5, 10):
        assert metrics[f"i2t_r{k}"] == pytest.approx(np.mean([r <= k for r in i2t]))
        assert metrics[f"t2i_r{k}"] == pytest.approx(np.mean([r <= k for r in t2i]))
    assert max(i2t) > 1 and max(t2i) > 1  # not a trivial gallery
    assert result.config["dataset_fingerprint"] == ds.fingerprint([split])


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,001 records in each file (one more than the 1k tasks keep), tiny 2x2 photos."""
    root = tmp_path_factory.mktemp("big")
    captioner, sam = [], []
    for i in range(1001):
        colour = (i % 256, (i // 256) * 60 + 10, (i * 37) % 256)
        captioner.append(
            _record(
                f"sa_{i}", f"sam/images/sa_{i}.jpg", f"Photo {i} of a scene.\nIt is {i}.5 m wide."
            )
        )
        sam.append(
            _record(
                f"sa_{i}",
                f"sa_000007/images/sa_{i}.jpg",
                f"Photo {i} seen by SAM.\nIt is {i}.5 m wide.",
            )
        )
        for path in (
            root / "sam/images" / f"sa_{i}.jpg",
            root / "sa_000007/images" / f"sa_{i}.jpg",
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (2, 2), colour).save(path, format="PNG")  # PNG bytes, .jpg name
    (root / CAPTIONER).write_text(json.dumps(captioner, indent=1), encoding="utf-8")
    (root / SAM10K).write_text(json.dumps(sam), encoding="utf-8")
    return root  # fmt: skip


@pytest.mark.parametrize(
    "task, n",
    [
        ("sharegpt4v/retrieval-1k", 1000),
        ("sharegpt4v/retrieval-lotlip-1k", 1000),
        ("sharegpt4v/retrieval-lotlip-10k", 1001),
    ],
)
def test_the_first_records_up_to_the_limit(big_root: Path, task: str, n: int) -> None:
    result = _evaluate(task, big_root)
    frame = result.examples
    assert result.metrics[task]["n"] == n and not result.skipped
    folder = "sam/images" if task.endswith("-1k") and "lotlip" not in task else "sa_000007/images"
    assert frame["image"].tolist() == [f"{folder}/sa_{i}.jpg" for i in range(n)]
    assert frame["text"].tolist()[-1] == RULES[task](
        f"Photo {n - 1} {'of a scene' if 'lotlip' not in task else 'seen by SAM'}."
        f"\nIt is {n - 1}.5 m wide."
    )


def test_the_1k_task_reads_only_the_head_of_the_file(big_root: Path, tmp_path: Path) -> None:
    """A corrupt tail after the first records is never read by the 1k task (it pulls one
    record the task needs, so a tail after the 1,001st record is never reached)."""
    root = tmp_path / "cut"
    root.mkdir()
    (root / "sam").symlink_to(big_root / "sam")
    text = (big_root / CAPTIONER).read_text(encoding="utf-8")
    cut = text.rindex("]")  # after the 1,001st record
    (root / CAPTIONER).write_text(text[:cut] + ",\0garbage" * 100000, encoding="utf-8")
    assert (
        _evaluate("sharegpt4v/retrieval-1k", root).metrics["sharegpt4v/retrieval-1k"]["n"] == 1000
    )
    with pytest.raises(DatasetError, match="is not a JSON array of records"):
        list(ShareGPT4VDataset(root).records("share-captioner"))


def test_a_bad_record_after_the_limit_is_never_read(big_root: Path, tmp_path: Path) -> None:
    from densecap_eval.tasks import get_task

    root = tmp_path / "bad-tail"
    root.mkdir()
    records = json.loads((big_root / CAPTIONER).read_text(encoding="utf-8"))
    records[1000] = {"id": "no image"}
    (root / CAPTIONER).write_text(json.dumps(records), encoding="utf-8")
    (root / "sam").symlink_to(big_root / "sam")
    ds = ShareGPT4VDataset(root, strict=True)
    assert len(get_task("sharegpt4v/retrieval-1k").prepare(ds).images) == 1000


# --- download ---------------------------------------------------------------------------------


def _serve(served: Path, url: str, name: str, payload: bytes) -> tuple[str, str]:
    (served / name).write_bytes(payload)
    return f"{url}/{name}", hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("split", ["share-captioner", "sam-10k"])
def test_download_saves_the_json_and_names_the_photo_steps(
    server: tuple[Path, str], tmp_path: Path, split: str
) -> None:
    name = ANNOTATION_FILES[split]
    payload = json.dumps(GOOD_SAM if split == "sam-10k" else GOOD_CAPTIONER).encode()
    url, sha = _serve(*server, name, payload)
    root = tmp_path / "data"
    assert DOWNLOADERS.get("sharegpt4v") is download

    message = download(root, url=url + "?download=true", sha256=sha, progress=False)

    assert (root / name).read_bytes() == payload
    assert message.done == f"{name} saved to {root / name}"  # stdout; the photo steps: stderr
    assert message == f"{message.done}\n{message.todo}"
    message = message.todo
    assert "https://ai.meta.com/datasets/segment-anything-downloads/" in message
    if split == "sam-10k":
        assert f"tar -xf sa_000048.tar -C {root}/sa_000048/images" in message
    else:
        assert f"{root}/sam/images/" in message and f"{root}/coco/" in message
        assert "train2017.zip" in message and f"{root}/llava/llava_pretrain/images/" in message
    assert ShareGPT4VDataset(root).splits() == [split]


def test_download_with_a_bad_checksum_leaves_nothing(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    url, _ = _serve(*server, SAM10K, json.dumps(GOOD_SAM).encode())
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(root, url=url, sha256="0" * 64, progress=False)
    assert not root.exists() or not any(root.iterdir())


def test_download_needs_a_sha256_and_a_known_file(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"no pinned sha256 .* pass --sha256"):
        download(tmp_path, progress=False)
    with pytest.raises(DownloadError, match="does not name a ShareGPT4V annotation file"):
        download(tmp_path, url="http://127.0.0.1:1/other.json", sha256="0" * 64, progress=False)
    assert not any(tmp_path.iterdir())


def test_cli_download_sharegpt4v_prints_the_photo_steps_on_stderr(
    server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from densecap_eval.cli.app import main

    url, sha = _serve(*server, SAM10K, json.dumps(GOOD_SAM).encode())
    root = tmp_path / "data"
    args = ["download", "sharegpt4v", "--root", str(root), "--url", url, "--sha256", sha]
    assert main([*args, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert f"{SAM10K} saved to {root / SAM10K}" in out
    assert "segment-anything-downloads" in err and "segment-anything-downloads" not in out
