"""Checks that need a CUDA device: low precision against fp32, a real out-of-memory back-off,
pinned host memory for region batches. Skipped where CUDA is not available.

    pytest -q -s -m gpu tests/test_gpu.py     # -s shows the measured differences

The precision checks print (and record as junit properties) the largest |score difference| over
the examples table's score columns and the number of flipped outcomes, and assert loose bounds:
they are a record of what fp16 / bf16 cost on the bundled model, not a parity claim.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

import densecap_eval
from densecap_eval import load_scorer
from densecap_eval.core.paths import bundled_sample_root
from densecap_eval.datasets.regions import Region
from densecap_eval.engine import ScoringPlan, score_plan
from densecap_eval.engine.engine import _iter_batches, _RegionBatches
from densecap_eval.synth import generate_dci

pytestmark = pytest.mark.gpu

SPEC = "builtin:tiny"
KEYS = ["task", "image", "entry_key", "negative_key"]
OUTCOMES = ["scm_correct", "scm_per_image_correct", "neg_correct"]
# Largest |score - fp32 score| allowed, in the model's logit units (the tiny model's scores span
# about -5 .. 15 on the sample; bf16 on the CPU moves them by under 0.1).
MAX_SCORE_DIFF = {"fp16": 0.25, "bf16": 1.0}


# -- (a) fp16 / bf16 against fp32 ------------------------------------------------------------


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    synthetic = tmp_path_factory.mktemp("synth")
    generate_dci(synthetic, images=16, seed=0, split_sizes=(0, 0, 16))
    return {"sample": bundled_sample_root(), "synthetic": synthetic}


_EXAMPLES: dict[tuple[str, str], pd.DataFrame] = {}


def _examples(data_roots: dict[str, Path], data: str, precision: str) -> pd.DataFrame:
    if (data, precision) not in _EXAMPLES:
        result = densecap_eval.evaluate(
            SPEC,
            "dci",
            data_root=data_roots[data],
            precision=precision,
            device="cuda",
            use_cache=False,
            n_boot=0,
            progress=False,
        )
        assert result.config["precision"] == precision
        assert result.config["device"].startswith("cuda")
        _EXAMPLES[data, precision] = result.examples
    return _EXAMPLES[data, precision]


def _scores(frame: pd.DataFrame) -> np.ndarray:
    """Every score of the table: each row's positives' scores, then its negative's."""
    pos = [float(s) for row in frame["pos_scores"] for s in row]
    return np.asarray(pos + frame["neg_score"].astype(float).tolist(), dtype=np.float64)


