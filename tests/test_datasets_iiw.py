"""The IIW loader on the GitHub layout (datasets/<subset>/data.jsonl, keys sorted, ASCII-escaped)
and FLAIR's (<subset>/data.jsonl), photos in docci/, docci_aar/, dci/: the 612-pool order, bad
lines, whole-input errors, iiw/retrieval end to end (LoTLIP split/rejoin) and `download`."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_scorers import FakeEmbeddingScorer
from test_datasets_docci import (
    check_recalls,
    direct_ranks,
    one_line,
    serve,
    write_photo,
)

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets import load_dataset
from densecap_eval.datasets.download import DOWNLOADS_DIR
from densecap_eval.datasets.iiw import loader as iiw_module
from densecap_eval.datasets.iiw.loader import SUBSETS, IIWDataset
from densecap_eval.datasets.records import Text
from densecap_eval.tasks.retrieval import lotlip_rejoin

METRICS = {
    f"metrics/{m}": "IIW is marginally better"
    for m in ("Comprehensiveness", "First few line(s) as tldr", "Hallucination", "Human Like")
} | {"metrics/Specificity": "Neutral"}

PARAGRAPHS = (
    "A clean white toilet and hotel towels in a vertically oriented indoor shot.\n\n"
    "Three towels hang from a chrome rack. Two rolls of paper are on the right wall."
)
DECIMAL = "A road sign reads 1.5 km to the caf\u00e9. The sky is pale blue."

# Per subset, the records as the release stores them (field names of each subset's file).
DATA: dict[str, list[dict[str, Any]]] = {
    "DOCCI_Test": [
        {"DOCCI": "A white toilet in an alcove.", "IIW": PARAGRAPHS, "image": "test_00731"}
        | METRICS,
        {"DOCCI": "A bridge.", "IIW": DECIMAL, "image": "test_01294"} | METRICS,
    ],
    "IIW-400": [
        {
            "IIW": "A close-up outdoor shot shows a blue globe flower against a blue sky.",
            "image/key": "aar_test_04600",
            "objects": [
                {
                    "description": "A spiky flower head.",
                    "label": "flower",
                    "normalized_coords": ["1", "0", "998", "999"],
                }
            ],
        },
        {
            "IIW": "Green glass bottles stand on a wooden shelf in warm light.",
            "IIW-P5B": "Bottles on a shelf.",
            "iiw-human-sxs-gpt4v": {"metrics/Hallucination": "Neutral"},
            "iiw-human-sxs-iiw-p5b": {"metrics/Hallucination": "Neutral"},
            "image/key": "aar_test_04601",
            "objects": [],
        },
        {
            "IIW": "An orange cat sleeps on a red sofa.",
            "image/key": "aar_test_04602",
            "objects": [],
        },
    ],
    "DCI_Test": [
        {
            "IIW": " A horizontally-oriented eye level image shows a damaged balcony.\n\n"
            "Torn fabric hangs from metal grates. ",
            "ex_id": "113029-data.json",
            "image": "sa_1545038.jpg",
        }
        | METRICS,
        {
            "IIW": "A market stall of fruit: 3.25 kg of plums.",
            "ex_id": "2-data.json",
            "image": "sa_1545118.jpg",
        }
        | METRICS,
    ],
}
PHOTO_DIR = {"DOCCI_Test": "docci", "IIW-400": "docci_aar", "DCI_Test": "dci"}


def name_of(raw: dict[str, Any]) -> str:
    name = raw.get("image") or raw["image/key"]
    return name if name.endswith(".jpg") else f"{name}.jpg"


def jsonl(records: Sequence[dict[str, Any] | str]) -> str:
    """The release's style: keys sorted, ASCII-escaped, every line newline-terminated."""
    return "".join(
        (r if isinstance(r, str) else json.dumps(r, sort_keys=True)) + "\n" for r in records
    )


def write_iiw(
    root: Path, data: dict[str, list[Any]] | None = None, *, layout: str = "github"
) -> Path:
    """Annotations in ``layout`` (``github``: datasets/<subset>/, ``flat``: <subset>/) and a
    photo for each well-formed record (an RGBA PNG and a grayscale JPEG, both named .jpg)."""
    data = DATA if data is None else data
    for subset in SUBSETS:
        base = root / "datasets" / subset if layout == "github" else root / subset
        base.mkdir(parents=True, exist_ok=True)
        (base / "data.jsonl").write_text(jsonl(data.get(subset, [])), encoding="ascii")
        (root / PHOTO_DIR[subset]).mkdir(parents=True, exist_ok=True)
        for i, raw in enumerate(data.get(subset, [])):
            if isinstance(raw, str) or not ("image" in raw or "image/key" in raw):
                continue
            path = root / PHOTO_DIR[subset] / name_of(raw)
            seed = 100 * SUBSETS.index(subset) + i
            if name_of(raw) == "aar_test_04601.jpg":
                write_photo(path, seed, mode="RGBA", fmt="PNG")  # PNG bytes under a .jpg name
            elif name_of(raw) == "sa_1545118.jpg":
                write_photo(path, seed, mode="L")
            else:
                write_photo(path, seed)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_iiw(tmp_path / "iiw")


