"""Zero-shot classification time: densecap-eval's `elevater/cifar10` against CLIP_benchmark's loop.

    python benchmarks/zeroshot_vs_clip_benchmark.py [--images 512] [--repeats 2]

Same process, same device (CPU), same model (the bundled tiny CLIP, fp32), same photos (a
synthetic ELEVATER cifar-10 release written to a temporary folder) and the same 180 prompts
(ELEVATER's class names and 18 templates, ``{}`` turned into CLIP_benchmark's ``{c}``).

- densecap-eval: `evaluate_tasks(scorer, ["elevater/cifar10"])` (the model loaded once) with the embedding cache off (every
  prompt and photo encoded), photo decoding in the main process (``--workers 0``); "cold"
  includes decoding the zip members to the photo cache on first use, "warm" reuses them.
- CLIP_benchmark 1.6.2: `clip_benchmark.metrics.zeroshot_classification.evaluate(model, loader,
  open_clip.tokenize, classnames, templates, "cpu", amp=False)` over a DataLoader (batch 64, no
  workers) that reads the same photos from the zip and applies the model's preprocessing.

Prints the best of ``--repeats`` interleaved wall times and the ratio. Needs `pip install clip-benchmark`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch


def _clip_benchmark_run(root: Path, model: Any, preprocess: Any) -> dict[str, Any]:
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

    loader = torch.utils.data.DataLoader(Data(), batch_size=64, num_workers=0)
    templates = [t.replace("{}", "{c}") for t in spec.templates]

    def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple = (1,)) -> list:
        # clip-benchmark 1.6.2's, with .item() (its float() on an array fails under numpy 2)
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [float(correct[:k].reshape(-1).float().sum().item()) / len(target) for k in topk]

    cb.accuracy = accuracy
    return dict(cb.evaluate(model, loader, open_clip.tokenize, spec.classes, templates, "cpu",
                            amp=False))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import open_clip
    from safetensors.torch import load_file

    from densecap_eval import load_scorer
    from densecap_eval.core.paths import bundled_models_dir
    from densecap_eval.datasets.elevater.synth import write_dataset
    from densecap_eval.run.evaluate import evaluate_tasks

    cfg = json.loads((bundled_models_dir() / "tiny_clip.json").read_text())
    model = open_clip.CLIP(**cfg)
    model.load_state_dict(load_file(str(bundled_models_dir() / "tiny_clip.safetensors")))
    model.eval()
    preprocess = open_clip.image_transform(cfg["vision_cfg"]["image_size"], is_train=False)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_dataset(root, "cifar10", images=args.images)
        options = {"data_root": root, "use_cache": False, "num_workers": 0, "n_boot": 0,
                   "progress": False}  # fmt: skip

        scorer = load_scorer("builtin:tiny")  # loaded once, as CLIP_benchmark's model is

        def ours() -> float:
            t = time.perf_counter()
            (res,) = evaluate_tasks(scorer, ["elevater/cifar10"], **options)
            assert res.metrics["elevater/cifar10"]["n"] == args.images
            return time.perf_counter() - t

        os.environ["DENSECAP_EVAL_CACHE"] = str(Path(tmp) / "cache")
        cold = ours()
        warms, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
            warms.append(ours())
            t = time.perf_counter()
            metrics = _clip_benchmark_run(root, model, preprocess)
            theirs.append(time.perf_counter() - t)
        warm, best = min(warms), min(theirs)
    print(f"{args.images} photos, 180 prompts, CPU, {torch.get_num_threads()} threads")
    print(f"densecap-eval elevater/cifar10: cold {cold:.2f} s, warm {warm:.2f} s")
    print(f"CLIP_benchmark evaluate:        {best:.2f} s  (acc1 {metrics['acc1']:.3f})")
    print(f"ratio CLIP_benchmark / densecap-eval (warm): {best / warm:.2f}x; "
          f"(cold): {best / cold:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
