"""Winoground: both stored layouts, RGBA images, bad rows, the strict text/image/group rule."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, FakePairScorer
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.regions import open_photo
from densecap_eval.datasets.winoground.loader import WinogroundDataset, WinogroundExample, download
from densecap_eval.datasets.winoground.tasks import WINOGROUND, winoground_outcomes
from densecap_eval.engine.plan import ScoreTable, ScoringPlan
from densecap_eval.tasks.context import ComputeContext

COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (240, 240, 0), (0, 220, 220), (200, 0, 200)]
# id, caption_0, caption_1, tag, secondary_tag, collapsed_tag
ROWS: list[tuple[int, str, str, str, str, str]] = [
    (0, "a red square", "a green square", "Object", "", "Object"),
    (1, "a blue square", "a yellow square", "Relation", "Symbolic", "Relation"),
    (2, "a cyan square", "a purple square", "Object", "Pragmatics", "Both"),
]


def _image(i: int, k: int) -> Image.Image:
    colour = COLOURS[(2 * i + k) % len(COLOURS)]
    if (i, k) == (0, 1):  # RGBA, fully transparent: convert("RGB") keeps the colour as stored
        return Image.new("RGBA", (20, 14), (*colour, 0))
    return Image.new("RGB", (20 + i, 14), colour)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _columns(rows: list[tuple[int, str, str, str, str, str]]) -> dict[str, list[Any]]:
    return {
        "id": [r[0] for r in rows],
        "caption_0": [r[1] for r in rows],
        "caption_1": [r[2] for r in rows],
        "tag": [r[3] for r in rows],
        "secondary_tag": [r[4] for r in rows],
        "num_main_preds": [1] * len(rows),
        "collapsed_tag": [r[5] for r in rows],
    }


def write_parquet(root: Path, rows: list[tuple[int, str, str, str, str, str]] = ROWS,
                  images: list[tuple[Any, Any]] | None = None) -> Path:  # fmt: skip
    """The Hub layout: README.md + data/test-*.parquet with embedded images."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("int32"),
            "image_0": datasets.Image(),
            "image_1": datasets.Image(),
            "caption_0": datasets.Value("string"),
            "caption_1": datasets.Value("string"),
            "tag": datasets.Value("string"),
            "secondary_tag": datasets.Value("string"),
            "num_main_preds": datasets.Value("int32"),
            "collapsed_tag": datasets.Value("string"),
        }
    )
    if images is None:
        images = [(_image(r[0], 0), _image(r[0], 1)) for r in rows]
    table = _columns(rows) | {"image_0": [i[0] for i in images], "image_1": [i[1] for i in images]}
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n---\n")
    dataset = datasets.Dataset.from_dict(table, features=features)
    dataset.to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


