"""DCI tasks end to end on a synthetic release with the deterministic fake scorer.

Every metric is checked against a direct computation written here with plain loops over the
fake's own embeddings (not through densecap_eval.metrics), so the tasks' grouping, pooling,
indexing and bookkeeping are what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_scorers import FakeEmbeddingScorer, FakePairScorer, load_region

from densecap_eval.core.errors import DensecapError, UnknownNameError
from densecap_eval.datasets.dci.loader import DCIDataset
from densecap_eval.engine.engine import score_plan
from densecap_eval.engine.plan import ScoringPlan
from densecap_eval.synth import generate_dci
from densecap_eval.tasks import concrete_tasks, get_task, list_tasks
from densecap_eval.tasks.context import ComputeContext
from densecap_eval.tasks.retrieval import lotlip_rejoin

SUBTESTS = ("dci/all_swaps", "dci/all_swaps_pick5", "dci/base_swaps", "dci/all_hardest")


def lotlip_text(short_caption: str, extra_caption: str) -> str:
    """LoTLIP's DCI retrieval text: short + extra caption, split and rejoined."""
    return lotlip_rejoin(f"{short_caption}\n{extra_caption}")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 6 test photos -> 18 entries: groups of 8, 8 and a short last group of 2
    out = tmp_path_factory.mktemp("synth")
    generate_dci(out, images=9, seed=0, split_sizes=(2, 1, 6))
    return out


@pytest.fixture(scope="module")
def scored(root: Path):
    """All four subtests and both retrieval tasks on one plan, scored once."""
    scorer = FakeEmbeddingScorer(max_text_tokens=12)
    dataset = DCIDataset(root)
    plan = ScoringPlan()
    instances = {}
    for name in (*SUBTESTS, "dci/retrieval", "dci/retrieval-full"):
        instances[name] = get_task(name).prepare(dataset, seed=0)
        instances[name].add_to_plan(plan)
    table = score_plan(scorer, plan, num_workers=0, progress=False)
    return scorer, plan, table, instances


class Direct:
    """Scores straight from the fake's towers, one region / text at a time."""

    def __init__(self, scorer: FakeEmbeddingScorer) -> None:
        self.scorer = FakeEmbeddingScorer(max_text_tokens=scorer.max_text_tokens)
        self._img: dict[object, np.ndarray] = {}
        self._txt: dict[str, np.ndarray] = {}

    def img(self, region: object) -> np.ndarray:
        if region not in self._img:
            self._img[region] = self.scorer.encode_images([load_region(region)])[0].numpy()
        return self._img[region]

    def txt(self, text: str) -> np.ndarray:
        if text not in self._txt:
            self._txt[text] = self.scorer.encode_texts([text]).embeddings[0].numpy()
        return self._txt[text]

    def score(self, region: object, text: str) -> float:
        return float(self.scorer.logit_scale * np.dot(self.img(region), self.txt(text)))


def _scm_direct(direct: Direct, examples: list, idx: list[int]) -> list[bool]:
    out = []
    for i in idx:
        row = []
        for j in idx:
            bag = [direct.score(examples[i].entry.region, t) for t in examples[j].positives]
            row.append(min(bag) if i == j else max(bag))
        best = max(row)
        out.append(row.index(best) == idx.index(i))  # first index of the maximum
    return out


def test_registry_lists_the_tasks_and_expands_the_suite() -> None:
    names = list_tasks()
    for name in (*SUBTESTS, "dci", "dci/retrieval", "dci/retrieval-full"):
        assert name in names
    assert concrete_tasks(["dci", "dci/all_swaps", "dci/retrieval"]) == [*SUBTESTS, "dci/retrieval"]
    with pytest.raises(UnknownNameError, match=r"did you mean 'dci/all_swaps'"):
        get_task("dci/all_swap")