def pool() -> list[tuple[str, str, str]]:
    """(id, photo folder / name, text) of the written pool, in pool order."""
    return [
        (f"{s}/{name_of(r)}", f"{PHOTO_DIR[s]}/{name_of(r)}", r["IIW"])
        for s in SUBSETS
        for r in DATA[s]
    ]


# --- records ----------------------------------------------------------------------------------


def test_pool_in_order_with_stored_texts(root: Path) -> None:
    ds = IIWDataset(root)
    assert ds.name == "iiw" and ds.root == root
    assert ds.splits() == ["DOCCI_Test", "IIW-400", "DCI_Test"]
    records = list(ds.records())
    assert [(r.id, r.image, r.description()) for r in records] == [
        (i, root / p, t) for i, p, t in pool()
    ]
    assert [r.id for r in records[:3]] == [
        "DOCCI_Test/test_00731.jpg",
        "DOCCI_Test/test_01294.jpg",
        "IIW-400/aar_test_04600.jpg",
    ]
    assert records[-1].image == root / "dci" / "sa_1545118.jpg"  # ".jpg" not doubled
    assert records[0].texts == (Text(PARAGRAPHS, "description", "caption"),)
    assert "\n\n" in records[0].texts[0].text  # exactly as stored, not split/rejoined
    assert records[-2].description() == DATA["DCI_Test"][0]["IIW"]  # surrounding spaces kept
    assert [r.split for r in records] == [s for s in SUBSETS for _ in DATA[s]]
    assert [r.id for r in ds.records("IIW-400")] == [i for i, _, _ in pool()[2:5]]
    assert ds.skipped == []
    assert isinstance(load_dataset("iiw", root=str(root)), IIWDataset)


def test_photo_name_rule_is_lotlips() -> None:
    photo_name = iiw_module.photo_name
    assert photo_name({"image": "test_00731"}) == "test_00731.jpg"
    assert photo_name({"image": "sa_1.jpg", "image/key": "other"}) == "sa_1.jpg"  # image first
    assert photo_name({"image/key": "aar_test_04600"}) == "aar_test_04600.jpg"
    assert photo_name({"image": "x.jpg.png"}) == "x.jpg.png"  # contains ".jpg": kept
    assert photo_name({"ex_id": "1"}) is None


def test_flat_layout_and_both_layouts(tmp_path: Path) -> None:
    root = write_iiw(tmp_path / "flat", layout="flat")
    assert [r.id for r in IIWDataset(root).records()] == [i for i, _, _ in pool()]
    write_iiw(root, layout="github")  # the same bytes in both places: fine
    assert len(list(IIWDataset(root).records())) == len(pool())
    (root / "datasets" / "IIW-400" / "data.jsonl").write_text(jsonl(DATA["IIW-400"][:1]))
    with pytest.raises(DatasetError) as err:
        IIWDataset(root)
    message = one_line(err.value)
    assert "IIW-400/data.jsonl and " in message and "both exist and differ" in message


