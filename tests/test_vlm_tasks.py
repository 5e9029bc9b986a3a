"""VLM pair scorers under the real tasks: the DCI subtests end to end, and retrieval re-ranking.

- Every DCI subtest runs through `densecap_eval.evaluate` with each VLM scorer (tiny LLaVA,
  tiny Qwen2-VL, tiny BLIP ITM, loaded from spec strings), and a stored score equals the
  scorer's own `score_pairs` on the same crop.
- Retrieval with a pair scorer re-ranks a first-stage embedding scorer's top k: the recalls and
  ranks equal a hand computation from the first-stage top k plus the pair scores.
- The CLI stores such a run with rerank_from / rerank_k and the VLM's template in run.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_vlms
from fake_scorers import FakeEmbeddingScorer, FakePairScorer, load_region
from tiny_models import make_tiny_open_clip, one_thread

import densecap_eval
from densecap_eval.core.errors import DensecapError
from densecap_eval.core.paths import bundled_sample_root
from densecap_eval.tasks.rerank import rerank_ranks

SUBTESTS = ["dci/all_swaps", "dci/all_swaps_pick5", "dci/base_swaps", "dci/all_hardest"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {
        "llava": tiny_vlms.build_llava(root / "llava"),
        "qwen2vl": tiny_vlms.build_qwen2vl(root / "qwen2vl"),
        "blip": tiny_vlms.build_blip_itm(root / "blip"),
    }


@pytest.fixture(scope="module")
def open_clip_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny_open_clip"))


# -- the DCI subtests, end to end -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prefix", "family", "query", "config_key", "config_value"),
    [
        ("vqascore", "llava", "", "answer", "Yes"),
        ("captionlik", "qwen2vl", "?reduce=sum", "reduce", "sum"),
        ("itm", "blip", "", "head", "BlipForImageTextRetrieval"),
    ],
)
def test_every_dci_subtest_runs_with_each_vlm(
    vlms: dict[str, Path],
    tmp_path: Path,
    prefix: str,
    family: str,
    query: str,
    config_key: str,
    config_value: str,
) -> None:
    from densecap_eval.datasets.dci.loader import DCIDataset
    from densecap_eval.scorers import load_scorer
    from densecap_eval.tasks import get_task

    spec = f"{prefix}:{vlms[family]}{query}"
    root = bundled_sample_root()
    result = densecap_eval.evaluate(
        spec, "dci", data_root=root, device="cpu", precision="fp32", n_boot=10,
        batch_size=32, cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    assert result.model == spec and list(result.metrics) == SUBTESTS
    for name, m in result.metrics.items():
        part = result.examples[result.examples["task"] == name]
        assert m["n"] == len(part) > 0
        for metric in ("scm", "neg"):
            assert 0.0 <= m[metric] <= 1.0
            assert m[metric] == pytest.approx(part[f"{metric}_correct"].mean())
    cfg = result.config
    assert cfg["scorer_kind"] == "pair"
    assert cfg["scorer_config"][config_key] == config_value
    assert cfg["plan"]["pairs"] > 0
    assert cfg["rerank_from"] is None and "rerank_fingerprint" not in cfg

    # A planned pair's stored score is the scorer's own value for that crop and text.
    scorer = load_scorer(spec, "cpu", "fp32")
    instance = get_task("dci/all_swaps").prepare(DCIDataset(root))
    part = result.examples[result.examples["task"] == "dci/all_swaps"].reset_index(drop=True)
    j = next(i for i, ex in enumerate(instance.examples) if ex.entry.region.box is not None)
    ex = instance.examples[j]
    assert part.loc[j, "entry_key"] == ex.entry.key and part.loc[j, "negative"] == ex.negative
    crop = load_region(ex.entry.region)
    direct = scorer.score_pairs([crop, crop], [ex.negative, ex.positives[0]])
    assert part.loc[j, "neg_score"] == pytest.approx(float(direct[0]), abs=1e-4)
    assert part.loc[j, "pos_scores"][0] == pytest.approx(float(direct[1]), abs=1e-4)


# -- retrieval: re-ranking the first stage's top k --------------------------------------------


@pytest.mark.parametrize(
    ("first_rank", "owner", "pair_scores", "expected"),
    [
        # right answer 2nd of 3 candidates, pair scores put it first -> rank 1
        ([2], [[False, True, False]], [[0.1, 0.9, 0.5]], [1]),
        # a wrong candidate ties the right one: ties count against the model -> rank 2
        ([1], [[True, False, False]], [[0.5, 0.5, 0.1]], [2]),
        # two right answers (identical texts): the better one counts -> rank 2
        ([1], [[True, False, True]], [[0.1, 0.4, 0.3]], [2]),
        # right answer outside the top k: keeps its first-stage rank (> k)
        ([7], [[False, False, False]], [[0.9, 0.8, 0.7]], [7]),
    ],
)
def test_rerank_ranks_table(
    first_rank: list[int],
    owner: list[list[bool]],
    pair_scores: list[list[float]],
    expected: list[int],
) -> None:
    got = rerank_ranks(np.array(first_rank), np.array(owner), np.array(pair_scores))
    assert got.tolist() == expected


def _hand_ranks(first: np.ndarray, pair: np.ndarray, k: int) -> np.ndarray:
    """Rank of each query's own item (query q owns gallery item q), by the module doc's rules."""
    ranks = []
    for q in range(len(first)):
        top = sorted(range(first.shape[1]), key=lambda c: (-first[q, c], c))[:k]
        if q in top:
            ranks.append(1 + sum(1 for c in top if c != q and pair[q, c] >= pair[q, q]))
        else:
            ranks.append(
                1 + sum(1 for c in range(first.shape[1]) if c != q and first[q, c] >= first[q, q])
            )
    return np.array(ranks)


def test_retrieval_reranks_the_first_stage_top_k(open_clip_spec: str, tmp_path: Path) -> None:
    from densecap_eval.datasets.dci.loader import DCIDataset
    from densecap_eval.scorers import load_scorer
    from densecap_eval.tasks import get_task

    root = bundled_sample_root()
    pair = FakePairScorer()
    k = 5
    result = densecap_eval.evaluate(
        pair, "dci/retrieval", data_root=root, split="test", rerank_from=open_clip_spec,
        rerank_k=k, device="cpu", precision="fp32", n_boot=20, cache_dir=tmp_path / "cache",
    )  # fmt: skip
    m = result.metrics["dci/retrieval"]

    # The hand computation: the first stage's full matrix, the pair scorer on every pair.
    instance = get_task("dci/retrieval").prepare(DCIDataset(root), split="test")
    images = [load_region(r) for r in instance.regions]
    texts = instance.texts
    n = len(texts)
    assert n == 10 and len(set(texts)) == n  # one gallery column per photo
    first = load_scorer(open_clip_spec, "cpu", "fp32").score(images, texts).double().numpy()
    pair_m = FakePairScorer().score(images, texts).double().numpy()
    i2t = _hand_ranks(first, pair_m, k)
    t2i = _hand_ranks(first.T, pair_m.T, k)
    assert result.examples["rank_i2t"].tolist() == i2t.tolist()
    assert result.examples["rank_t2i"].tolist() == t2i.tolist()
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        for cutoff in (1, 5, 10):
            assert m[f"{direction}_r{cutoff}"] == pytest.approx(float(np.mean(ranks <= cutoff)))
    # The re-ranker changed something, or this test could not tell re-ranking from none.
    first_i2t = _hand_ranks(first, first, n)
    assert result.examples["rank_i2t_first"].tolist() == first_i2t.tolist()
    assert (i2t != first_i2t).any() or (t2i != _hand_ranks(first.T, first.T, n)).any()
    assert m["n"] == n and m["gallery"] == n and m["rerank_k"] == k
    assert m["first_stage"]["i2t_r1"] == pytest.approx(float(np.mean(first_i2t <= 1)))
    assert set(m["ci"]) >= {"i2t_r1", "t2i_r10"}
    # Each needed pair was scored once: both directions' candidates share one plan.
    wanted = {(q, c) for q in range(n) for c in np.argsort(-first[q], kind="stable")[:k]}
    wanted |= {(c, q) for q in range(n) for c in np.argsort(-first[:, q], kind="stable")[:k]}
    assert sum(pair.pair_calls) == len(wanted) == result.config["plan"]["pairs"]

    cfg = result.config
    assert cfg["rerank_from"] == open_clip_spec and cfg["rerank_k"] == k
    assert cfg["rerank_fingerprint"] == load_scorer(open_clip_spec, "cpu", "fp32").fingerprint
    assert cfg["reranked_tasks"] == ["dci/retrieval"] and cfg["model"] == "fake:pair"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "retrieval with a pair scorer needs --rerank-from SPEC"),
        ({"rerank_from": FakePairScorer()}, "the first stage must be an embedding scorer"),
        ({"rerank_from": FakeEmbeddingScorer(), "rerank_k": 0}, "rerank_k must be an integer >= 1"),
    ],
)
def test_rerank_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DensecapError, match=message) as info:
        densecap_eval.evaluate(
            FakePairScorer(), "dci/retrieval", data_root=bundled_sample_root(), use_cache=False,
            **kwargs,
        )  # fmt: skip
    assert "\n" not in str(info.value)


def test_embedding_scorer_ignores_rerank_from() -> None:
    kwargs = {"data_root": bundled_sample_root(), "split": "test", "n_boot": 0, "use_cache": False}
    plain = densecap_eval.evaluate(FakeEmbeddingScorer(), "dci/retrieval", **kwargs)
    with_rerank = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "dci/retrieval", rerank_from="open_clip:nothing", **kwargs
    )
    assert with_rerank.metrics == plain.metrics
    assert with_rerank.config["rerank_from"] is None  # not used, so not recorded


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_run_stores_a_reranked_retrieval_run(
    vlms: dict[str, Path], open_clip_spec: str, tmp_path: Path
) -> None:
    from densecap_eval.cli.app import main
    from densecap_eval.results.store import list_runs, load_metrics

    pair_spec = f"vqascore:{vlms['llava']}"
    out = tmp_path / "results"
    code = main([
        "run", "--model", pair_spec, "--task", "dci/retrieval", "--rerank-from", open_clip_spec,
        "--rerank-k", "5", "--data-root", str(bundled_sample_root()), "--out", str(out),
        "--split", "test", "--device", "cpu", "--precision", "fp32", "--bootstrap", "10",
        "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert code == 0
    (run,) = list_runs(out)
    assert run.is_complete
    card = json.loads((run.path / "run.json").read_text())
    assert card["status"] == "complete" and card["model"]["spec"] == pair_spec
    assert card["config"]["rerank_from"] == open_clip_spec and card["config"]["rerank_k"] == 5
    assert card["config"]["rerank_fingerprint"]
    assert card["config"]["scorer_config"]["template"] == (
        'Does this figure show "{text}"? Please answer yes or no.'
    )
    assert card["command"][card["command"].index("--rerank-k") + 1] == "5"
    metrics = load_metrics(run)["dci/retrieval"]
    assert metrics["n"] == 10 and metrics["rerank_k"] == 5
    assert all(0.0 <= metrics[f"{d}_r{k}"] <= 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --rerank-from SPEC"),
        (["--rerank-from", "nosuch:model"], "nosuch"),
        # A usage error from the option's own bound (>= 1), before any model is loaded.
        (["--rerank-from", "open_clip:x", "--rerank-k", "0"], "'--rerank-k'"),
    ],
)
def test_cli_rerank_flags_fail_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    from densecap_eval.cli.app import main

    # The model folder does not exist: reaching the loader would be a different error.
    code = main([
        "run", "--model", f"vqascore:{tmp_path / 'none'}", "--task", "dci/retrieval",
        "--data-root", str(bundled_sample_root()), "--out", str(tmp_path / "out"), *extra,
    ])  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err
    assert message in err and "does not exist" not in err