@pytest.mark.parametrize("name", SUBTESTS)
def test_subtest_metrics_match_a_direct_computation(scored, name: str) -> None:
    scorer, _, table, instances = scored
    inst = instances[name]
    metrics, frame = inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=200))
    examples = inst.examples
    n = len(examples)
    assert n > 0 and metrics["n"] == n == len(frame)
    direct = Direct(scorer)

    scm = []
    for start in range(0, n, 8):
        scm += _scm_direct(direct, examples, list(range(start, min(n, start + 8))))
    neg = [
        min(direct.score(ex.entry.region, t) for t in ex.positives)
        > direct.score(ex.entry.region, ex.negative)
        for ex in examples
    ]
    per: dict[int, bool] = {}
    images = [ex.entry.image for ex in examples]
    for image in dict.fromkeys(images):
        idx = [i for i, im in enumerate(images) if im == image]
        if len(idx) > 1:
            per.update(zip(idx, _scm_direct(direct, examples, idx), strict=True))

    assert frame["scm_correct"].tolist() == scm
    assert frame["neg_correct"].tolist() == neg
    assert metrics["scm"] == pytest.approx(np.mean(scm))
    assert metrics["neg"] == pytest.approx(np.mean(neg))
    want_per = [per.get(i) for i in range(n)]
    assert [None if pd.isna(v) else bool(v) for v in frame["scm_per_image_correct"]] == want_per
    if per:
        assert metrics["scm_per_image"] == pytest.approx(np.mean(list(per.values())))
    else:
        assert metrics["scm_per_image"] is None
    assert metrics["scm_per_image_excluded"] == n - len(per)
    for i, ex in enumerate(examples):
        assert frame["pos_scores"][i] == pytest.approx(
            [direct.score(ex.entry.region, t) for t in ex.positives], abs=1e-5
        )
        assert frame["neg_score"][i] == pytest.approx(
            direct.score(ex.entry.region, ex.negative), abs=1e-5
        )
    lo, hi = metrics["ci"]["neg"]
    assert lo <= metrics["neg"] <= hi


def test_groups_of_eight_span_photos_and_the_last_is_short(scored) -> None:
    _, _, table, instances = scored
    _, frame = instances["dci/all_swaps"].compute(table, ComputeContext(bootstrap_seed=0, n_boot=0))
    sizes = frame.groupby("group").size().tolist()
    assert sizes == [8, 8, 2]
    assert frame.groupby("group")["image"].nunique().max() > 1  # a group holds several photos


def test_pick5_takes_the_first_five_summaries(root: Path, scored) -> None:
    _, _, table, instances = scored
    _, frame = instances["dci/all_swaps_pick5"].compute(
        table, ComputeContext(bootstrap_seed=0, n_boot=0)
    )
    assert len(frame) > 0
    for row in frame.itertuples():
        record = json.loads(
            (root / "densely_captioned_images" / "complete" / row.image).read_text()
        )
        summaries = record["summaries"][row.entry_key]
        assert isinstance(summaries, list) and len(summaries) >= 5
        assert list(row.positives) == summaries[:5]
        assert row.negative == record["negatives"][row.entry_key]["swaps"][0]
        assert len(row.pos_scores) == 5 and len(row.pos_tokens) == 5


def test_each_region_and_text_is_encoded_once_across_subtests(scored) -> None:
    scorer, plan, _, instances = scored
    assert sorted(scorer.encoded_texts) == sorted(set(scorer.encoded_texts))
    assert scorer.encoded_images == len(plan.regions)
    texts = {
        t
        for name in SUBTESTS
        for ex in instances[name].examples
        for t in (*ex.positives, ex.negative)
    }
    texts |= {t for name in ("dci/retrieval", "dci/retrieval-full") for t in instances[name].texts}
    assert set(scorer.encoded_texts) == texts
    # base entries of the subtests and the retrieval photos are the same regions
    bases = {ex.entry.region for ex in instances["dci/base_swaps"].examples}
    assert bases <= set(instances["dci/retrieval"].regions)


