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
    c = paired.paired_counts(a, b)
    assert (c.n, c.both_correct, c.both_wrong, c.only_a, c.only_b) == (5, 2, 1, 1, 1)


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


# Sign-flip test over photos. Exact cases enumerate the 2**m flips of the m nonzero d_c by hand.
@pytest.mark.parametrize(
    ("d", "n", "statistic", "p", "n_nonzero"),
    [
        # d = [+2, +1, -1], T_obs = 2: signed sums 4, 2, 2, 0, 0, -2, -2, -4; |T*| >= 2 in 6 of 8
        ([2, 1, -1], 5, 2 / 5, 6 / 8, 3),
        ([1, 1, 1], None, 1.0, 2 / 8, 3),  # only +3 and -3 reach |3|
        ([2, 1, 1, 0], 8, 4 / 8, 2 / 8, 3),  # a photo with d = 0 never changes the sum
        ([1, 2, 3], None, 2.0, 2 / 8, 3),  # sums 6, 0, 2, -4, 4, -2, 0, -6: only +-6 reach 6
        ([4, -1, -1], 6, 2 / 6, 1.0, 3),  # sums 6, 4, 4, 2, -2, -4, -4, -6: all reach |2|
        ([3, -1], 4, 2 / 4, 1.0, 2),  # sums 4, 2, -2, -4
        ([1, -1], 2, 0.0, 1.0, 2),  # no difference at all
        ([3], 3, 1.0, 1.0, 1),  # one photo can never be significant
        ([1] * 5, 5, 1.0, 2 / 32, 5),
        ([0, 0], 4, 0.0, 1.0, 0),
        ([], None, 0.0, 1.0, 0),
    ],
)
def test_sign_flip_test_exact_cases(
    d: list[int], n: int | None, statistic: float, p: float, n_nonzero: int
) -> None:
    result = paired.sign_flip_test(d, n=n)
    assert result.statistic == pytest.approx(statistic)
    assert result.p_value == pytest.approx(p, rel=1e-12)
    assert (result.n_clusters, result.n_nonzero) == (len(d), n_nonzero)
    assert result.exact and result.n_perm == 2**n_nonzero
    # the test is two-sided: flipping every sign (A and B swapped) gives the same p
    assert paired.sign_flip_test([-x for x in d], n=n).p_value == result.p_value


def test_compare_uses_the_default_number_of_flips() -> None:
    from densecap_eval.results import compare

    assert compare.DEFAULT_N_PERM == paired.DEFAULT_N_PERM


def test_sign_flip_exact_at_the_limit() -> None:
    result = paired.sign_flip_test([1] * 20)
    assert result.exact and result.n_perm == 2**20
    assert result.p_value == pytest.approx(2 / 2**20, rel=1e-12)
    assert not paired.sign_flip_test([1] * 21, n_perm=99).exact


@pytest.mark.parametrize(("only_a", "only_b"), [(5, 0), (1, 4), (3, 3), (10, 2), (0, 1), (7, 12)])
def test_sign_flip_with_one_example_per_photo_is_mcnemar(only_a: int, only_b: int) -> None:
    # every photo holds one example: d_c in {+1, -1} is a discordant pair, d_c = 0 a concordant
    # one, and the exact sign-flip test is the exact McNemar (binomial) test
    d = [1] * only_b + [-1] * only_a + [0] * 4
    assert paired.sign_flip_test(d).p_value == pytest.approx(
        paired.mcnemar_exact(only_a, only_b), rel=1e-12
    )


def test_sign_flip_monte_carlo_is_seeded_and_close_to_exact() -> None:
    d = [2] * 9 + [1] * 8 + [-1] * 7 + [-2] * 2 + [0] * 3  # 26 nonzero photos: Monte Carlo
    exact = paired.sign_flip_test(d, exact_limit=26).p_value
    mc = paired.sign_flip_test(d, n_perm=20_000, seed=3)
    assert not mc.exact and mc.n_perm == 20_000 and mc.n_nonzero == 26
    assert mc.p_value == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20_000))
    assert paired.sign_flip_test(d, n_perm=20_000, seed=3) == mc
    assert paired.sign_flip_test(d, n_perm=20_000, seed=4).p_value != mc.p_value
    # the +1 correction: (1 + hits) / (1 + n_perm), never 0
    hits = mc.p_value * 20_001 - 1
    assert hits == pytest.approx(round(hits))
    far = paired.sign_flip_test([5] * 40, n_perm=999)
    assert far.p_value == pytest.approx(1 / 1000)


def test_paired_sign_flip_test_from_flags() -> None:
    # photos p (3 examples), q (2), r (1): d = [+2, +1, -1] as in the hand-enumerated case
    a = np.array([0, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 1, 1, 1, 1, 0], dtype=bool)
    clusters = ["p", "p", "p", "q", "q", "r"]
    assert list(paired.cluster_differences(a, b, clusters)) == [2, 1, -1]
    result = paired.paired_sign_flip_test(a, b, clusters)
    assert result.statistic == pytest.approx(b.mean() - a.mean())
    assert (result.p_value, result.n_clusters) == (0.75, 3)
    # the same flags taken as independent examples: McNemar gives a smaller p
    assert paired.mcnemar_exact(1, 3) == pytest.approx(0.625)


def test_sign_flip_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n_perm"):
        paired.sign_flip_test([1, 2], n_perm=0)
    with pytest.raises(ValueError, match="finite"):
        paired.sign_flip_test([1.0, float("nan")])
    with pytest.raises(ValueError, match="shapes"):
        paired.cluster_differences(np.ones(2), np.ones(3), ["p", "q"])
    with pytest.raises(ValueError, match="cluster labels"):
        paired.cluster_differences(np.ones(2), np.ones(2), ["p"])


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
    from densecap_eval.metrics.tokens import _clip_tokenizer

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