def write_jsonl(root: Path, rows: list[tuple[int, str, str, str, str, str]] = ROWS,
                missing: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """The 2022 layout: data/examples.jsonl naming images + data/images.zip (images/<name>.png)."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    with (data / "examples.jsonl").open("w") as fh:
        for n, r in enumerate(rows):
            item = {key: values[n] for key, values in cols.items()}
            item |= {"image_0": f"ex_{r[0]}_img_0", "image_1": f"ex_{r[0]}_img_1"}
            fh.write(json.dumps(item) + "\n")
    with zipfile.ZipFile(data / "images.zip", "w") as zf:
        written: set[str] = set()
        for r in rows:
            for k in (0, 1):
                name = f"ex_{r[0]}_img_{k}"
                if name not in missing and name not in written:
                    written.add(name)
                    zf.writestr(f"images/{name}.png", _png(_image(r[0], k)))
    return root


@pytest.fixture(params=["parquet", "jsonl"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    writer = write_parquet if request.param == "parquet" else write_jsonl
    return writer(tmp_path / "winoground")


# --------------------------------------------------------------------------- the loader


def test_both_layouts_read_the_same_examples(root: Path) -> None:
    ds = WinogroundDataset(root)
    examples = ds.examples()
    assert [ex.id for ex in examples] == ["0", "1", "2"]
    assert [ex.captions for ex in examples] == [(r[1], r[2]) for r in ROWS]
    assert [(ex.tag, ex.secondary_tag, ex.collapsed_tag) for ex in examples] == [
        ("Object", None, "Object"), ("Relation", "Symbolic", "Relation"),
        ("Object", "Pragmatics", "Both"),
    ]  # fmt: skip
    assert examples[1].image_names == ("ex_1_img_0", "ex_1_img_1")
    for ex in examples:
        for k in (0, 1):
            # written once, by content, in the cache (not in the data root)
            assert ex.images[k].is_file() and root not in ex.images[k].parents
            photo = open_photo(ex.images[k])
            assert photo.mode == "RGB"
            assert photo.getpixel((0, 0)) == COLOURS[(2 * int(ex.id) + k) % len(COLOURS)]
    assert ds.skipped == []
    assert ds.splits() == ["test"]
    records = list(ds.records("test"))
    assert [r.id for r in records[:2]] == ["ex_0_img_0", "ex_0_img_1"]
    assert records[1].description() == "a green square"
    assert [t.text for t in records[1].texts_of("negative")] == ["a red square"]


def test_rgba_image_is_stored_as_rgba_and_decoded_without_alpha(tmp_path: Path) -> None:
    root = write_parquet(tmp_path / "w")
    ex = WinogroundDataset(root).examples()[0]
    with Image.open(ex.images[1]) as stored:
        assert stored.mode == "RGBA" and stored.getpixel((0, 0))[3] == 0
    # alpha dropped, not composited on white or black (the peers' convert("RGB"))
    assert open_photo(ex.images[1]).getpixel((5, 5)) == COLOURS[1]


def test_images_are_materialised_once_by_content(tmp_path: Path) -> None:
    a = WinogroundDataset(write_parquet(tmp_path / "a")).examples()
    b = WinogroundDataset(write_jsonl(tmp_path / "b")).examples()
    assert [ex.images for ex in a] == [ex.images for ex in b]  # same bytes, same file


def test_root_may_hold_the_release_as_winoground(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data-root" / "winoground")
    assert len(WinogroundDataset(tmp_path / "data-root").examples()) == 3


def test_jsonl_layout_reads_only_zip_members(tmp_path: Path) -> None:
    root = write_jsonl(tmp_path / "w")
    WinogroundDataset(root).examples()
    assert sorted(p.name for p in (root / "data").iterdir()) == ["examples.jsonl", "images.zip"]


def test_fingerprint_follows_the_annotations(root: Path) -> None:
    first = WinogroundDataset(root).fingerprint(["test"])
    assert first == WinogroundDataset(root).fingerprint(["test"])
    with pytest.raises(DatasetError, match="unknown split"):
        WinogroundDataset(root).fingerprint(["train"])


def test_missing_data_raises_with_the_steps(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no Winoground data.*download winoground"):
        WinogroundDataset(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "examples.jsonl").write_text("{}\n")
    with pytest.raises(DatasetError, match=r"images\.zip not found"):
        WinogroundDataset(tmp_path).examples()


BAD_ROWS = [
    (0, "a red square", "a green square", "Object", "", "Object"),
    (1, "a blue square", "", "Relation", "", "Relation"),  # empty caption_1
    (2, "a cyan square", "a purple square", "Object", "", "Both"),  # image_1 missing
    (0, "a red square", "a green square", "Object", "", "Object"),  # id seen before
]


@pytest.mark.parametrize("layout", ["parquet", "jsonl"])
def test_bad_rows_are_skipped_loudly(
    layout: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if layout == "parquet":
        images = [(_image(r[0], 0), _image(r[0], 1)) for r in BAD_ROWS]
        images[2] = (images[2][0], None)
        root = write_parquet(tmp_path / "w", BAD_ROWS, images)
    else:
        root = write_jsonl(tmp_path / "w", BAD_ROWS, missing=("ex_2_img_1",))
    ds = WinogroundDataset(root)
    assert [ex.id for ex in ds.examples()] == ["0"]
    reasons = {s.image: s.reason for s in ds.skipped}
    assert set(reasons) == {"ex_1", "ex_2", "ex_0"}
    assert reasons["ex_1"] == "empty caption_1"
    assert reasons["ex_2"].startswith("image_1") or reasons["ex_2"] == "no image_1"
    assert reasons["ex_0"] == "row 4: id '0' repeats the one at row 1"
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 3
    with pytest.raises(BadRecordError, match="ex_1: empty caption_1"):
        WinogroundDataset(root, strict=True).examples()


def test_download_fetches_nothing_and_prints_the_steps(tmp_path: Path) -> None:
    message = download(tmp_path)
    target = tmp_path / "winoground"
    assert (
        f"huggingface-cli download facebook/winoground --repo-type dataset --local-dir {target}"
        in message
    )
    assert "huggingface-cli login" in message and "accept the terms" in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match="gated"):
        download(tmp_path, url="http://example.com/w.zip", sha256="0" * 64)
    write_parquet(target)
    assert "already in" in download(tmp_path)


# --------------------------------------------------------------------------- the metric

# (c0_i0, c1_i0, c0_i1, c1_i1) -> (text, image, group)
CASES: list[tuple[tuple[float, float, float, float], tuple[bool, bool, bool]]] = [
    ((0.9, 0.1, 0.2, 0.8), (True, True, True)),  # all right
    ((0.9, 0.1, 0.95, 0.99), (True, False, False)),  # text only: image 1 likes both captions
    ((0.9, 0.95, 0.1, 0.99), (False, True, False)),  # image only: caption 1 fits image 0 best
    ((0.1, 0.9, 0.8, 0.2), (False, False, False)),  # swapped
    ((0.5, 0.5, 0.2, 0.8), (False, True, False)),  # tie c0_i0 == c1_i0: text wrong (strict)
    ((0.9, 0.1, 0.9, 0.95), (True, False, False)),  # tie c0_i0 == c0_i1: image wrong
]


def test_outcomes_table() -> None:
    scores = np.array([c[0] for c in CASES])
    outcomes = winoground_outcomes(scores)
    for m, col in (("text", 0), ("image", 1), ("group", 2)):
        assert outcomes[m][0].tolist() == [c[1][col] for c in CASES], m
    assert outcomes["text"][1].tolist() == [False, False, False, False, True, False]
    assert outcomes["image"][1].tolist() == [False, False, False, False, False, True]


def _hand_instance(tags: list[str]) -> Any:
    examples = [
        WinogroundExample(
            id=str(i),
            images=(Path(f"/x/{i}_0.png"), Path(f"/x/{i}_1.png")),
            image_names=(f"ex_{i}_img_0", f"ex_{i}_img_1"),
            captions=(f"caption zero {i}", f"caption one {i}"),
            tag=tags[i],
            collapsed_tag="All",
        )
        for i in range(len(CASES))
    ]

    class Holder:
        def examples(self, split: str | None = None) -> list[WinogroundExample]:
            return examples

    return WINOGROUND.prepare(Holder())


def test_compute_from_hand_made_scores() -> None:
    tags = ["Object", "Object", "Relation", "Relation", "Both", "Both"]
    inst = _hand_instance(tags)
    plan = ScoringPlan()
    inst.add_to_plan(plan)
    assert len(plan.pairs) == 4 * len(CASES)  # exactly the four pairs of each example
    values: dict[tuple[int, int], float] = {}
    for i, (scores, _) in enumerate(CASES):
        for j, value in enumerate(scores):
            values[(int(inst._r[i, j]), int(inst._t[i, j]))] = value
    table = ScoreTable(
        text_tokens=np.zeros(len(plan.texts), dtype=np.int64),
        text_cut=np.zeros(len(plan.texts), dtype=bool),
        pair_scores=values,
    )
    metrics, frame = inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=200))
    assert metrics["text"] == pytest.approx(3 / 6)
    assert metrics["image"] == pytest.approx(3 / 6)
    assert metrics["group"] == pytest.approx(1 / 6)
    assert metrics["n"] == 6
    assert metrics["ties"] == {"text": 1, "image": 1, "group": 2}
    assert metrics["by_tag"] == {
        "Both": {"text": 0.5, "image": 0.5, "group": 0.0, "n": 2},
        "Object": {"text": 1.0, "image": 0.5, "group": 0.5, "n": 2},
        "Relation": {"text": 0.0, "image": 0.5, "group": 0.0, "n": 2},
    }
    assert metrics["by_collapsed_tag"] == {
        "All": {"text": 0.5, "image": 0.5, "group": pytest.approx(1 / 6), "n": 6}
    }
    assert "by_secondary_tag" not in metrics  # no example has one
    lo, hi = metrics["ci"]["text"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert frame["image"].tolist() == [f"ex_{i}" for i in range(6)]  # the cluster: the example
    assert frame["text_correct"].tolist() == [c[1][0] for c in CASES]
    assert frame["image_correct"].tolist() == [c[1][1] for c in CASES]
    assert frame["group_correct"].tolist() == [c[1][2] for c in CASES]
    assert frame["scores"][4] == pytest.approx([0.5, 0.5, 0.2, 0.8])
    assert frame["text_tie"][4] and not frame["text_correct"][4]


# --------------------------------------------------------------------------- end to end


def _direct(root: Path) -> dict[str, float]:
    """The metric from the fake's own scores, one example at a time (no engine)."""
    scorer = FakeEmbeddingScorer()
    rows = []
    for ex in WinogroundDataset(root).examples():
        s = scorer.score([open_photo(p) for p in ex.images], list(ex.captions)).numpy()
        rows.append([s[0, 0], s[0, 1], s[1, 0], s[1, 1]])  # s[k, j]: caption j on image k
    outcomes = winoground_outcomes(np.array(rows))
    return {m: float(outcomes[m][0].mean()) for m in ("text", "image", "group")}


def test_evaluate_equals_a_direct_computation(root: Path) -> None:
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "winoground", data_root=root, n_boot=0, use_cache=False
    )
    metrics = result.metrics["winoground"]
    assert {m: metrics[m] for m in ("text", "image", "group")} == _direct(root)
    assert metrics["n"] == 3 and metrics["ci"] == {"text": None, "image": None, "group": None}
    assert len(result.examples) == 3
    assert result.config["dataset"] == "winoground"


def test_pair_scorer_scores_exactly_the_four_pairs(tmp_path: Path) -> None:
    root = write_parquet(tmp_path / "w")
    scorer = FakePairScorer()
    result = densecap_eval.evaluate(scorer, "winoground", data_root=root, n_boot=0,
                                    use_cache=False)  # fmt: skip
    assert len(scorer.scored_pairs) == 4 * 3
    assert result.metrics["winoground"]["n"] == 3


def test_blind_control_scores_nothing(tmp_path: Path) -> None:
    """Grey images score both captions the same on both images: strict ties, all wrong."""
    root = write_parquet(tmp_path / "w")
    result = densecap_eval.evaluate(FakeEmbeddingScorer(), "winoground", data_root=root,
                                    n_boot=0, use_cache=False, blind=True)  # fmt: skip
    metrics = result.metrics["winoground"]
    assert (metrics["text"], metrics["image"], metrics["group"]) == (0.0, 0.0, 0.0)
    assert metrics["ties"]["image"] == 3
