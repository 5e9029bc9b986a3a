"""Zero-shot classification tasks ``elevater/<key>`` and the suite ``elevater``.

Per dataset, as ELEVATER computes it:

1. every class's prompts (each template filled with the class name, catalog order) are
   encoded; each prompt embedding is normalised, the class's mean taken and renormalised: the
   (D, C) classifier, built once per dataset and protocol (the engine encodes a prompt text
   shared by several datasets once);
2. each image embedding is normalised and ``softmax(100 * img @ W)`` computed in float32 (a
   fixed scale of 100: the model's own logit scale is not used);
3. the dataset's metric (`densecap_eval.metrics.zeroshot`) is computed on those probabilities.

Metrics: ``zeroshot`` (the dataset's own metric, the number ELEVATER reports), ``metric`` (its
name), ``top1`` (top-1 accuracy of every single-label dataset, for reference), ``n``, ``n_classes``,
``n_templates``, ``ties`` (images whose top probability is shared: the lowest class index won),
``protocol``. The examples table has one row per image: ``image`` (its ``zip@member``),
``labels``, ``prediction`` (argmax, lowest index on ties), ``correct``, ``top_prob`` and
``probs`` (the float32 probabilities ELEVATER writes as its predictions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.core.errors import DataAbsentError, DensecapError
from densecap_eval.datasets.elevater import catalog
from densecap_eval.datasets.elevater.protocol import ELEVATER_PROTOCOLS, elevater_clean
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks.base import ComputeContext, TaskSuite
from densecap_eval.tasks.blocks import planned

if TYPE_CHECKING:
    import pandas as pd

    from densecap_eval.datasets.elevater.loader import ElevaterDataset, ZeroShotSample
    from densecap_eval.engine.plan import ScoreTable, ScoringPlan

SCALE = 100.0  # ELEVATER's fixed logit scale


# No per-example outcome column: compare leaves zero-shot metrics out.
ZEROSHOT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("zeroshot", label="each dataset's own ELEVATER metric"),
)


@dataclass(frozen=True)
class ZeroShotTask:
    key: str
    dataset: str = "elevater"
    protocol: str = "elevater"
    takes_protocol: bool = True  # evaluation passes the run's --protocol to prepare()

    @property
    def name(self) -> str:
        return f"elevater/{self.key}"

    @property
    def description(self) -> str:
        s = catalog.spec(self.key)
        return f"ELEVATER zero-shot {s.elevater_name}: {len(s.classes)} classes, {s.metric}"

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return ZEROSHOT_METRICS

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(
        self,
        dataset: ElevaterDataset,
        *,
        split: str | None = None,
        seed: int = 0,
        protocol: str = "default",
    ) -> ZeroShotInstance:
        del seed  # nothing random
        if split not in (None, "test", "all"):
            raise DensecapError(f"{self.name}: ELEVATER zero-shot uses the test split only")
        if protocol not in ELEVATER_PROTOCOLS:
            raise DensecapError(
                f"{self.name}: runs protocol default or elevater-dci, not {protocol!r}"
            )
        s = catalog.spec(self.key)
        if self.key not in dataset.available():
            raise DataAbsentError(
                f"{self.name}: {dataset.root / s.root_folder} is missing (ELEVATER's "
                f"{s.elevater_name}); `densecap-eval download elevater/{self.key}` says how to "
                "get it"
            )
        # The loader's "splits" are its datasets: the split is the key (the test split's).
        return ZeroShotInstance(
            self.name, self.key, protocol, dataset.samples(self.key), split=self.key
        )


TASKS: dict[str, ZeroShotTask] = {k: ZeroShotTask(k) for k in catalog.dataset_keys()}
SUITE = TaskSuite(
    "elevater",
    tuple(t.name for t in TASKS.values()),
    "elevater",
    "ELEVATER zero-shot image classification: the 20 datasets the DCI suite runs",
)


def prompt_texts(key: str, protocol: str) -> list[list[str]]:
    """Per class, its prompts as the protocol hands them to the model's tokenizer."""
    s = catalog.spec(key)
    clean = elevater_clean if protocol == "elevater-dci" else (lambda t: t)
    return [[clean(p) for p in s.prompts(c)] for c in range(len(s.classes))]


