"""Region-caption matching (tasks/regions.py): hand-made scores, then ``files/regions`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, FakePairScorer, load_region
from PIL import Image

import densecap_eval
from densecap_eval.core.errors import BadRecordError
from densecap_eval.datasets.regions import Region
from densecap_eval.engine.plan import ScoreTable, ScoringPlan
from densecap_eval.tasks import get_task
from densecap_eval.tasks.context import ComputeContext
from densecap_eval.tasks.regions import RegionEntry, RegionsInstance, RegionsTask

TASK = RegionsTask("test/regions", "test", dataset="test")


def _instance(groups: dict[str, list[str]]) -> RegionsInstance:
    entries = [
        RegionEntry(image, Region(f"/photos/{image}.png", (i, 0, i + 1, 1)), f"row {i}", text)
        for image, captions in groups.items()
        for i, text in enumerate(captions)
    ]
    return RegionsInstance(TASK, "all", entries, excluded_images=1, excluded_regions=1)


def test_hand_made_scores_first_index_of_the_maximum_and_ties() -> None:
    inst = _instance({"A": ["a1", "a2", "a3"], "B": ["same", "same"]})
    plan = ScoringPlan()
    inst.add_to_plan(plan)
    assert plan.texts == ["a1", "a2", "a3", "same"]
    # Rows: the regions of an image; columns: the captions of its regions, in region order.
    blocks = {
        "A": [[5, 1, 2], [3, 2, 0], [1, 4, 4]],  # right; wrong (a1 beats a2); tie, a2 first: wrong
        "B": [[2, 2], [3, 3]],  # one text twice: the first region wins the tie, the second loses
    }
    pairs: dict[tuple[int, int], float] = {}
    assert inst._r is not None and inst._t is not None
    for image, block in blocks.items():
        idx = [i for i, e in enumerate(inst.entries) if e.image == image]
        for row, i in enumerate(idx):
            for col, j in enumerate(idx):
                pairs[(int(inst._r[i]), int(inst._t[j]))] = float(block[row][col])
    assert set(pairs) == {tuple(p) for p in plan.pairs.tolist()}  # exactly the planned pairs
    n_texts = len(plan.texts)
    table = ScoreTable(
        text_tokens=np.full(n_texts, 3), text_cut=np.zeros(n_texts, bool), pair_scores=pairs
    )
    metrics, frame = inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=50))
    assert frame["scm_correct"].tolist() == [True, False, False, True, False]
    assert frame["scm_tie"].tolist() == [False, False, True, True, True]
    assert metrics["scm"] == pytest.approx(2 / 5)
    assert metrics["n"] == 5 and metrics["n_images"] == 2
    assert metrics["ties"] == {"scm": 3}
    assert metrics["chance"] == pytest.approx((3 * (1 / 3) + 2 * (1 / 2)) / 5)
    assert (metrics["excluded_images"], metrics["excluded_regions"]) == (1, 1)
    assert frame["own_score"].tolist() == [5, 2, 4, 2, 3]
    assert frame["best_other_score"].tolist() == [2, 3, 4, 2, 3]
    assert frame["best_other_text"].tolist() == ["a3", "a1", "a2", "same", "same"]
    assert frame["regions_in_image"].tolist() == [3, 3, 3, 2, 2]
    lo, hi = metrics["ci"]["scm"]
    assert 0 <= lo <= metrics["scm"] <= hi <= 1


def _quadrants(path: Path, colours: list[str], size: int = 32) -> None:
    """A photo of four coloured quadrants (left-right, top-bottom)."""
    img = Image.new("RGB", (size, size))
    half = size // 2
    for k, colour in enumerate(colours):
        img.paste(Image.new("RGB", (half, half), colour), ((k % 2) * half, (k // 2) * half))
    img.save(path)


def _quadrant_box(k: int, size: int = 32) -> list[int]:
    half = size // 2
    return [(k % 2) * half, (k // 2) * half, half, half]


@pytest.fixture
def regions_file(tmp_path: Path) -> tuple[Path, dict[str, list[tuple[list[int], str]]]]:
    """A JSONL file: photo p has its quadrants as boxed rows; q has one box (excluded)."""
    photos = {
        "p.png": ["red", "green", "blue", "yellow"],
        "r.png": ["white", "black", "purple", "orange"],
        "q.png": ["red", "red", "red", "red"],
    }
    for name, colours in photos.items():
        _quadrants(tmp_path / name, colours)
    expected: dict[str, list[tuple[list[int], str]]] = {}
    rows = [{"image": "p.png", "caption": "a photo of four colours"}]  # not a region
    for name, n in (("p.png", 4), ("r.png", 3), ("q.png", 1)):
        for k in range(n):
            caption = f"the {photos[name][k]} square of {name}"
            rows.append({"image": name, "caption": caption, "box": _quadrant_box(k)})
            expected.setdefault(name, []).append((_quadrant_box(k), caption))
    path = tmp_path / "regions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, expected


def test_files_regions_matches_a_hand_computation(regions_file) -> None:
    path, expected = regions_file
    scorer = FakeEmbeddingScorer()
    result = densecap_eval.evaluate(
        scorer, "files/regions", data_root=path, n_boot=0, use_cache=False
    )
    metrics = result.metrics["files/regions"]
    frame = result.examples
    hand: list[bool] = []
    for name in ("p.png", "r.png"):  # q.png has one region: excluded
        regions = expected[name]
        crops = [
            load_region(Region(str((path.parent / name).absolute()), (x, y, x + w, y + h)))
            for (x, y, w, h), _ in regions
        ]
        scores = scorer.score(crops, [c for _, c in regions]).numpy()
        hand.extend((scores.argmax(axis=1) == np.arange(len(regions))).tolist())
    assert frame["image"].tolist() == ["p.png"] * 4 + ["r.png"] * 3
    assert frame["region_key"].tolist() == [f"row {i}" for i in range(2, 9)]
    assert frame["scm_correct"].tolist() == hand
    assert metrics["scm"] == pytest.approx(np.mean(hand))
    assert metrics["n"] == 7 and metrics["n_images"] == 2
    assert (metrics["excluded_images"], metrics["excluded_regions"]) == (1, 1)
    assert metrics["ci"] == {"scm": None}  # n_boot=0
    # A pair scorer scores only the planned pairs and reaches the same decisions.
    paired = densecap_eval.evaluate(
        FakePairScorer(), "files/regions", data_root=path, n_boot=0, use_cache=False
    )
    assert paired.examples["scm_correct"].tolist() == hand


def test_a_photo_the_engine_cannot_decode_is_skipped_or_stops_under_strict(regions_file) -> None:
    path, _ = regions_file
    photo = path.parent / "r.png"
    data = photo.read_bytes()
    photo.write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "files/regions", data_root=path, n_boot=0, use_cache=False
    )
    assert result.examples["image"].unique().tolist() == ["p.png"]
    assert [s.image for s in result.skipped] == ["r.png"]
    with pytest.raises(BadRecordError, match=r"r\.png"):
        densecap_eval.evaluate(
            FakeEmbeddingScorer(),
            "files/regions",
            data_root=path,
            n_boot=0,
            use_cache=False,
            strict=True,
        )


def test_files_tasks_are_registered() -> None:
    for name in ("files/retrieval", "files/negatives", "files/regions"):
        task = get_task(name)
        assert task.dataset == "files" and task.concrete() == (name,)