def test_length_breakdown_cut_share_and_diff_position(scored) -> None:
    scorer, _, table, instances = scored
    from densecap_eval.metrics.length import diff_position_fn
    from densecap_eval.metrics.tokens import clip_token_counts

    fn, method = diff_position_fn(scorer)
    assert method == "word_prefix"  # the fake has count_tokens only
    metrics, frame = instances["dci/all_hardest"].compute(
        table, ComputeContext(bootstrap_seed=0, n_boot=0, diff_positions=fn, max_text_tokens=12)
    )
    counts = [len(p[0].split()) + 2 for p in frame["positives"]]  # the fake's tokenizer
    assert [t[0] for t in frame["pos_tokens"]] == counts  # the model's own counts stay
    assert metrics["cut_share"] == pytest.approx(np.mean([c > 12 for c in counts]))
    # by_length counts with the CLIP BPE reference, whatever the model's tokenizer
    ref = clip_token_counts([p[0] for p in frame["positives"]])
    assert frame["ref_tokens"].tolist() == ref
    assert frame["length_bucket"].tolist() == ["<=77" if r <= 77 else "78-154" for r in ref]
    assert metrics["length_reference"] == {
        "tokenizer": "openai-clip-bpe",
        "edges": [77, 154, 248],
        "buckets": ["<=77", "78-154", "155-248", ">248"],
    }
    assert metrics["model_max_text_tokens"] == 12
    assert sum(b["n"] for b in metrics["by_length"].values()) == metrics["n"]
    assert list(metrics["by_length"]) == ["<=77", "78-154", "155-248", ">248"]
    short = frame["length_bucket"] == "<=77"
    assert metrics["by_length"]["<=77"]["neg"] == pytest.approx(frame["neg_correct"][short].mean())

    # first differences in the fake's window: 12 tokens = start, 10 words, end -> V = 10
    assert metrics["diff_position_buckets"] == {
        "inside": [0, 5],
        "edge": [6, 10],
        "beyond": [11, None],
    }
    by_pos = metrics["by_diff_position"]
    assert list(by_pos)[:3] == ["inside", "edge", "beyond"]
    assert sum(b["n"] for b in by_pos.values()) == metrics["n"]
    for row in frame.itertuples():
        pw, nw = row.positives[0].split(), row.negative.split()
        k = next(
            (i for i, (a, b) in enumerate(zip(pw, nw, strict=False)) if a != b),
            min(len(pw), len(nw)),
        )
        assert row.diff_position == (None if pw == nw else k + 1)  # +1: the start token
        want = "identical" if pw == nw else ("inside" if k < 5 else "edge" if k < 10 else "beyond")
        assert row.diff_bucket == want
        if want == "beyond":  # the fake keeps the first 10 words: the texts encode alike
            assert row.neg_score == pytest.approx(row.pos_scores[0])
            assert not row.neg_correct
    for bucket, values in by_pos.items():
        assert values["n"] == int((frame["diff_bucket"] == bucket).sum())
    assert by_pos["beyond"]["n"] > 0 and by_pos["inside"]["n"] > 0  # the data reach both


