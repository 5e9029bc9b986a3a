"""Zero-shot classification time: densecap-eval's `elevater/cifar10` against CLIP_benchmark's loop.

    python benchmarks/zeroshot_vs_clip_benchmark.py [--images 512] [--repeats 5] [--threads N]

Same process, same device (CPU), same model object (the bundled tiny CLIP, ``builtin:tiny``,
fp32: CLIP_benchmark is handed the scorer's own open_clip module and preprocessing), same photos
(a synthetic ELEVATER cifar-10 release in a temporary folder) and the same 180 prompts
(ELEVATER's class names and 18 templates, ``{}`` turned into CLIP_benchmark's ``{c}``).

- densecap-eval: `evaluate_tasks(scorer, ["elevater/cifar10"])` with the embedding cache off
  (every prompt and photo encoded each time), photo decoding in the main process
  (``--workers 0``), as CLIP_benchmark's loop decodes in its own, and CLIP_benchmark's batch size
  (64; the run's default, 32, costs this tiny model ~40% more CPU on photos). "cold" is the first call,
  which also decodes each zip member once into the photo cache; the repeats reuse it.
- CLIP_benchmark 1.6.2: `clip_benchmark.metrics.zeroshot_classification.evaluate(model, loader,
  open_clip.tokenize, classnames, templates, "cpu", amp=False)` over a DataLoader (batch 64,
  no workers) that reads the same photos from the zip and applies the model's preprocessing.

The two are run alternately ``--repeats`` times (so a change in the machine's load touches both
alike), after one untimed warm-up of each; for each it prints the median and the minimum of the
wall time and of the process CPU time, and the ratios (CLIP_benchmark / densecap-eval: above 1
means densecap-eval is faster). Needs `pip install clip-benchmark`.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("TQDM_DISABLE", "1")  # CLIP_benchmark's progress bars (read at import)

import torch


def _clip_benchmark_loop(root: Path, model: Any, preprocess: Any) -> Callable[[], dict[str, Any]]:
    """CLIP_benchmark's `evaluate` over the release's cifar-10 photos, ready to call."""
    import open_clip
    from clip_benchmark.metrics import zeroshot_classification as cb
    from PIL import Image

    from densecap_eval.datasets.elevater import catalog, layout

    spec = catalog.spec("cifar10")
    folder = layout.dataset_dir(root, spec)
    samples = layout.read_samples(root, spec, lambda e: None)

    class Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
        classes: ClassVar[list[str]] = list(spec.classes)

        def __init__(self) -> None:
            self.zip = zipfile.ZipFile(folder / spec.test_files[0])

        def __len__(self) -> int:
            return len(samples)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            s = samples[i]
            img = Image.open(io.BytesIO(self.zip.read(s.member)))
            return preprocess(img), s.labels[0]

    templates = [t.replace("{}", "{c}") for t in spec.templates]

    def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple = (1,)) -> list:
        # clip-benchmark 1.6.2's, with .item() (its float() on an array fails under numpy 2)
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [float(correct[:k].reshape(-1).float().sum().item()) / len(target) for k in topk]

    cb.accuracy = accuracy

    def run() -> dict[str, Any]:
        loader = torch.utils.data.DataLoader(Data(), batch_size=BATCH, num_workers=0)
        return dict(cb.evaluate(model, loader, open_clip.tokenize, list(spec.classes), templates,
                                "cpu", amp=False))  # fmt: skip

    return run


BATCH = 64  # CLIP_benchmark's default --batch_size; densecap-eval is given the same


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _line(name: str, walls: list[float], cpus: list[float]) -> str:
    return (f"{name:<34} wall median {statistics.median(walls):6.2f} s, min {min(walls):6.2f} s;"
            f"  CPU median {statistics.median(cpus):6.2f} s, min {min(cpus):6.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as set)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    if args.threads:
        torch.set_num_threads(args.threads)

    from densecap_eval import load_scorer
    from densecap_eval.datasets.elevater.synth import write_dataset
    from densecap_eval.run.evaluate import evaluate_tasks

    scorer = load_scorer("builtin:tiny")  # loaded once; CLIP_benchmark gets the same module
    model, preprocess = scorer.model, scorer.preprocess
    model.eval()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_dataset(root, "cifar10", images=args.images)
        os.environ["DENSECAP_EVAL_CACHE"] = str(Path(tmp) / "cache")
        options = {"data_root": root, "use_cache": False, "num_workers": 0, "n_boot": 0,
                   "progress": False, "cache_dir": Path(tmp) / "cache",
                   "batch_size": BATCH}  # fmt: skip

        def ours() -> dict[str, Any]:
            (res,) = evaluate_tasks(scorer, ["elevater/cifar10"], **options)
            assert res.metrics["elevater/cifar10"]["n"] == args.images
            return dict(res.metrics["elevater/cifar10"])

        theirs = _clip_benchmark_loop(root, model, preprocess)
        cold_wall, cold_cpu, _ = _timed(ours)  # decodes every zip member into the photo cache
        theirs()  # warm-up: imports, first-call allocations
        ours_t: tuple[list[float], list[float]] = ([], [])
        theirs_t: tuple[list[float], list[float]] = ([], [])
        for _ in range(args.repeats):  # alternated, so a busy machine slows both alike
            for fn, into in ((ours, ours_t), (theirs, theirs_t)):
                wall, cpu, result = _timed(fn)
                into[0].append(wall)
                into[1].append(cpu)
                if fn is ours:
                    top1 = result["top1"]
                else:
                    acc1 = result["acc1"]
    print(f"{args.images} photos, 180 prompts, CPU, {torch.get_num_threads()} torch threads, "
          f"{args.repeats} repeats each, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"densecap-eval cold (first call, decodes the zip members): wall {cold_wall:.2f} s, "
          f"CPU {cold_cpu:.2f} s")  # fmt: skip
    print(_line("densecap-eval elevater/cifar10", *ours_t) + f"  (top1 {top1:.3f})")
    print(_line("CLIP_benchmark evaluate", *theirs_t) + f"  (acc1 {acc1:.3f})")
    med = statistics.median(theirs_t[0]) / statistics.median(ours_t[0])
    best = min(theirs_t[0]) / min(ours_t[0])
    cpu = statistics.median(theirs_t[1]) / statistics.median(ours_t[1])
    print(f"ratio CLIP_benchmark / densecap-eval: wall median {med:.2f}x, wall min {best:.2f}x, "
          f"CPU median {cpu:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
