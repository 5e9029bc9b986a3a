"""Zero-shot classification metrics as CLIP_benchmark computes them (1.6.x,
``clip_benchmark/metrics/zeroshot_classification.py``), for its protocol.

Pure functions of (labels, logits). CLIP_benchmark hands its metrics the raw ``100 * cos``
logits (no softmax), so AP ranks by logits.

- single label: ``acc1`` / ``acc5`` from ``torch.topk`` (order among equal logits is torch's:
  recorded, not fixed), ``acc5`` NaN below 5 classes (written as null in our JSON);
  ``mean_per_class_recall`` = sklearn's ``balanced_accuracy_score`` of the argmax over ALL
  classes (unlike ELEVATER, a prediction may land on a class absent from the labels).
- multilabel: ``mean_average_precision``, non-interpolated AP per class (descending
  ``torch.sort``; precision at each positive's rank; divided by ``max(#positives, 1)``, so a
  class without positives counts 0), averaged over all classes.
"""

from __future__ import annotations

import math

import numpy as np


def topk_accuracy(labels: np.ndarray, logits: np.ndarray, k: int) -> float:
    """Share of rows whose label is among ``torch.topk``'s k largest logits."""
    import torch

    out = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1))
    pred = out.topk(k, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return float(correct[:k].reshape(-1).float().sum().item()) / len(target)


def mean_per_class_recall(labels: np.ndarray, logits: np.ndarray) -> float:
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    pred = np.argmax(np.asarray(logits), axis=1)
    with warnings.catch_warnings():  # a prediction on an absent class is this metric's rule
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(np.asarray(labels).reshape(-1), pred))


def average_precision_per_class(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """(C,) non-interpolated AP of each class (module doc), float32 as CLIP_benchmark's."""
    import torch

    scores = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    truth_all = torch.from_numpy(np.asarray(targets))
    ap = torch.zeros(scores.size(1))
    ranks = torch.arange(1, scores.size(0) + 1).float()
    for k in range(scores.size(1)):
        _, order = torch.sort(scores[:, k], 0, True)
        truth = truth_all[:, k][order]
        precision = truth.float().cumsum(0).div(ranks)
        ap[k] = precision[truth.bool()].sum() / max(float(truth.sum()), 1)
    return ap.numpy()


def clip_benchmark_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float | None]:
    """CLIP_benchmark's metric dict for (N,) int labels or a (N, C) 0/1 multilabel matrix."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        import torch

        ap = torch.from_numpy(average_precision_per_class(labels, logits))
        return {"mean_average_precision": float(ap.mean().item())}  # torch's float32 mean
    n_classes = np.asarray(logits).shape[1]
    acc5 = topk_accuracy(labels, logits, 5) if n_classes >= 5 else math.nan
    return {
        "acc1": topk_accuracy(labels, logits, 1),
        "acc5": None if math.isnan(acc5) else acc5,  # CLIP_benchmark writes a bare NaN
        "mean_per_class_recall": mean_per_class_recall(labels, logits),
    }
