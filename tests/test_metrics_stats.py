"""Cluster bootstrap, paired statistics and length/position buckets, with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from densecap_eval.metrics import bootstrap, length, paired


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [
        (0, 0, 1.0),
        (5, 0, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
        (1, 4, 2 * (1 + 5) / 32),
        (3, 3, 1.0),  # 2 * 42/64 > 1: capped
        (10, 2, 2 * (1 + 12 + 66) / 4096),
        (0, 1, 1.0),
    ],
)
def test_mcnemar_exact_small_cases(only_a: int, only_b: int, p: float) -> None:
    assert paired.mcnemar_exact(only_a, only_b) == pytest.approx(p, rel=1e-12)
    assert paired.mcnemar_exact(only_b, only_a) == pytest.approx(p, rel=1e-12)


def test_mcnemar_log_space_path_agrees_with_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    exact = paired.mcnemar_exact(60, 40)
    monkeypatch.setattr(paired, "_EXACT_LIMIT", 0)
    assert paired.mcnemar_exact(60, 40) == pytest.approx(exact, rel=1e-9)


def test_paired_counts() -> None:
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 1], dtype=bool)
    c = paired.paired_counts(a, b, tie_a=np.array([0, 1, 0, 0, 0]), tie_b=np.zeros(5))
    assert (c.n, c.both_correct, c.both_wrong, c.only_a, c.only_b) == (5, 2, 1, 1, 1)
    assert (c.ties_a, c.ties_b) == (1, 0)


def test_resample_weights_draw_as_many_clusters_as_there_are() -> None:
    w = bootstrap.resample_weights(7, n_boot=50, rng=np.random.default_rng(0))
    assert w.shape == (50, 7)
    assert (w.sum(axis=1) == 7).all()


def test_bootstrap_resamples_whole_clusters() -> None:
    # photo a: all correct, photo b: all wrong, 3 entries each. Resampling photos can only give
    # means 0, 1/2 or 1; resampling entries would give sixths.
    values = np.array([1, 1, 1, 0, 0, 0], dtype=float)
    clusters = ["a", "a", "a", "b", "b", "b"]
    stats = bootstrap.cluster_bootstrap_stats({"acc": values}, clusters, n_boot=400, seed=3)["acc"]
    assert set(np.unique(stats).tolist()) == {0.0, 0.5, 1.0}
    assert bootstrap.cluster_bootstrap_ci(values, clusters, n_boot=400, seed=3) == (0.0, 1.0)


def test_bootstrap_unequal_cluster_sizes_weigh_by_size() -> None:
    # a has 3 correct entries, b 1 wrong: drawing {a, b} gives 3/4, not 1/2
    stats = bootstrap.cluster_bootstrap_stats(
        {"acc": np.array([1.0, 1.0, 1.0, 0.0])}, ["a", "a", "a", "b"], n_boot=300, seed=0
    )["acc"]
    assert set(np.unique(stats).tolist()) == {0.0, 0.75, 1.0}


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(1)
    values = rng.random(200) < 0.6
    clusters = np.repeat(np.arange(40), 5)
    first = bootstrap.cluster_bootstrap_ci(values, clusters, n_boot=500, seed=7)
    again = bootstrap.cluster_bootstrap_ci(values, clusters, n_boot=500, seed=7)
    other = bootstrap.cluster_bootstrap_ci(values, clusters, n_boot=500, seed=8)
    assert first == again
    assert first != other
    assert first is not None and first[0] < values.mean() < first[1]


def test_bootstrap_edge_cases() -> None:
    assert bootstrap.cluster_bootstrap_ci(np.array([1.0, 0.0]), ["a", "a"], n_boot=50) == (0.5, 0.5)
    assert bootstrap.cluster_bootstrap_ci(np.array([1.0]), ["a"], n_boot=0) is None
    assert bootstrap.cluster_bootstrap_ci(np.array([]), [], n_boot=10) is None
    # NaN values are left out of the metric (undefined examples)
    cis = bootstrap.cluster_bootstrap_cis(
        {"x": np.array([1.0, np.nan, 1.0]), "y": np.array([np.nan, np.nan, np.nan])},
        ["a", "b", "c"],
        n_boot=100,
    )
    assert cis == {"x": (1.0, 1.0), "y": None}


def test_paired_cluster_bootstrap_of_difference() -> None:
    a = np.array([0, 0, 1, 1], dtype=bool)
    assert paired.paired_cluster_bootstrap(a, a, ["p", "p", "q", "q"], n_boot=100) == (0.0, 0.0)
    # b is right everywhere a is wrong, in photo p only: differences 1,1,0,0 by photo p / q
    b = np.array([1, 1, 1, 1], dtype=bool)
    lo, hi = paired.paired_cluster_bootstrap(a, b, ["p", "p", "q", "q"], n_boot=400, seed=0)
    assert (lo, hi) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("n", "bucket"),
    [
        (1, "<=77"),
        (77, "<=77"),
        (78, "78-154"),
        (154, "78-154"),
        (155, "155-248"),
        (248, "155-248"),
        (249, ">248"),
    ],
)
def test_length_bucket(n: int, bucket: str) -> None:
    assert length.length_bucket(n) == bucket


@pytest.mark.parametrize(
    ("pos", "bucket"),
    [
        (None, None),
        (0, "0-19"),
        (19, "0-19"),
        (20, "20-39"),
        (59, "40-59"),
        (60, "60-76"),
        (76, "60-76"),
        (77, "77+"),
    ],
)
def test_position_bucket(pos: int | None, bucket: str | None) -> None:
    assert length.position_bucket(pos) == bucket


@pytest.mark.parametrize(
    ("a", "b", "pos"),
    [
        ([49406, 1, 2, 49407], [49406, 1, 3, 49407], 2),
        ([1, 2, 3], [1, 2], 2),
        ([1, 2], [1, 2], None),
        ([5], [6], 0),
    ],
)
def test_first_diff_position(a: list[int], b: list[int], pos: int | None) -> None:
    assert length.first_diff_position(a, b) == pos


def _fake_count_tokens(texts: list[str]) -> list[int]:
    return [len(t.split()) + 2 for t in texts]


def _fake_tokenize_ids(texts: list[str]) -> list[list[int]]:
    return [[0, *(hash(w) % 1000 + 10 for w in t.split()), 1] for t in texts]


PAIRS = [
    ("a red cat sits", "a blue cat sits", 2),  # start=0, "a"=1, "red"=2
    ("red cat", "blue cat", 1),
    ("a cat on a mat", "a cat on a hat", 5),
    ("same text", "same text", None),
    ("a cat", "a cat sits", 3),  # the negative's extra word replaces the end token
]


def test_diff_positions_by_words_and_ids_agree() -> None:
    pairs = [(p, n) for p, n, _ in PAIRS]
    want = [w for _, _, w in PAIRS]
    assert length.diff_positions_by_words(pairs, _fake_count_tokens) == want
    assert length.diff_positions_by_ids(pairs, _fake_tokenize_ids) == want


def test_diff_positions_words_method_matches_clip_bpe() -> None:
    from densecap_eval.tokens import _clip_tokenizer

    tok = _clip_tokenizer()  # shared with other tests in the process

    def ids(texts: list[str]) -> list[list[int]]:
        return [[49406, *tok.encode(t), 49407] for t in texts]

    def counts(texts: list[str]) -> list[int]:
        return [len(x) for x in ids(texts)]

    pairs = [
        (
            "a photograph of an unbelievably colourful parrot on a branch",
            "a photograph of an unbelievably colourful parrot under a branch",
        ),
        (
            "The kitchen has white cabinets and a stainless refrigerator.",
            "The kitchen has black cabinets and a stainless refrigerator.",
        ),
        ("two dogs", "three dogs"),
    ]
    by_ids = length.diff_positions_by_ids(pairs, ids)
    assert length.diff_positions_by_words(pairs, counts) == by_ids
    assert by_ids[2] == 1


def test_diff_position_fn_prefers_token_ids() -> None:
    class WithIds:
        def count_tokens(self, texts: list[str]) -> list[int]:
            raise AssertionError("not used when token ids are offered")

        def tokenize_ids(self, texts: list[str]) -> list[list[int]]:
            return _fake_tokenize_ids(texts)

    class CountsOnly:
        def count_tokens(self, texts: list[str]) -> list[int]:
            return _fake_count_tokens(texts)

    fn, method = length.diff_position_fn(WithIds())
    assert method == "token_ids" and fn([("a b", "a c")]) == [2]
    fn, method = length.diff_position_fn(CountsOnly())
    assert method == "word_prefix" and fn([("a b", "a c")]) == [2]
