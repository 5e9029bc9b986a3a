"""ELEVATER's zero-shot metrics: hand-computed cases, then equality with vision-evaluation 0.2.9
(ELEVATER's own metric package, called the way ELEVATER's ``evaluation/metric.py`` calls it)."""

from __future__ import annotations

import numpy as np
import pytest

from densecap_eval.metrics.zeroshot import (
    elevater_metric,
    ensemble_weights,
    map_11_point,
    mean_per_class,
    roc_auc,
    softmax_probs,
    top1_accuracy,
)

CASES = [
    # (metric, labels, scores, expected, why)
    ("accuracy", [0, 0, 0], [[0.5, 0.5], [0.2, 0.8], [0.6, 0.4]], 2 / 3, "tie -> first index"),
    ("accuracy", [1, 1], [[0.5, 0.5], [0.5, 0.5]], 0.0, "all ties go to class 0"),
    # class 2 is absent: row 4's argmax over all classes is 2, over the present {0, 1} it is 1.
    ("mean-per-class", [0, 0, 1, 1],
     [[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]], 1.0, "column filter"),
    ("mean-per-class", [0, 0, 1, 1],
     [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]], 0.5, "recalls 1/2, 1/2"),
    # class 0: positives ranked 1st and 3rd -> precision 1 up to recall 1/2, 2/3 after:
    # (5 * 2/3 + 6 * 1) / 11; class 1 has no positive and is dropped.
    ("11point_mAP", [[1, 0], [0, 0], [1, 0], [0, 0]],
     [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]], 28 / 33, "11 points, empty column"),
    ("roc_auc", [0, 1, 0, 1], [[0.9, 0.1], [0.7, 0.3], [0.65, 0.35], [0.2, 0.8]], 0.75, "3 of 4"),
    ("roc_auc", [0, 1, 0, 1], [[0.9, 0.1], [0.65, 0.35], [0.65, 0.35], [0.2, 0.8]], 0.875, "tie"),
]  # fmt: skip


@pytest.mark.parametrize(("metric", "labels", "scores", "expected", "why"), CASES)
def test_hand_computed(metric: str, labels: list, scores: list, expected: float, why: str) -> None:
    got = elevater_metric(metric)(np.array(labels), np.array(scores, dtype=np.float32))
    assert got == pytest.approx(expected, abs=1e-12), why


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="11point_mAP"):
        elevater_metric("top5")


def _reference(metric: str, labels: np.ndarray, probs: np.ndarray) -> float:
    """vision_benchmark/evaluation/metric.py's four functions, on vision-evaluation 0.2.9."""
    import vision_evaluation.evaluators as v_eval
    from sklearn.metrics import roc_auc_score

    if metric == "accuracy":
        ev = v_eval.TopKAccuracyEvaluator(1)
        ev.add_predictions(predictions=probs, targets=labels)
        return float(ev.get_report()["accuracy_top1"])
    if metric == "mean-per-class":
        bal = v_eval.BalancedAccuracyScoreEvaluator()
        bal.add_predictions(probs, labels)
        return float(bal.get_report()[bal._get_id()])
    if metric == "11point_mAP":
        mp = v_eval.MeanAveragePrecisionNPointsEvaluator(11)
        mp.add_predictions(predictions=probs, targets=labels)
        return float(mp.get_report()[mp._get_id()])
    return float(roc_auc_score(labels, probs[:, 1]))


@pytest.mark.parametrize("seed", range(4))
def test_equals_vision_evaluation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 40, 6
    img = rng.normal(size=(n, 8)).astype(np.float32)
    w = np.stack([ensemble_weights(rng.normal(size=(3, 8))) for _ in range(c)], axis=1)
    probs = softmax_probs(img, w)  # float32, saturated rows included
    assert probs.dtype == np.float32
    labels = rng.integers(0, c - 1, size=n)  # the last class never occurs
    multi = (rng.random((n, c)) < 0.3).astype(np.float64)
    multi[:, 2] = 0  # a class without positives
    two = softmax_probs(img, w[:, :2])
    cases = [
        ("accuracy", labels, probs),
        ("mean-per-class", labels, probs),
        ("11point_mAP", multi, probs),
        ("roc_auc", labels % 2, two),
    ]
    for metric, y, p in cases:
        assert elevater_metric(metric)(y, p) == pytest.approx(_reference(metric, y, p), abs=1e-12)


def test_softmax_saturates_like_float32() -> None:
    img = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # logit gap 100 -> p == 1.0
    probs = softmax_probs(img, w)
    assert probs[0, 0] == np.float32(1.0) and probs[1, 1] == np.float32(1.0)
    assert roc_auc(np.array([0, 1]), probs) == 1.0
    assert top1_accuracy(np.array([0, 1]), probs) == 1.0
    assert mean_per_class(np.array([0, 1]), probs) == 1.0
    assert map_11_point(np.array([[1, 0], [0, 1]]), probs) == 1.0


def test_ensemble_normalises_each_template_first() -> None:
    # Mean of the raw rows would point along x (the long row dominates); per-template
    # normalisation gives the 45-degree direction.
    w = ensemble_weights(np.array([[10.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(w, [2**-0.5, 2**-0.5], rtol=1e-6)
