"""`evaluate` / `evaluate_tasks`: one shared plan, metrics per concrete task, cache reuse, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_scorers import FakeEmbeddingScorer, FakePairScorer

import densecap_eval
from densecap_eval.core.config import ConfigError
from densecap_eval.core.errors import DatasetError, DensecapError, UnknownNameError
from densecap_eval.run.evaluate import RunResult, evaluate, evaluate_tasks
from densecap_eval.synth import generate_dci

SUBTESTS = ["dci/all_swaps", "dci/all_swaps_pick5", "dci/base_swaps", "dci/all_hardest"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dci(out, images=6, seed=1, split_sizes=(2, 1, 3))
    return out


def test_evaluate_dci_returns_the_four_subtests(root: Path) -> None:
    scorer = FakeEmbeddingScorer()
    result = densecap_eval.evaluate(scorer, "dci", data_root=root, n_boot=50, use_cache=False)
    assert isinstance(result, RunResult)
    assert result.model == "fake:embedding" and result.task == "dci"
    assert list(result.metrics) == SUBTESTS
    for name, m in result.metrics.items():
        part = result.examples[result.examples["task"] == name]
        assert m["n"] == len(part) > 0
        assert m["scm"] == pytest.approx(part["scm_correct"].mean())
        assert m["neg"] == pytest.approx(part["neg_correct"].mean())
        assert set(m["ci"]) == {"scm", "neg", "scm_per_image"}
        assert "by_length" in m and "by_diff_position" in m and "cut_share" in m
    cfg = result.config
    assert cfg["dataset"] == "dci" and cfg["data_root"] == str(root)
    assert cfg["splits"] == dict.fromkeys(SUBTESTS, "test")
    assert cfg["model_fingerprint"] == scorer.fingerprint
    assert cfg["max_text_tokens"] == scorer.max_text_tokens
    assert cfg["text_policy"] == "truncate" and cfg["blind"] is False
    assert cfg["diff_position_method"] == "word_prefix"
    assert len(cfg["dataset_fingerprint"]) == 64
    assert result.started_at is not None and result.finished_at >= result.started_at
    json.dumps(result.metrics)  # plain JSON types only


def test_evaluate_tasks_share_one_plan(root: Path) -> None:
    scorer = FakeEmbeddingScorer()
    a, b = evaluate_tasks(
        scorer, ["dci", "dci/all_swaps"], data_root=root, n_boot=0, use_cache=False
    )
    assert a.metrics["dci/all_swaps"] == b.metrics["dci/all_swaps"]
    assert list(b.metrics) == ["dci/all_swaps"]
    assert len(scorer.encoded_texts) == len(set(scorer.encoded_texts))
    assert b.config["plan"] == a.config["plan"]
    assert scorer.encoded_images == a.config["plan"]["regions"]


def test_second_run_is_served_from_the_cache_with_identical_metrics(
    root: Path, tmp_path: Path
) -> None:
    first = evaluate(FakeEmbeddingScorer(), "dci", data_root=root, cache_dir=tmp_path, n_boot=100)
    again = FakeEmbeddingScorer()
    second = evaluate(again, "dci", data_root=root, cache_dir=tmp_path, n_boot=100)
    assert again.encoded_texts == [] and again.encoded_images == 0
    assert json.dumps(first.metrics, sort_keys=True) == json.dumps(second.metrics, sort_keys=True)


def test_blind_control_scores_grey_images(root: Path) -> None:
    result = evaluate(
        FakeEmbeddingScorer(),
        "dci/base_swaps",
        data_root=root,
        blind=True,
        n_boot=0,
        use_cache=False,
    )
    assert result.config["blind"] is True
    # every grey region gets the same embedding, so each positive score depends on its text only
    frame = result.examples
    assert frame["neg_correct"].tolist() == [
        p[0] > n for p, n in zip(frame["pos_scores"], frame["neg_score"], strict=True)
    ]


def test_split_narrows_retrieval(root: Path) -> None:
    every = evaluate(
        FakeEmbeddingScorer(), "dci/retrieval", data_root=root, n_boot=0, use_cache=False
    )
    test = evaluate(
        FakeEmbeddingScorer(),
        "dci/retrieval",
        data_root=root,
        split="test",
        n_boot=0,
        use_cache=False,
    )
    assert every.metrics["dci/retrieval"]["n"] == 6 and test.metrics["dci/retrieval"]["n"] == 3
    assert every.config["protocols"] == {"dci/retrieval": "lotlip"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"task": "dci/nope"}, UnknownNameError, "unknown task 'dci/nope'"),
        ({"text_policy": "shorten"}, ConfigError, "unknown text policy"),
        ({"n_boot": -1}, ConfigError, "n_boot must be an integer >= 0"),
        ({"ties": "last"}, ConfigError, "unknown tie rule"),
        ({"precison": "fp32"}, ConfigError, "did you mean 'precision'"),
    ],
)
def test_bad_arguments(root: Path, kwargs: dict, error: type, match: str) -> None:
    args = {"task": "dci", "data_root": root, **kwargs}
    with pytest.raises(error, match=match):
        evaluate(FakeEmbeddingScorer(), **args)


def test_not_a_dci_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="densely_captioned_images"):
        evaluate(FakeEmbeddingScorer(), "dci", data_root=tmp_path, use_cache=False)


def test_pair_scorer_on_retrieval_is_a_clear_error(root: Path) -> None:
    with pytest.raises(DensecapError, match="needs an embedding scorer"):
        evaluate(FakePairScorer(), "dci/retrieval", data_root=root, use_cache=False)


def test_pair_scorer_runs_the_subtests(root: Path) -> None:
    result = evaluate(FakePairScorer(), "dci/all_swaps", data_root=root, n_boot=0)
    assert result.metrics["dci/all_swaps"]["n"] == len(result.examples) > 0


@pytest.mark.slow
def test_tiny_open_clip_model_end_to_end(root: Path, tmp_path: Path) -> None:
    from tiny_models import make_tiny_open_clip

    spec = make_tiny_open_clip(tmp_path / "model")
    result = evaluate(spec, "dci", data_root=root, n_boot=20, cache_dir=tmp_path / "cache")
    assert result.model == spec
    for m in result.metrics.values():
        assert m["n"] > 0 and 0.0 <= m["scm"] <= 1.0 and 0.0 <= m["neg"] <= 1.0
    assert result.config["max_text_tokens"] == 77
    assert result.config["diff_position_method"] in ("token_ids", "word_prefix")
