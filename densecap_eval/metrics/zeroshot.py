"""Zero-shot classification metrics as ELEVATER computes them (vision-evaluation 0.2.9).

Pure functions of (labels, scores). ``scores`` is (N, C): ELEVATER hands its metrics the float32
softmax of ``100 * cos``, and the ranking metrics (AP, AUC) depend on that exact array, ties
from float32 saturation included, so callers pass it unchanged.

- `top1_accuracy`: ``argmax`` per row (the first maximum wins a tie), correct / N.
- `mean_per_class`: only the classes with at least one positive are kept (columns); the
  argmax of the scores is taken over those columns alone, then the mean of per-class recalls
  (sklearn's ``balanced_accuracy_score``). A prediction can never land on an absent class.
- `map_11_point`: the same column filter; per kept class the 11-point interpolated AP from
  sklearn's precision-recall curve (scanned in its order, recall decreasing); mean over classes.
- `roc_auc`: sklearn's ``roc_auc_score`` on the second column when there are two.

`elevater_metric` dispatches on the metric names of ELEVATER's dataset files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ELEVATER_METRICS: tuple[str, ...] = ("accuracy", "mean-per-class", "11point_mAP", "roc_auc")


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Multiclass int labels (N,) -> (N, C) 0/1; a (N, C) multilabel matrix passes through."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels
    out = np.zeros((len(labels), n_classes), dtype=int)
    out[np.arange(len(labels)), labels.astype(np.int64)] = 1
    return out


def _present_columns(targets: np.ndarray) -> np.ndarray:
    """Indices of the classes with at least one positive (ELEVATER's column filter)."""
    return np.where(~np.all(targets == 0, axis=0))[0]


def top1_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of rows whose first maximum is the label (0.0 for no rows, as ELEVATER)."""
    labels = np.asarray(labels).reshape(-1)
    if not len(labels):
        return 0.0
    pred = np.argmax(np.asarray(scores), axis=1)
    return float(np.sum(pred == labels)) / len(labels)


def mean_per_class(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-class recall over the classes present, argmax restricted to them (module doc)."""
    from sklearn.metrics import balanced_accuracy_score

    scores = np.asarray(scores)
    targets = _one_hot(np.asarray(labels).reshape(-1), scores.shape[1])
    keep = _present_columns(targets) if targets.size else np.zeros(0, dtype=np.int64)
    if not keep.size:
        return 0.0
    truth = np.argmax(targets[:, keep], axis=1)
    pred = np.argmax(scores[:, keep], axis=1)
    return float(balanced_accuracy_score(truth, pred))


def _ap_n_points(targets: np.ndarray, scores: np.ndarray, n_points: int) -> float:
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(targets, scores)
    total = 0.0
    idx = 0
    best = 0.0
    for threshold in np.linspace(1, 0, n_points, endpoint=True).tolist():
        # sklearn lists recall decreasing: every point at or above the threshold counts.
        while idx < len(recall) and threshold <= recall[idx]:
            best = max(best, precision[idx])
            idx += 1
        total += best
    return float(total / n_points)


def map_11_point(labels: np.ndarray, scores: np.ndarray) -> float:
    """11-point interpolated mAP over the classes with a positive (module doc)."""
    scores = np.asarray(scores)
    targets = _one_hot(np.asarray(labels), scores.shape[1])
    keep = _present_columns(targets) if targets.size else np.zeros(0, dtype=np.int64)
    if not keep.size:
        return 0.0
    aps = [_ap_n_points(targets[:, c], scores[:, c], 11) for c in keep]
    return float(np.mean(aps))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of the positive class (column 1 of a two-column score matrix)."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores)
    y = np.asarray(labels).reshape(-1)
    return float(roc_auc_score(y, scores[:, 1] if scores.shape[1] == 2 else scores))


_BY_NAME: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": top1_accuracy,
    "mean-per-class": mean_per_class,
    "11point_mAP": map_11_point,
    "roc_auc": roc_auc,
}


def elevater_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric function for an ELEVATER ``TEST.METRIC`` name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown ELEVATER metric {name!r}; known: {', '.join(_BY_NAME)}"
        ) from None


def softmax_probs(
    image_emb: np.ndarray, weights: np.ndarray, *, scale: float = 100.0
) -> np.ndarray:
    """ELEVATER's scores: ``softmax(scale * normalize(img) @ W)`` in float32 with torch's ops.

    ``image_emb`` is (N, D), ``weights`` (D, C) the class classifier. Computed with torch so the
    float32 rounding (and so the ties of saturated probabilities) is the reference's.
    """
    import torch
    import torch.nn.functional as F

    img = F.normalize(torch.from_numpy(np.ascontiguousarray(image_emb, dtype=np.float32)))
    w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))
    return (scale * img @ w).softmax(dim=-1).numpy()


def ensemble_weights(template_emb: np.ndarray) -> np.ndarray:
    """One class's classifier column from its (T, D) template embeddings: each normalised, the
    mean taken, the mean renormalised (ELEVATER and CLIP_benchmark alike), in float32 torch."""
    import torch

    e = torch.from_numpy(np.ascontiguousarray(template_emb, dtype=np.float32))
    e = e / e.norm(dim=-1, keepdim=True)
    w = e.mean(0)
    w = w / w.norm()
    return w.numpy()