def classifier(text_embeddings: np.ndarray) -> np.ndarray:
    """(C, T, D) prompt embeddings -> (D, C) weights: per-template normalise, mean, renormalise
    (float32 torch ops, ELEVATER's order)."""
    import torch

    e = torch.from_numpy(np.ascontiguousarray(text_embeddings, dtype=np.float32))
    e = e / e.norm(dim=-1, keepdim=True)
    w = e.mean(1)
    w = w / w.norm(dim=-1, keepdim=True)
    return w.T.contiguous().numpy()


@dataclass
class ZeroShotInstance:
    task: str
    key: str
    protocol: str
    images: list[ZeroShotSample]
    split: str
    skipped: list[SkippedImage] = field(default_factory=list)  # the loader lists bad images
    needs_embedding: bool = True
    _r: np.ndarray | None = field(default=None, repr=False)
    _t: np.ndarray | None = field(default=None, repr=False)  # (C, T) text indices

    def add_to_plan(self, plan: ScoringPlan) -> None:
        self._r = np.array([plan.add_region(Region(str(s.photo))) for s in self.images],
                           dtype=np.int64)  # fmt: skip
        prompts = prompt_texts(self.key, self.protocol)
        self._t = np.array([[plan.add_text(p) for p in row] for row in prompts], dtype=np.int64)

    def probabilities(self, table: ScoreTable) -> np.ndarray:
        """(N, C) float32 ``softmax(100 * normalize(img) @ W)``."""
        from densecap_eval.metrics.zeroshot import softmax_probs

        region_pos, text_pos = planned(self.task, self._r, self._t)
        if table.image_embeddings is None or table.text_embeddings is None:
            raise DensecapError(f"{self.task}: zero-shot classification needs an embedding scorer")
        weights = classifier(table.text_embeddings[text_pos])
        return softmax_probs(table.image_embeddings[region_pos], weights, scale=SCALE)

    def labels(self) -> np.ndarray:
        s = catalog.spec(self.key)
        if s.multilabel:
            out = np.zeros((len(self.images), len(s.classes)), dtype=np.float64)
            for i, img in enumerate(self.images):
                out[i, list(img.labels)] = 1.0
            return out
        return np.array([img.labels[0] for img in self.images], dtype=np.int64)

    def compute(
        self, table: ScoreTable, ctx: ComputeContext
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """The module doc's metrics; ELEVATER's argmax decides ties (lowest index), whatever
        the retrieval tie rule; no bootstrap (ELEVATER reports none)."""
        from densecap_eval.metrics.zeroshot import elevater_metric, top1_accuracy

        s = catalog.spec(self.key)
        probs = self.probabilities(table)
        y = self.labels()
        pred = np.argmax(probs, axis=1)
        top = probs.max(axis=1)
        n_top = (probs == top[:, None]).sum(axis=1)
        if s.multilabel:
            correct = y[np.arange(len(y)), pred] > 0
        else:
            correct = pred == y
        metrics: dict[str, Any] = {
            "zeroshot": elevater_metric(s.metric)(y, probs),
            "metric": s.metric,
            "top1": None if s.multilabel else top1_accuracy(y, probs),
            "n": len(self.images),
            "n_classes": len(s.classes),
            "n_templates": len(s.templates),
            "ties": int((n_top > 1).sum()),
            "protocol": self.protocol,
            "scale": SCALE,
            "model_max_text_tokens": ctx.max_text_tokens,
        }
        return metrics, self._frame(probs, pred, correct, top)

    def _frame(
        self, probs: np.ndarray, pred: np.ndarray, correct: np.ndarray, top: np.ndarray
    ) -> pd.DataFrame:
        import pandas as pd

        n = len(self.images)
        return pd.DataFrame({
            "task": [self.task] * n,
            "split": [self.split] * n,
            "image": [img.ref for img in self.images],
            "labels": [list(img.labels) for img in self.images],
            "prediction": pred.astype(np.int64),
            "correct": np.asarray(correct, dtype=bool),
            "top_prob": top.astype(np.float64),
            "probs": [row.tolist() for row in probs],
        })  # fmt: skip


def __getattr__(name: str) -> ZeroShotTask:
    """``elevater/<key>`` is registered as ``tasks:<key>`` (keys hold hyphens)."""
    try:
        return TASKS[name]
    except KeyError:
        raise AttributeError(name) from None
