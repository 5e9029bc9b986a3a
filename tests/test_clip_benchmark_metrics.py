"""CLIP_benchmark's zero-shot metrics: hand-computed cases, then equality with clip-benchmark
1.6.2's own `evaluate` (run on a stub model, CPU, amp off)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densecap_eval.metrics.clip_benchmark import (
    average_precision_per_class,
    clip_benchmark_metrics,
    mean_per_class_recall,
    topk_accuracy,
)
from densecap_eval.metrics.zeroshot import mean_per_class


def test_hand_computed() -> None:
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [0, 1, 5], [1, 3, 2]])
    labels = np.array([0, 1, 1, 2])
    assert topk_accuracy(labels, logits, 1) == 0.5  # rows 0 and 1
    assert topk_accuracy(labels, logits, 2) == 1.0
    # argmax over all classes: class 1 recall 1/2, class 2 recall 0, class 0 recall 1
    assert mean_per_class_recall(labels, logits) == pytest.approx(0.5, abs=1e-12)
    # the reference's toy: ELEVATER keeps only present classes and gives 1.0 where this is 0.75
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    y = np.array([0, 0, 1, 1])
    assert (mean_per_class_recall(y, probs), mean_per_class(y, probs)) == (0.75, 1.0)
    # AP: class 0 positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1 has none -> 0
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    np.testing.assert_allclose(average_precision_per_class(targets, scores), [5 / 6, 0.0],
                               rtol=1e-6)  # fmt: skip
    assert clip_benchmark_metrics(targets, scores)["mean_average_precision"] == pytest.approx(
        5 / 12, rel=1e-6
    )
    two = clip_benchmark_metrics(np.array([0, 1]), np.array([[1.0, 0], [0, 1.0]]))
    assert two == {"acc1": 1.0, "acc5": None, "mean_per_class_recall": 1.0}


class _Stub(torch.nn.Module):
    """encode_image: a fixed projection of the input; encode_text: an embedding bag."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.img = torch.randn(12, 8, generator=g)
        self.txt = torch.randn(50, 8, generator=g)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.img

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.txt[ids].sum(1)


class _Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: list[str]) -> None:
        self.x, self.y, self.classes = x, y, classes

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def _accuracy_numpy2(output: torch.Tensor, target: torch.Tensor, topk: tuple = (1,)) -> list:
    """clip-benchmark 1.6.2's ``accuracy`` with ``.item()`` where it calls ``float()`` on a
    1-element array (a TypeError under numpy 2); the arithmetic is its own, line for line."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True).item()) / n for k in topk]


@pytest.mark.parametrize(("n_classes", "multilabel"), [(7, False), (3, False), (6, True)])
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_equals_clip_benchmark_evaluate(
    n_classes: int, multilabel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clip_benchmark.metrics import zeroshot_classification as cb
    from clip_benchmark.metrics.zeroshot_classification import (
        evaluate,
        run_classification,
        zero_shot_classifier,
    )

    monkeypatch.setattr(cb, "accuracy", _accuracy_numpy2)

    g = torch.Generator().manual_seed(n_classes)
    x = torch.randn(30, 12, generator=g)
    if multilabel:
        y = (torch.rand(30, n_classes, generator=g) < 0.3).long()
        y[:, 0] = 0  # a class without positives counts 0
    else:
        y = torch.randint(0, n_classes - 1, (30,), generator=g)  # the last class absent
    classes = [f"c{i}" for i in range(n_classes)]
    templates = ["a {c}.", "the {c}"]

    def tokenizer(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[sum(map(ord, t)) % 50, len(t) % 50, 1] for t in texts])

    model = _Stub()
    loader = torch.utils.data.DataLoader(_Data(x, y, classes), batch_size=8)
    expected = evaluate(model, loader, tokenizer, classes, templates, "cpu", amp=False)
    clf = zero_shot_classifier(model, tokenizer, classes, templates, "cpu", amp=False)
    logits, target = run_classification(model, clf, loader, "cpu", amp=False)
    ours = clip_benchmark_metrics(target.numpy(), logits.numpy())
    assert set(ours) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert ours[key] is None  # NaN written as null
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key