def test_records_open_no_photo(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader decoded a photo")

    monkeypatch.setattr(Image, "open", refuse)
    assert len(list(IIWDataset(root).records())) == len(pool())


def _bad_data() -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {s: list(v) for s, v in DATA.items()}
    data["IIW-400"] = [
        DATA["IIW-400"][0],
        '{"IIW": "cut short", "image/key": ',  # line 2
        {"image/key": "aar_test_04700", "objects": []},  # line 3: no IIW
        {"IIW": " \n\n ", "image/key": "aar_test_04701"},  # line 4: empty text
        {"IIW": "No photo name.", "objects": []},  # line 5
        {"IIW": "Escapes.", "image/key": "../aar_test_04702"},  # line 6
        DATA["IIW-400"][0],  # line 7: listed again
        {"IIW": 5, "image/key": "aar_test_04703"},  # line 8
        DATA["IIW-400"][2],  # line 9
    ]
    return data


def test_bad_lines_are_skipped_loudly_with_subset_and_line(tmp_path: Path) -> None:
    root = write_iiw(tmp_path / "iiw", _bad_data())
    ds = IIWDataset(root)
    ids = [r.id for r in ds.records()]
    assert ids == [i for i, _, _ in pool() if i != "IIW-400/aar_test_04601.jpg"]
    where = "IIW-400/data.jsonl"
    assert [(s.image, s.reason) for s in ds.skipped] == [
        ("IIW-400 line 2", f"{where} line 2: invalid JSON (Expecting value at column 35)"),
        ("IIW-400/aar_test_04700.jpg", f"{where} line 3: missing field IIW"),
        ("IIW-400/aar_test_04701.jpg", f"{where} line 4: empty IIW description"),
        ("IIW-400 line 5", f"{where} line 5: missing field image (or image/key)"),
        ("IIW-400 line 6", f"{where} line 6: photo name '../aar_test_04702.jpg' is not a file name"),
        ("IIW-400/aar_test_04600.jpg", f"{where} line 7: photo 'IIW-400/aar_test_04600.jpg' repeats the one at {where} line 1"),
        ("IIW-400/aar_test_04703.jpg", f"{where} line 8: IIW is not a string: 5"),
    ]  # fmt: skip
    with pytest.raises(BadRecordError, match=re.escape(f"{where} line 2: invalid JSON")):
        list(IIWDataset(root, strict=True).records())


# --- whole-input errors -----------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        IIWDataset(tmp_path / "nowhere")
    message = one_line(err.value)
    assert "does not exist" in message
    assert f"densecap-eval download iiw --root {tmp_path / 'nowhere'}" in message
    for folder in ("docci", "docci_aar", "dci"):
        assert f"{tmp_path / 'nowhere' / folder}/" in message


def test_missing_subset_file(root: Path) -> None:
    shutil.rmtree(root / "datasets" / "DCI_Test")
    with pytest.raises(DatasetError) as err:
        IIWDataset(root)
    message = one_line(err.value)
    assert message.startswith(
        f"{root / 'datasets' / 'DCI_Test' / 'data.jsonl'} not found "
        f"(nor {root / 'DCI_Test' / 'data.jsonl'}); "
    )
    assert f"densecap-eval download iiw --root {root}" in message


def test_not_json_lines(root: Path) -> None:
    path = root / "datasets" / "IIW-400" / "data.jsonl"
    path.write_text(json.dumps(DATA["IIW-400"], indent=1))
    with pytest.raises(DatasetError) as err:
        IIWDataset(root)
    message = one_line(err.value)
    assert message.startswith(f"{path} is not JSON Lines (no line holds a JSON object; ")
    assert "line 1: invalid JSON" in message


def test_unknown_split_and_missing_photo_folder(root: Path) -> None:
    ds = IIWDataset(root)
    with pytest.raises(DatasetError, match="unknown split 'test' of IIW"):
        ds.records("test")
    shutil.rmtree(root / "docci_aar")
    assert len(list(ds.records("DOCCI_Test"))) == 2  # other subsets still readable
    with pytest.raises(DatasetError) as err:
        ds.records()
    message = one_line(err.value)
    assert message.startswith(f"{root / 'docci_aar'} not found: it holds IIW-400's photos; ")
    assert "images_aar/aar_test_04[6-9]??.jpg" in message


def test_fingerprint(root: Path) -> None:
    ds = IIWDataset(root)
    pool_fp = ds.fingerprint(ds.splits())
    assert pool_fp == IIWDataset(root).fingerprint(list(reversed(SUBSETS)))
    assert ds.fingerprint(["IIW-400"]) != pool_fp
    with pytest.raises(DatasetError, match="unknown split"):
        ds.fingerprint(["test"])
    path = root / "datasets" / "DCI_Test" / "data.jsonl"
    path.write_text(path.read_text() + "\n")
    assert ds.fingerprint(ds.splits()) != pool_fp


# --- iiw/retrieval end to end -----------------------------------------------------------------


def test_iiw_retrieval_end_to_end(root: Path) -> None:
    scorer = FakeEmbeddingScorer(max_text_tokens=77)
    result = densecap_eval.evaluate(
        scorer, "iiw/retrieval", data_root=root, n_boot=0, use_cache=False
    )
    metrics = result.metrics["iiw/retrieval"]
    frame = result.examples
    ids, photos, stored = zip(*pool(), strict=True)
    assert frame["image"].tolist() == list(ids)
    texts = [lotlip_rejoin(t) for t in stored]
    assert frame["text"].tolist() == texts
    assert texts[0] == (
        "A clean white toilet and hotel towels in a vertically oriented indoor shot. "
        "Three towels hang from a chrome rack. Two rolls of paper are on the right wall"
    )  # paragraphs rejoined
    assert texts[1] == "A road sign reads 1. 5 km to the caf\u00e9. The sky is pale blue"
    assert texts[-1] == "A market stall of fruit: 3. 25 kg of plums"
    assert result.skipped == []

    i2t, t2i = direct_ranks(
        FakeEmbeddingScorer(max_text_tokens=77), [root / p for p in photos], texts
    )
    assert frame["rank_i2t"].tolist() == i2t
    assert frame["rank_t2i"].tolist() == t2i
    check_recalls(metrics, i2t, t2i)

    one = densecap_eval.evaluate(
        scorer, "iiw/retrieval", data_root=root, split="DCI_Test", n_boot=0, use_cache=False
    )
    assert one.examples["image"].tolist() == list(ids[-2:])


# --- download ---------------------------------------------------------------------------------


def _serve_release(served: Path, data: dict[str, list[Any]] = DATA) -> dict[str, str]:
    return {
        s: serve(served, f"datasets/{s}/data.jsonl", jsonl(data[s]).encode())[1] for s in SUBSETS
    }


def test_pinned_release() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", iiw_module.IIW_COMMIT)
    assert iiw_module.IIW_BASE_URL == (
        f"https://raw.githubusercontent.com/google/imageinwords/{iiw_module.IIW_COMMIT}/datasets"
    )
    assert set(iiw_module.IIW_SHA256) == set(SUBSETS)
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in iiw_module.IIW_SHA256.values())