def test_diff_position_buckets_follow_the_text_policy_and_need_a_limit(scored) -> None:
    scorer, _, table, instances = scored
    from densecap_eval.metrics.length import diff_position_fn

    fn, _ = diff_position_fn(scorer)
    inst = instances["dci/all_swaps"]
    chunked, frame = inst.compute(
        table,
        ComputeContext(
            bootstrap_seed=0,
            n_boot=0,
            diff_positions=fn,
            max_text_tokens=12,
            text_policy="chunk-mean",
        ),
    )
    assert list(chunked["diff_position_buckets"]) == ["inside", "edge", "later_chunk"]
    assert list(chunked["by_diff_position"])[:3] == ["inside", "edge", "later_chunk"]
    assert "beyond" not in set(frame["diff_bucket"].dropna())
    unknown, frame = inst.compute(
        table, ComputeContext(bootstrap_seed=0, n_boot=0, diff_positions=fn)
    )
    assert unknown["diff_position_buckets"] is None and unknown["model_max_text_tokens"] is None
    assert set(unknown["by_diff_position"]) <= {"unknown", "identical"}
    assert set(frame["diff_bucket"].dropna()) <= {"unknown", "identical"}
    none, frame = inst.compute(
        table, ComputeContext(bootstrap_seed=0, n_boot=0)
    )  # no position function
    assert "by_diff_position" not in none and frame["diff_bucket"].isna().all()
    assert none["scm"] == unknown["scm"] == chunked["scm"]  # scores are the table's


def test_examples_table_survives_parquet(scored, tmp_path: Path) -> None:
    _, _, table, instances = scored
    frames = [
        instances[n].compute(table, ComputeContext(bootstrap_seed=0, n_boot=0))[1]
        for n in (*SUBTESTS, "dci/retrieval")
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame.to_parquet(tmp_path / "x.parquet")
    back = pd.read_parquet(tmp_path / "x.parquet")
    assert len(back) == len(frame)
    base = back[(back["task"] == "dci/all_swaps") & (back["entry_key"] == "base")]
    assert base["box"].isna().all()
    sub = back[(back["task"] == "dci/all_swaps") & (back["entry_key"] != "base")]
    assert all(len(b) == 4 for b in sub["box"])


def test_retrieval_matches_a_direct_computation(scored, root: Path) -> None:
    scorer, _, table, instances = scored
    inst = instances["dci/retrieval"]
    metrics, frame = inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=100))
    assert inst.split == "all" and metrics["n"] == 9  # every split by default
    direct = Direct(scorer)
    s = np.array([[direct.score(r, t) for t in inst.texts] for r in inst.regions])
    n = len(inst.texts)
    i2t = [int((s[i] >= s[i, i]).sum()) for i in range(n)]
    t2i = [int((s[:, i] >= s[i, i]).sum()) for i in range(n)]
    assert frame["rank_i2t"].tolist() == i2t
    assert frame["rank_t2i"].tolist() == t2i
    for k in (1, 5, 10):
        assert metrics[f"i2t_r{k}"] == pytest.approx(np.mean([r <= k for r in i2t]))
        assert metrics[f"t2i_r{k}"] == pytest.approx(np.mean([r <= k for r in t2i]))
    record = json.loads(
        (root / "densely_captioned_images" / "complete" / frame["image"][0]).read_text()
    )
    assert frame["text"][0] == lotlip_text(record["short_caption"], record["extra_caption"])
    full = instances["dci/retrieval-full"]
    assert "The following can also be seen in the image" in " ".join(full.texts)


