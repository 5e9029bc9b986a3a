"""The negatives task family: hand-checked metrics with the fake (a 12-token window), generated
negatives on synthetic DCI, and the Done-when check with the bundled tiny CLIP: every edit past
token 76 is invisible under truncate, and chunk-mean gets some of them right."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_scorers import FakeEmbeddingScorer, FakePairScorer, load_region

from densecap_eval.core.errors import BadRecordError, DensecapError
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.datasets.records import ImageRecord, SkippedImage, Text
from densecap_eval.engine.engine import score_plan
from densecap_eval.engine.plan import ScoringPlan
from densecap_eval.metrics.length import diff_position_fn
from densecap_eval.synth import generate_dci
from densecap_eval.tasks import get_task
from densecap_eval.tasks.context import ComputeContext
from densecap_eval.tasks.negatives import (
    EDIT_BIN_MAX,
    NegativesTask,
    edit_bin,
    edit_bin_labels,
)
from densecap_eval.tasks.retrieval import TEXT_RULES
from densecap_eval.tasks.textedits import EDIT_KINDS, generate_negatives, stable_seed


@dataclass
class ListDataset:
    """A dataset of ready-made ImageRecords (the `Dataset` protocol, nothing read from disk)."""

    items: list[ImageRecord]
    name: str = "list"
    root: Path = Path(".")
    skipped: list[SkippedImage] = field(default_factory=list)

    def splits(self) -> list[str]:
        return sorted({r.split or "" for r in self.items})

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        yield from (r for r in self.items if split is None or r.split == split)

    def skip(self, error: BadRecordError) -> SkippedImage:
        out = SkippedImage(error.image, error.reason)
        self.skipped.append(out)
        return out

    def fingerprint(self, splits: object) -> str:
        return "list"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-neg")
    generate_dci(out, images=6, seed=3, split_sizes=(0, 0, 6))
    return out


@pytest.fixture(scope="module")
def photos(synth_root: Path) -> list[Path]:
    return sorted((synth_root / "densely_captioned_images" / "photos").glob("*.jpg"))


def _words(n: int, start: int = 0) -> list[str]:
    return [f"w{i}" for i in range(start, start + n)]


def _hand_records(photos: list[Path]) -> list[ImageRecord]:
    """Record-source examples whose first differing word is known (fake: position = word + 1)."""
    p0 = "a red car parked near a tall old house by the road"  # 12 words
    p1 = "a dog on grass"
    long = " ".join(_words(20))
    late = [" ".join([*_words(20)[:w], "X", *_words(20)[w + 1 :]]) for w in range(12, 18)]
    return [
        ImageRecord(
            "p0",
            photos[0],
            (
                Text(p0, role="positive"),
                Text(p0.replace("red", "blue"), role="negative", kind="color"),  # word 1
                Text(p0.replace("road", "river"), role="negative", kind="object"),  # word 11
            ),
            split="test",
        ),
        ImageRecord(
            "p1",
            photos[1],
            (
                Text(p1, role="positive"),
                Text("a cat on grass", role="negative", meta={"edit_kind": "object"}),
                Text("a  dog on grass", role="negative", kind="spacing"),  # same words
            ),
            split="test",
        ),
        ImageRecord(
            "p2",
            photos[2],
            (
                Text("unused positive", role="positive"),
                Text(long, role="positive"),
                *(Text(t, role="negative", kind="late", meta={"positive": 1}) for t in late),
            ),
            split="test",
        ),
    ]


HAND_POSITIONS = [2, 12, 2, None, 13, 14, 15, 16, 17, 18]
HAND_KINDS = ["color", "object", "object", "spacing"] + ["late"] * 6
RECORD_TASK = NegativesTask("hand/negatives", "record", "hand-made pairs", "list", source="record")


def _run(task, dataset, policy: str, scorer=None, seed: int = 0):
    scorer = scorer or FakeEmbeddingScorer(max_text_tokens=12, text_policy=policy)
    inst = task.prepare(dataset, seed=seed)
    plan = ScoringPlan()
    inst.add_to_plan(plan)
    table = score_plan(scorer, plan, text_policy=policy, num_workers=0, progress=False)
    fn, _ = diff_position_fn(scorer)
    metrics, frame = inst.compute(
        table,
        ComputeContext(
            bootstrap_seed=0,
            n_boot=50,
            diff_positions=fn,
            max_text_tokens=scorer.max_text_tokens,
            text_policy=policy,
        ),
    )
    return inst, plan, metrics, frame


def _direct(policy: str, region: object, text: str) -> float:
    fake = FakeEmbeddingScorer(max_text_tokens=12)
    img = fake.encode_images([load_region(region)])[0].numpy()
    txt = fake.encode_texts([text], policy=policy).embeddings[0].numpy()
    return float(np.float32(fake.logit_scale) * np.float32(np.dot(img, txt)))


@pytest.mark.parametrize("policy", ["truncate", "chunk-mean"])
def test_hand_made_pairs(photos: list[Path], policy: str) -> None:
    dataset = ListDataset(_hand_records(photos))
    inst, plan, m, frame = _run(RECORD_TASK, dataset, policy)
    assert [ex.kind for ex in inst.examples] == HAND_KINDS
    assert frame["diff_position"].tolist() == [
        p if p is not None else pd.NA for p in HAND_POSITIONS
    ]
    # the fake's window: 12 tokens, one end token -> positions 0 .. 10 are seen
    hidden = [p is None or (policy == "truncate" and p > 10) for p in HAND_POSITIONS]
    assert frame["invisible"].tolist() == hidden
    want = []
    for ex in inst.examples:
        pos = _direct(policy, ex.region, ex.positive)
        neg = _direct(policy, ex.region, ex.negative)
        want.append(pos > neg)
    np.testing.assert_array_equal(frame["neg_correct"].to_numpy(), want)
    assert not any(w for w, h in zip(want, hidden, strict=True) if h)  # hidden: a tie at best

    n_hidden = sum(hidden)
    assert m["n"] == 10 and m["n_images"] == 3
    assert m["invisible"] == n_hidden == (8 if policy == "truncate" else 1)
    assert m["invisible_share"] == pytest.approx(n_hidden / 10)
    assert m["neg"] == pytest.approx(sum(want) / 10)
    visible = [w for w, h in zip(want, hidden, strict=True) if not h]
    assert m["neg_visible"] == pytest.approx(sum(visible) / len(visible))
    assert m["ties"]["neg"] >= n_hidden

    bins = m["by_edit_position"]
    assert list(bins) == [*edit_bin_labels(), "identical"]
    assert bins["0-15"]["n"] == 6 and bins["16-31"]["n"] == 3 and bins["identical"]["n"] == 1
    assert bins["identical"]["invisible"] == 1
    assert bins["0-15"]["invisible"] == (4 if policy == "truncate" else 0)
    assert bins["16-31"]["invisible"] == (3 if policy == "truncate" else 0)
    assert sum(b["n"] for b in bins.values()) == 10
    assert m["edit_position_bins"]["edges"][:3] == [0, 16, 32]
    assert m["edit_position_bins"]["edges"][-1] == EDIT_BIN_MAX
    assert m["edit_position_bins"]["last_visible"] == 10
    assert m["edit_position_bins"]["invisible_from"] == (11 if policy == "truncate" else None)

    outside = "beyond" if policy == "truncate" else "later_chunk"
    win = m["by_diff_position"]
    assert list(win) == ["inside", "edge", outside, "identical"]
    assert [win[k]["n"] for k in win] == [2, 0, 7, 1]
    assert win[outside]["invisible"] == (7 if policy == "truncate" else 0)
    assert m["diff_position_buckets"][outside] == [11, None]

    assert m["by_kind"]["late"]["n"] == 6 and m["by_kind"]["object"]["n"] == 2
    assert list(m["by_kind"])[:2] == ["color", "object"]  # lexicon kinds first
    assert set(m["ci"]) == {"neg", "neg_visible"}
    json.dumps(m)  # metrics.json-ready
    # each photo and each text once; two pairs per example at most (positives are shared)
    assert len(plan.regions) == 3
    assert len(plan.texts) == len(set(plan.texts)) == 3 + 10
    assert len(plan.pairs) == 10 + 3


def test_chunk_mean_recovers_some_of_what_truncate_hides(photos: list[Path]) -> None:
    dataset = ListDataset(_hand_records(photos))
    _, _, cut, cut_frame = _run(RECORD_TASK, dataset, "truncate")
    _, _, chunk, chunk_frame = _run(RECORD_TASK, dataset, "chunk-mean")
    late = cut_frame["diff_position"].fillna(-1).to_numpy() > 10
    assert cut_frame["neg_correct"][late].sum() == 0
    assert chunk_frame["neg_correct"][late].sum() > 0
    assert chunk["invisible"] < cut["invisible"]


def test_record_source_checks_its_texts(photos: list[Path]) -> None:
    bad = [
        ImageRecord("x", photos[0], (Text("no positive", role="negative"),), split="test"),
        ImageRecord(
            "y",
            photos[1],
            (Text("a", role="positive"), Text("b", role="negative", meta={"positive": 4})),
            split="test",
        ),
        ImageRecord("z", photos[2], (Text("a", role="positive"),), split="test"),  # no negative
        ImageRecord("gone", photos[0].with_name("missing.jpg"), (), split="test"),
    ]
    dataset = ListDataset(bad)
    inst = RECORD_TASK.prepare(dataset)
    assert inst.examples == []
    assert [s.image for s in inst.skipped] == ["x", "y", "gone"]
    assert inst.images_without_negatives == 1


def test_generated_negatives_on_synthetic_dci(synth_root: Path) -> None:
    task = NegativesTask("dci/neg-test", "generated", "test", "dci", text_kind="full", per_kind=2)
    dataset = DCIDataset(synth_root)
    inst, plan, m, frame = _run(task, dataset, "truncate", seed=5)
    records = list(dataset.records("test"))
    want = []
    for rec in records:
        text = rec.description("full")
        assert text is not None
        edits = generate_negatives(text, seed=stable_seed(5, rec.id), kinds=EDIT_KINDS, per_kind=2)
        want += [(rec.id, text, e.text, e.kind, e.start, e.word_index) for e in edits]
    got = [
        (e.image, e.positive, e.negative, e.kind, e.edit_start, e.edit_word) for e in inst.examples
    ]
    assert got == want
    assert set(frame["kind"]) == set(EDIT_KINDS)
    assert not frame.duplicated(["image", "entry_key"]).any()  # compare's identity
    assert m["n"] == len(want) and m["n_images"] == len(records)
    # a 12-token window: nearly every edit of a 300-token description is hidden
    hidden = frame["diff_position"].to_numpy(dtype=float) > 10
    assert frame["invisible"].to_numpy().tolist() == hidden.tolist()
    assert m["invisible"] == int(hidden.sum()) > m["n"] // 2
    assert frame["edit_bin"].tolist() == [edit_bin(int(p)) for p in frame["diff_position"]]
    assert len(plan.regions) == len(records) and len(plan.texts) == len(set(plan.texts))
    # deterministic for a seed, different for another
    assert task.prepare(dataset, seed=5).examples == inst.examples
    assert task.prepare(dataset, seed=6).examples != inst.examples
    frame.to_parquet(synth_root / "neg.parquet")  # the examples table stores
    assert len(pd.read_parquet(synth_root / "neg.parquet")) == len(frame)


def test_pair_scorer_scores_only_the_planned_pairs(synth_root: Path) -> None:
    task = NegativesTask("dci/neg-test", "generated", "test", "dci", text_kind="caption")
    dataset = DCIDataset(synth_root)
    inst = task.prepare(dataset)
    plan = ScoringPlan()
    inst.add_to_plan(plan)
    pair = FakePairScorer(max_text_tokens=12)
    table = score_plan(pair, plan, num_workers=0, progress=False)
    assert sum(pair.pair_calls) == len(plan.pairs) == len(inst.examples) + len(set(inst.images))
    m, _ = inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=0))
    assert m["n"] == len(inst.examples) and m["invisible"] is None  # no positions given
    assert "by_edit_position" not in m
    assert not task.needs_gallery  # evaluation does not ask a pair scorer for a first stage


def test_a_pair_scorer_needs_no_first_stage_for_negatives(tmp_path: Path) -> None:
    from densecap_eval.run.runner import RunRequest, check_rerank

    check_rerank(RunRequest(("vqascore:x",), ("docci/negatives",), tmp_path))  # no raise
    with pytest.raises(DensecapError, match="rerank-from"):
        check_rerank(RunRequest(("vqascore:x",), ("docci/retrieval",), tmp_path))


def test_limit_split_rule_and_missing_description(photos: list[Path]) -> None:
    records = [
        ImageRecord(f"r{i}", photos[i], (Text(f"a red car\nand {i} blue buses"),), split="test")
        for i in range(3)
    ] + [ImageRecord("none", photos[3], (), split="test")]
    dataset = ListDataset(records)
    task = NegativesTask("t/neg", "generated", "d", "list", text_rule="first-line", limit=2)
    inst = task.prepare(dataset)
    assert {e.image for e in inst.examples} == {"r0", "r1"}
    assert all(e.positive == "a red car" for e in inst.examples)
    assert {e.kind for e in inst.examples} == {"color", "object"}
    full = NegativesTask("t/neg", "generated", "d", "list", text_rule="newline-to-space")
    inst = full.prepare(dataset, split="test")
    assert [s.image for s in inst.skipped] == ["none"]
    assert inst.split == "test"
    assert {e.positive for e in inst.examples if e.image == "r2"} == {"a red car and 2 blue buses"}


def test_bad_declarations_raise() -> None:
    with pytest.raises(DensecapError, match="text rule"):
        NegativesTask("t", "p", "d", "x", text_rule="nope")
    with pytest.raises(DensecapError, match="edit kinds"):
        NegativesTask("t", "p", "d", "x", kinds=("colour",))
    with pytest.raises(DensecapError, match="source"):
        NegativesTask("t", "p", "d", "x", source="file")  # type: ignore[arg-type]
    with pytest.raises(DensecapError, match="before add_to_plan"):
        RECORD_TASK.prepare(ListDataset([])).compute(
            None, ComputeContext(bootstrap_seed=0, n_boot=0)
        )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "dataset", "split", "limit", "rule"),
    [
        ("docci/negatives", "docci", "test", None, "raw"),
        ("iiw/negatives", "iiw", None, None, "lotlip"),
        ("urban1k/negatives", "urban1k", None, None, "first-line"),
        ("sharegpt4v/negatives", "sharegpt4v", "share-captioner", 1000, "newline-to-space"),
    ],
)
def test_registered_tasks(name: str, dataset: str, split: str | None, limit, rule: str) -> None:
    task = get_task(name)
    assert (task.name, task.dataset, task.default_split, task.limit) == (
        name,
        dataset,
        split,
        limit,
    )
    assert task.text_rule == rule and rule in TEXT_RULES
    assert task.source == "generated" and task.kinds == EDIT_KINDS


def test_edit_bins() -> None:
    labels = edit_bin_labels()
    assert labels[0] == "0-15" and labels[-2] == "496-511" and labels[-1] == "512+"
    assert len(labels) == EDIT_BIN_MAX // 16 + 1
    assert [edit_bin(p) for p in (0, 15, 16, 76, 511, 512, 4000, None)] == [
        "0-15",
        "0-15",
        "16-31",
        "64-79",
        "496-511",
        "512+",
        "512+",
        "identical",
    ]


# -- Done when: the bundled model on synthetic long captions ---------------------------------


@pytest.fixture(scope="module")
def tiny():
    from densecap_eval import load_scorer

    return load_scorer("builtin:tiny")


def test_tiny_model_edits_past_the_window_are_invisible_then_recovered(
    synth_root: Path, tiny
) -> None:
    """Done when: every edit past token 76 is invisible under truncate; chunk-mean scores some
    of them correctly; metrics hold the invisible count beside the accuracy by edit position."""
    assert tiny.max_text_tokens == 77
    task = NegativesTask("dci/neg-full", "generated", "test", "dci", text_kind="full", per_kind=3)
    dataset = DCIDataset(synth_root)
    out = {}
    for policy in ("truncate", "chunk-mean"):
        _, _, metrics, frame = _run(task, dataset, policy, scorer=tiny)
        out[policy] = (metrics, frame)
    (cut, cut_frame), (chunk, chunk_frame) = out["truncate"], out["chunk-mean"]
    pos = cut_frame["diff_position"].to_numpy(dtype=float)
    late = pos >= 76
    assert late.sum() >= 20 and (~late).sum() >= 5  # the captions are long; edits spread
    # truncate: every edit at token 76 or later is invisible, and only those
    assert cut_frame["invisible"][late].all()
    assert not cut_frame["invisible"][~late].any()
    assert cut["invisible"] == int(late.sum()) and isinstance(cut["invisible"], int)
    assert not cut_frame["neg_correct"][late].any()  # identical encodings: ties
    assert cut["edit_position_bins"]["invisible_from"] == 76
    # chunk-mean: nothing hidden, and part of the curve past the window comes back
    assert chunk["invisible"] == 0
    assert chunk_frame["neg_correct"][late].sum() > 0
    assert (chunk_frame["diff_position"].to_numpy(dtype=float) == pos).all()
    for m in (cut, chunk):
        assert any("invisible" in k and isinstance(v, int) for k, v in m.items())
        assert "by_edit_position" in m
        json.dumps(m)
    # the accuracy curve: past the window truncate scores 0, chunk-mean more
    past = [
        b
        for b in cut["by_edit_position"]
        if b[0].isdigit() and int(b.split("-")[0].rstrip("+")) >= 80
    ]
    cut_n = sum(cut["by_edit_position"][b]["n"] for b in past)
    assert cut_n and sum(cut["by_edit_position"][b]["invisible"] for b in past) == cut_n
    assert any((chunk["by_edit_position"][b]["neg"] or 0) > 0 for b in past)