@pytest.mark.parametrize("data", ["sample", "synthetic"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_against_fp32(
    data_roots: dict[str, Path],
    record_property: Any,
    data: str,
    precision: str,
) -> None:
    ref = _examples(data_roots, data, "fp32")
    low = _examples(data_roots, data, precision)
    assert len(ref) > 0
    # Same examples in the same order: only the scores may differ.
    pd.testing.assert_frame_equal(ref[KEYS], low[KEYS])
    assert [len(r) for r in ref["pos_scores"]] == [len(r) for r in low["pos_scores"]]

    diff = float(np.abs(_scores(ref) - _scores(low)).max())
    flips = {
        col: int((ref[col].astype("boolean") != low[col].astype("boolean")).fillna(False).sum())
        for col in OUTCOMES
    }
    n_outcomes = len(ref) * len(OUTCOMES)
    print(
        f"\n{precision} vs fp32 on {data} ({len(ref)} examples): "
        f"max |score diff| {diff:.4g}, flipped {sum(flips.values())} of {n_outcomes} ({flips})"
    )
    record_property(f"{precision}_{data}_max_score_diff", diff)
    record_property(f"{precision}_{data}_flipped", sum(flips.values()))
    assert diff <= MAX_SCORE_DIFF[precision]
    # A flip needs a near-tie in fp32; a few are expected, many would mean a broken cast.
    assert sum(flips.values()) <= max(3, n_outcomes // 10)


# -- (b) a real CUDA out-of-memory error -----------------------------------------------------


def _region_plan(folder: Path, *, photos: int, boxes: int) -> ScoringPlan:
    """``photos`` random 96x96 photos x ``boxes`` distinct boxes each, and two texts."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    plan = ScoringPlan()
    for i in range(photos):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(path)
        for b in range(boxes):
            plan.add_region(Region(str(path), (b, b, 64 + b, 64 + b)))
    for text in ("a red cube", "a cat on a blue mat"):
        plan.add_text(text)
    plan.need_all(list(range(len(plan.regions))), list(range(len(plan.texts))))
    return plan


def test_real_out_of_memory_halves_the_batch_and_keeps_the_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # fp32 without TF32, so batch size alone cannot move the numbers beyond rounding. (The
    # matmul switch lives behind a module __getattr__ that monkeypatch cannot restore.)
    matmul_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    try:
        _out_of_memory_run(tmp_path, monkeypatch, caplog)
    finally:
        torch.set_float32_matmul_precision(matmul_precision)


def _out_of_memory_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    scorer = load_scorer(SPEC, "cuda", "fp32")
    n = 1024
    plan = _region_plan(tmp_path / "photos", photos=n // 8, boxes=8)
    assert len(plan.regions) == n
    small = score_plan(scorer, plan, batch_size=16, num_workers=0, progress=False, cache=None)

    # What one forward of 64 regions needs at its peak (weights and workspaces already there).
    pixels = torch.stack([scorer.preprocess(Image.new("RGB", (64, 64))) for _ in range(64)])
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    scorer.encode_pixels(pixels)
    torch.cuda.synchronize()
    per_64 = torch.cuda.max_memory_allocated() - before
    assert per_64 > 0
    torch.cuda.empty_cache()

    # Leave room for about 256 regions, so the first batch of 1024 (16x that) cannot fit.
    leave = 4 * per_64
    free, _ = torch.cuda.mem_get_info()
    if free <= leave + (1 << 30):
        pytest.skip(f"only {free >> 20} MiB free on the device; cannot stage the test")
    attempts: list[int] = []
    done: list[int] = []
    real = scorer.encode_pixels

    def counting(px: torch.Tensor) -> torch.Tensor:
        attempts.append(len(px))
        out = real(px)
        done.append(len(px))
        return out

    monkeypatch.setattr(scorer, "encode_pixels", counting)
    blocker = torch.empty(free - leave, dtype=torch.uint8, device="cuda")
    try:
        with caplog.at_level(logging.WARNING, logger="densecap_eval.core.batching"):
            big = score_plan(scorer, plan, batch_size=n, num_workers=0, progress=False, cache=None)
    finally:
        del blocker
        torch.cuda.empty_cache()

    warnings = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    print(f"\nper 64 regions {per_64 >> 20} MiB; attempts {attempts}; warnings {warnings}")
    assert attempts[0] == n and n not in done  # the first batch really ran out of memory
    assert warnings and warnings[0].startswith(f"out of memory encoding {n} regions")
    assert f"retrying with batches of {n // 2}" in warnings[0]
    assert sum(done) == n and max(done) <= n // 2
    # Once halved, the size is kept: every successful batch has the final size (last may be short).
    assert all(d == done[0] for d in done[:-1])
    assert small.image_embeddings is not None and big.image_embeddings is not None
    assert np.abs(small.image_embeddings - big.image_embeddings).max() <= 1e-5
    rs, ts = list(range(n)), [0, 1]
    assert np.abs(small.matrix(rs, ts) - big.matrix(rs, ts)).max() <= 1e-3


# -- (c) pinned memory -----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_region_batches_are_pinned_for_a_cuda_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    scorer = load_scorer(SPEC, "cuda", "fp32")
    plan = _region_plan(tmp_path / "photos", photos=40, boxes=2)

    # The loader itself (workers: DataLoader with pin_memory; inline: pinned by the engine).
    chunks = [plan.regions[a : a + 16] for a in range(0, len(plan.regions), 16)]
    dataset = _RegionBatches(chunks, blind=False, preprocess=scorer.preprocess)
    batches = list(_iter_batches(dataset, workers, pin_memory=True))
    assert len(batches) == len(chunks)
    assert all(isinstance(b, torch.Tensor) and b.is_pinned() for b in batches)
    unpinned = list(_iter_batches(dataset, workers, pin_memory=False))
    assert not any(b.is_pinned() for b in unpinned)
    assert all(torch.equal(a, b) for a, b in zip(batches, unpinned, strict=True))

    # Through the engine: what reaches the model is pinned (a view of the pinned batch).
    seen: list[bool] = []
    real = scorer.encode_pixels

    def recording(px: torch.Tensor) -> torch.Tensor:
        seen.append(px.is_pinned())
        return real(px)

    monkeypatch.setattr(scorer, "encode_pixels", recording)
    score_plan(scorer, plan, batch_size=16, num_workers=workers, progress=False, cache=None)
    assert len(seen) == len(chunks) and all(seen)