def test_download_all_three_then_photos(
    server: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served, base = server
    served_sources = iiw_module.annotation_sources(f"{base}/datasets", _serve_release(served))
    monkeypatch.setattr(iiw_module, "SOURCES", {**iiw_module.SOURCES, **served_sources})
    root = tmp_path / "data"

    message = iiw_module.download(root, progress=False)
    for s in SUBSETS:
        assert (root / "datasets" / s / "data.jsonl").read_text() == jsonl(DATA[s])
    assert message.startswith("fetched DOCCI_Test, IIW-400, DCI_Test into ")
    assert f"IIW-400: 0 of 3 photos in {root / 'docci_aar'}/" in message
    todo = getattr(message, "todo", message)
    assert "DOCCI_ROOT/images/test_*.jpg" in todo
    assert "docci_images_aar.tar.gz" in todo and "sa_000138.tar" in todo
    assert sorted(p.name for p in root.iterdir()) == [DOWNLOADS_DIR, "datasets"]

    write_iiw(root)  # the user copies the photos in (same annotations)
    message = iiw_module.download(root, progress=False)  # re-run: from the kept downloads
    assert f"{root} is ready for iiw/retrieval" in message
    assert getattr(message, "todo", "") == ""
    assert len(list(IIWDataset(root).records())) == len(pool())


def test_bad_checksum_installs_nothing(
    server: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served, base = server
    checksums = _serve_release(served)
    bad = iiw_module.annotation_sources(f"{base}/datasets", checksums | {"DCI_Test": "f" * 64})
    monkeypatch.setattr(iiw_module, "SOURCES", {**iiw_module.SOURCES, **bad})
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        iiw_module.download(root, progress=False)
    assert "checksum mismatch" in one_line(err.value) and "DCI_Test" in str(err.value)
    assert not (root / "datasets").exists()  # the two good files were not installed either
    assert sorted(p.name for p in root.iterdir()) == [DOWNLOADS_DIR]


def test_download_one_subset_from_a_mirror(
    server: tuple[Path, str],
    tmp_path: Path,
) -> None:
    served, base = server
    sha = _serve_release(served)["IIW-400"]
    root = tmp_path / "data"
    url = f"{base}/datasets/IIW-400/data.jsonl"
    with pytest.raises(DownloadError, match="--url needs --sha256"):
        iiw_module.download(root, url=url, progress=False)
    with pytest.raises(DownloadError, match="--sha256 needs --url"):
        iiw_module.download(root, sha256=sha, progress=False)
    with pytest.raises(DownloadError, match="must name one subset's file"):
        iiw_module.download(root, url=f"{base}/data.jsonl", sha256=sha, progress=False)
    message = iiw_module.download(root, url=url, sha256=sha, progress=False)
    assert message.startswith("fetched IIW-400 into ")
    assert (root / "datasets" / "IIW-400" / "data.jsonl").read_text() == jsonl(DATA["IIW-400"])
    assert not (root / "datasets" / "DCI_Test").exists()
    todo = getattr(message, "todo", message)
    assert "- the annotations of DOCCI_Test, DCI_Test: `densecap-eval download iiw" in todo
    assert f"IIW-400: 0 of 3 photos in {root / 'docci_aar'}/" in message
