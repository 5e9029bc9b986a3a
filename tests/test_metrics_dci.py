"""The reference's SCM / Neg and per-photo SCM on hand-made score arrays (answers worked by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densecap_eval.metrics import dci


def accuracy(out: dci.Outcome) -> float | None:
    """Share of an outcome's defined examples that are correct (as the tasks' ``accuracy``)."""
    return float(out.correct[out.defined].mean()) if out.n else None


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, []),
        (3, [(0, 3)]),
        (8, [(0, 8)]),
        (10, [(0, 8), (8, 10)]),  # short last group
        (17, [(0, 8), (8, 16), (16, 17)]),
    ],
)
def test_reference_groups(n: int, expected: list[tuple[int, int]]) -> None:
    assert [(g.start, g.stop) for g in dci.reference_groups(n)] == expected


def test_pooled_matrix_takes_max_of_other_bags_and_min_of_own() -> None:
    # B=2 entries, bags of N=2; columns: e0t0, e0t1, e1t0, e1t1
    block = np.array([[5.0, 3.0, 4.0, 6.0], [1.0, 2.0, 7.0, 9.0]])
    pooled = dci.pooled_matrix(block)
    # row 0: own bag min(5,3)=3, entry 1 max(4,6)=6; row 1: entry 0 max(1,2)=2, own min(7,9)=7
    assert pooled.tolist() == [[3.0, 6.0], [2.0, 7.0]]
    correct, tie = dci.scm_block(block)
    assert correct.tolist() == [False, True]
    assert tie.tolist() == [False, False]


@pytest.mark.parametrize(
    ("block", "correct", "tie"),
    [
        # equal row maximum: the first index wins (torch.max / np.argmax)
        ([[5.0, 5.0], [5.0, 5.0]], [True, False], [True, True]),
        (
            [[1.0, 2.0, 2.0], [0.0, 3.0, 3.0], [4.0, 4.0, 4.0]],
            [False, True, False],
            [True, True, True],
        ),
        ([[2.0, 1.0], [0.0, 3.0]], [True, True], [False, False]),
        # a 1-entry group is trivially correct (the reference's last group can be of size 1)
        ([[-3.0]], [True], [False]),
    ],
)
def test_scm_block_ties_first_index(
    block: list[list[float]], correct: list[bool], tie: list[bool]
) -> None:
    got_correct, got_tie = dci.scm_block(np.array(block))
    assert got_correct.tolist() == correct
    assert got_tie.tolist() == tie


def _spanning_case() -> tuple[np.ndarray, list[str]]:
    """10 entries of photos a (0-2), b (3-8), c (9): group 0 = 0..7 spans a and b, group 1 = 8, 9."""
    images = ["a"] * 3 + ["b"] * 6 + ["c"]
    scores = np.eye(10)
    scores[2, 5] = 5.0  # a's entry 2 prefers b's entry 5: same reference group, other photo
    scores[8, 4] = 5.0  # b's entry 8 prefers b's entry 4: other reference group, same photo
    return scores, images


def test_scm_reference_groups_span_photos_and_last_group_is_short() -> None:
    scores, _ = _spanning_case()
    out = dci.scm_reference(scores)
    expected = [True] * 10
    expected[2] = False  # competes with entry 5 in group 0
    assert out.correct.tolist() == expected  # entry 8 only competes with entry 9
    assert accuracy(out) == pytest.approx(0.9)
    assert out.n == 10 and out.defined.all()


def test_scm_per_image_groups_by_photo_and_excludes_single_entry_photos() -> None:
    scores, images = _spanning_case()
    out = dci.scm_per_image(scores, images)
    assert out.defined.tolist() == [True] * 9 + [False]  # photo c has one entry
    expected = [True] * 9 + [False]
    expected[8] = False  # competes with entry 4 of the same photo
    assert out.correct.tolist() == expected
    assert out.n == 9
    assert accuracy(out) == pytest.approx(8 / 9)


def test_scm_per_image_all_single_is_undefined() -> None:
    out = dci.scm_per_image(np.eye(3), ["a", "b", "c"])
    assert accuracy(out) is None and out.n == 0 and not out.defined.any()


def test_scm_reference_with_bags() -> None:
    # 2 entries, bags of 2: scores[i, j, k] = image i vs text k of entry j's bag
    scores = np.zeros((2, 2, 2))
    scores[0, 0] = [5.0, 3.0]  # own bag min 3
    scores[0, 1] = [4.0, 6.0]  # max 6 > 3: wrong, although own max 5 > other min 4
    scores[1, 0] = [1.0, 2.0]
    scores[1, 1] = [7.0, 9.0]
    assert dci.scm_reference(scores).correct.tolist() == [False, True]


@pytest.mark.parametrize(
    ("pos", "neg", "correct", "tie"),
    [
        ([3.0, 2.0], 1.9, True, False),
        ([3.0, 2.0], 2.0, False, True),  # equal to the bag minimum: strict > fails
        ([3.0, 2.0], 2.5, False, False),  # beats the bag max but not its min
        ([1.0], 1.0, False, True),
        ([1.0], 0.0, True, False),
    ],
)
def test_neg_is_strict_against_bag_minimum(
    pos: list[float], neg: float, correct: bool, tie: bool
) -> None:
    out = dci.neg_outcome(np.array([pos]), np.array([neg]))
    assert out.correct.tolist() == [correct]
    assert out.tie.tolist() == [tie]


def test_neg_outcome_accuracy_over_rows() -> None:
    out = dci.neg_outcome(
        np.array([[3.0, 2.0], [1.0, 1.0], [0.0, 5.0]]), np.array([1.0, 1.0, -1.0])
    )
    assert out.correct.tolist() == [True, False, True]
    assert accuracy(out) == pytest.approx(2 / 3)


def _torch_reference(logits: torch.Tensor) -> list[int]:
    """The reference script's SCM lines, reimplemented with its reshape and torch.max."""
    b = logits.shape[0]
    grouped = logits.reshape((b, b, logits.shape[1] // b))
    similarity = torch.max(grouped, dim=2).values
    diag = torch.min(grouped, dim=2).values.diag()
    similarity[range(b), range(b)] = diag
    return [int(i == m) for i, m in enumerate(torch.max(similarity, dim=1).indices)]


@pytest.mark.parametrize(("n", "bag"), [(8, 1), (8, 5), (5, 5), (3, 1)])
def test_scm_block_matches_torch_formula_with_many_ties(n: int, bag: int) -> None:
    rng = np.random.default_rng(n * 10 + bag)
    for _ in range(50):
        block = rng.integers(0, 3, size=(n, n * bag)).astype(np.float32)  # ties everywhere
        want = _torch_reference(torch.from_numpy(block.copy()))
        assert dci.scm_block(block)[0].astype(int).tolist() == want


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="multiple"):
        dci.pooled_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dense scores"):
        dci.scm_reference(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="negative scores"):
        dci.neg_outcome(np.zeros((2, 1)), np.zeros(3))