def _rounded(table, step: float = 5.0):
    """The same embeddings with logits rounded to multiples of ``step``: many exact ties."""
    import torch

    from densecap_eval.engine.plan import ScoreTable

    def logits(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        return torch.round(10.0 * (img @ txt.T) / step) * step

    return ScoreTable(
        text_tokens=table.text_tokens,
        text_cut=table.text_cut,
        image_embeddings=table.image_embeddings,
        text_embeddings=table.text_embeddings,
        logit_fn=logits,
    )


def _hand_ranks(s: np.ndarray, rule: str) -> tuple[list[int], list[int], int, int]:
    """i2t and t2i ranks of query i (owning item i), and the tied counts, by direct loops."""
    n = len(s)
    i2t, t2i, i2t_tied, t2i_tied = [], [], 0, 0
    for i in range(n):
        for ranks, row, tied_count in ((i2t, s[i], "i2t"), (t2i, s[:, i], "t2i")):
            if rule == "pessimistic":
                ranks.append(sum(1 for c in range(n) if row[c] >= row[i]))
            else:  # first: position in a stable sort, best first
                ranks.append(1 + sorted(range(n), key=lambda c, r=row: (-r[c], c)).index(i))
            tied = any(row[c] == row[i] for c in range(n) if c != i)
            if tied_count == "i2t":
                i2t_tied += tied
            else:
                t2i_tied += tied
    return i2t, t2i, i2t_tied, t2i_tied


@pytest.mark.parametrize("rule", ["pessimistic", "first"])
def test_retrieval_tie_rules_through_compute(scored, rule: str) -> None:
    _, _, table, instances = scored
    inst = instances["dci/retrieval"]
    tied_table = _rounded(table)
    metrics, frame = inst.compute(
        tied_table, ComputeContext(bootstrap_seed=0, n_boot=0, ties=rule, max_text_tokens=12)
    )
    assert len(set(inst.texts)) == len(inst.texts)  # one gallery column per photo
    s = tied_table.matrix(inst._r.tolist(), inst._t.tolist())
    i2t, t2i, i2t_tied, t2i_tied = _hand_ranks(s, rule)
    assert frame["rank_i2t"].tolist() == i2t and frame["rank_t2i"].tolist() == t2i
    assert metrics["tie_rule"] == rule
    assert (metrics["i2t_tied"], metrics["t2i_tied"]) == (i2t_tied, t2i_tied)
    assert i2t_tied > 0 and t2i_tied > 0  # the rounding made ties
    assert int(frame["i2t_tie"].sum()) == i2t_tied and int(frame["t2i_tie"].sum()) == t2i_tied
    assert metrics["i2t_r1"] == pytest.approx(np.mean([r <= 1 for r in i2t]))
    assert metrics["model_max_text_tokens"] == 12
    assert metrics["length_reference"]["tokenizer"] == "openai-clip-bpe"
    from densecap_eval.metrics.tokens import clip_token_counts

    assert frame["ref_tokens"].tolist() == clip_token_counts(inst.texts)
    assert sum(b["n"] for b in metrics["by_length"].values()) == metrics["n"]


def test_retrieval_default_rule_is_pessimistic_and_unknown_rules_raise(scored) -> None:
    _, _, table, instances = scored
    inst = instances["dci/retrieval"]
    tied_table = _rounded(table)
    default, _ = inst.compute(tied_table, ComputeContext(bootstrap_seed=0, n_boot=0))
    pess, _ = inst.compute(
        tied_table, ComputeContext(bootstrap_seed=0, n_boot=0, ties="pessimistic")
    )
    first, _ = inst.compute(tied_table, ComputeContext(bootstrap_seed=0, n_boot=0, ties="first"))
    assert default == pess and default["tie_rule"] == "pessimistic"
    assert first["i2t_r1"] >= pess["i2t_r1"] and first["t2i_r1"] >= pess["t2i_r1"]
    with pytest.raises(UnknownNameError, match="tie rule"):
        inst.compute(tied_table, ComputeContext(bootstrap_seed=0, n_boot=0, ties="lucky"))


@pytest.mark.parametrize("rule", ["pessimistic", "first"])
def test_rerank_honours_the_tie_rule(root: Path, rule: str) -> None:
    """A constant pair scorer ties every candidate: ``first`` keeps the first-stage order (the
    first-stage ``first`` ranks come back), ``pessimistic`` puts every right answer last."""
    from densecap_eval.engine.plan import ScoreTable

    inst = get_task("dci/retrieval").prepare(DCIDataset(root))
    first_plan = ScoringPlan()
    inst.add_to_plan(first_plan)
    first_table = _rounded(
        score_plan(FakeEmbeddingScorer(), first_plan, num_workers=0, progress=False)
    )
    k = 4
    plan = ScoringPlan()
    inst.plan_rerank(first_table, plan, k=k)
    pairs = plan.pairs
    constant = ScoreTable(
        text_tokens=np.zeros(len(plan.texts), dtype=np.int64),
        text_cut=np.zeros(len(plan.texts), dtype=bool),
        pairs=pairs,
        pair_values=np.zeros(len(pairs), dtype=np.float32),
    )
    metrics, frame = inst.compute(constant, ComputeContext(bootstrap_seed=0, n_boot=0, ties=rule))
    s = first_table.matrix(inst._r.tolist(), inst._t.tolist())
    first_i2t, first_t2i, _, _ = _hand_ranks(s, rule)
    assert frame["rank_i2t_first"].tolist() == first_i2t
    assert frame["rank_t2i_first"].tolist() == first_t2i
    # first-stage candidates: top k by score, ties to the lower index (= the `first` rank)
    stable_i2t, stable_t2i, _, _ = _hand_ranks(s, "first")
    for got, first_rank, stable in (
        (frame["rank_i2t"], first_i2t, stable_i2t),
        (frame["rank_t2i"], first_t2i, stable_t2i),
    ):
        for rank, fr, st in zip(got.tolist(), first_rank, stable, strict=True):
            if st > k:  # not a candidate: keeps its first-stage rank
                assert rank == fr
            else:  # all k candidates tie at 0
                assert rank == (st if rule == "first" else k)
    hits = sum(st <= k for st in stable_i2t)
    assert metrics["i2t_tied"] >= hits  # every re-ranked query ties (k > 1)
    assert metrics["tie_rule"] == rule and metrics["rerank_k"] == k
    assert set(metrics["first_stage"]) >= {"i2t_r1", "t2i_r1", "i2t_tied", "t2i_tied"}


def test_retrieval_split_narrows(root: Path) -> None:
    inst = get_task("dci/retrieval").prepare(DCIDataset(root), split="test")
    assert inst.split == "test" and len(inst.images) == 6


@pytest.mark.parametrize(
    ("short", "extra", "want"),
    [
        (
            "A red cat.",
            "It sits on a mat.\nThe mat is blue.",
            "A red cat. It sits on a mat. The mat is blue",
        ),
        ("Sign reads 3.5 m", "", "Sign reads 3. 5 m"),  # LoTLIP splits at every period
        ("  x </s> y ", "\n\n", "x. y"),
    ],
)
def test_lotlip_text(short: str, extra: str, want: str) -> None:
    assert lotlip_text(short, extra) == want


def test_pair_scorer_scores_only_planned_pairs_and_agrees(root: Path, scored) -> None:
    _, _, emb_table, emb_instances = scored
    dataset = DCIDataset(root)
    plan = ScoringPlan()
    inst = get_task("dci/all_swaps").prepare(dataset)
    inst.add_to_plan(plan)
    pair = FakePairScorer(max_text_tokens=12)
    table = score_plan(pair, plan, num_workers=0, progress=False)
    assert len(pair.scored_pairs) == len(plan.pairs)  # no pair scored twice, none unplanned
    metrics, frame = inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=0))
    want, want_frame = emb_instances["dci/all_swaps"].compute(
        emb_table, ComputeContext(bootstrap_seed=0, n_boot=0)
    )
    assert frame["scm_correct"].tolist() == want_frame["scm_correct"].tolist()
    assert frame["neg_correct"].tolist() == want_frame["neg_correct"].tolist()
    assert metrics["scm"] == want["scm"] and metrics["neg"] == want["neg"]


def test_retrieval_refuses_a_pair_table(root: Path) -> None:
    plan = ScoringPlan()
    inst = get_task("dci/retrieval").prepare(DCIDataset(root), split="test")
    inst.add_to_plan(plan)
    plan.need(0, 0)
    table = score_plan(FakePairScorer(), plan, num_workers=0, progress=False)
    with pytest.raises(DensecapError, match="embedding scorer"):
        inst.compute(table, ComputeContext(bootstrap_seed=0, n_boot=0))
