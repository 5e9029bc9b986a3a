"""CLIP_benchmark's zero-shot protocol as tasks ``clip_benchmark/<key>`` (its ``wds`` copies).

As ``clip_benchmark.metrics.zeroshot_classification`` computes it: every class's prompts
(``template.format(c=name)``, the folder's own class names and templates) are encoded, each
normalised, the mean renormalised (the same ensembling as ELEVATER); the scores are the raw
``100 * normalize(img) @ W`` logits in float32 (no softmax); the metrics are acc1, acc5 (null
below 5 classes), mean_per_class_recall, or on a multilabel set (VOC 2007) the non-interpolated
mean_average_precision over all classes (`densecap_eval.metrics.clip_benchmark`). The run
uses the model's own preprocessing and tokenizer, in fp32 (CLIP_benchmark's ``--no_amp``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.core.errors import DataAbsentError, DensecapError
from densecap_eval.datasets.elevater.tasks import classifier
from densecap_eval.datasets.elevater.wds import CLIP_BENCHMARK_NAMES, folder_name
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import ComputeContext, TaskSuite
from densecap_eval.tasks.blocks import planned

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.datasets.elevater.loader import ZeroShotSample
    from densecap_eval.datasets.elevater.wds import ClipBenchmarkDataset
    from densecap_eval.engine.plan import ScoreTable, ScoringPlan


# No per-example outcome column: compare leaves zero-shot metrics out.
CLIP_BENCHMARK_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("acc1"),
    MetricSpec("acc5"),
    MetricSpec("mean_per_class_recall"),
)


@dataclass(frozen=True)
class ClipBenchmarkTask:
    key: str
    dataset: str = "clip_benchmark"
    protocol: str = "clip_benchmark"

    @property
    def name(self) -> str:
        return f"clip_benchmark/{self.key}"

    @property
    def description(self) -> str:
        return f"CLIP_benchmark zero-shot wds/{CLIP_BENCHMARK_NAMES[self.key]}"

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return CLIP_BENCHMARK_METRICS

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(
        self, dataset: ClipBenchmarkDataset, *, split: str | None = None, seed: int = 0
    ) -> ClipBenchmarkInstance:
        del seed
        if split not in (None, "test", "all"):
            raise DensecapError(f"{self.name}: CLIP_benchmark zero-shot uses the test split only")
        if self.key not in dataset.available():
            raise DataAbsentError(
                f"{self.name}: {dataset.root / folder_name(self.key)} is missing (CLIP_benchmark's "
                f"wds/{CLIP_BENCHMARK_NAMES[self.key]} copy); `densecap-eval download "
                f"elevater/{self.key}` says how to get it"
            )
        data = dataset.split(self.key)
        return ClipBenchmarkInstance(
            self.name, self.key, data.classnames, data.templates, data.samples, split=self.key,
            multilabel=data.multilabel,
        )  # fmt: skip


TASKS: dict[str, ClipBenchmarkTask] = {k: ClipBenchmarkTask(k) for k in CLIP_BENCHMARK_NAMES}
SUITE = TaskSuite(
    "clip_benchmark",
    tuple(t.name for t in TASKS.values()),
    "clip_benchmark",
    "CLIP_benchmark's zero-shot protocol on its wds copies of the ELEVATER datasets it has",
)


@dataclass
class ClipBenchmarkInstance:
    task: str
    key: str
    classnames: list[str]
    templates: list[str]
    images: list[ZeroShotSample]
    split: str
    skipped: list[SkippedImage] = field(default_factory=list)
    needs_embedding: bool = True
    multilabel: bool = False  # labels are a 0/1 matrix; the metric is mean_average_precision
    _r: np.ndarray | None = field(default=None, repr=False)
    _t: np.ndarray | None = field(default=None, repr=False)

    def add_to_plan(self, plan: ScoringPlan) -> None:
        self._r = np.array([plan.add_region(Region(str(s.photo))) for s in self.images],
                           dtype=np.int64)  # fmt: skip
        self._t = np.array(
            [[plan.add_text(t.format(c=c)) for t in self.templates] for c in self.classnames],
            dtype=np.int64,
        )

    def logits(self, table: ScoreTable) -> np.ndarray:
        """(N, C) float32 ``100 * normalize(img) @ W``."""
        import torch
        import torch.nn.functional as F

        region_pos, text_pos = planned(self.task, self._r, self._t)
        if table.image_embeddings is None or table.text_embeddings is None:
            raise DensecapError(f"{self.task}: zero-shot classification needs an embedding scorer")
        w = torch.from_numpy(classifier(table.text_embeddings[text_pos]))
        img = F.normalize(torch.from_numpy(np.ascontiguousarray(
            table.image_embeddings[region_pos], dtype=np.float32)), dim=-1)  # fmt: skip
        return (100.0 * img @ w).float().numpy()

    def labels(self) -> np.ndarray:
        """(N,) class indices, or the (N, C) 0/1 matrix of a multilabel set."""
        if not self.multilabel:
            return np.array([s.labels[0] for s in self.images], dtype=np.int64)
        out = np.zeros((len(self.images), len(self.classnames)), dtype=np.int64)
        for i, s in enumerate(self.images):
            out[i, list(s.labels)] = 1
        return out

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        import pandas as pd

        from densecap_eval.metrics.clip_benchmark import clip_benchmark_metrics

        logits = self.logits(table)
        labels = self.labels()
        metrics: dict[str, Any] = dict(clip_benchmark_metrics(labels, logits))
        metrics.update(n=len(self.images), n_classes=len(self.classnames),
                       n_templates=len(self.templates), protocol="clip_benchmark",
                       model_max_text_tokens=ctx.max_text_tokens)  # fmt: skip
        pred = np.argmax(logits, axis=1)
        frame = pd.DataFrame({
            "task": [self.task] * len(self.images),
            "split": [self.split] * len(self.images),
            "image": [s.ref for s in self.images],
            "labels": [list(s.labels) for s in self.images],
            "prediction": pred.astype(np.int64),
            "correct": [int(p) in s.labels for p, s in zip(pred, self.images, strict=True)],
            "logits": [row.tolist() for row in logits],
        })  # fmt: skip
        return metrics, frame


def __getattr__(name: str) -> ClipBenchmarkTask:
    try:
        return TASKS[name]
    except KeyError:
        raise AttributeError(name) from None
