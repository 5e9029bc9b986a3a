"""Check that densecap-eval reproduces the DCI reference's six numbers on the same data and model.

    python benchmarks/reference_parity.py --reference-repo PATH --data-root ROOT [--model-dir DIR]

``--reference-repo`` is a checkout of facebookresearch/DCI (or its ``dataset/`` folder), which
you provide; it is imported, never copied. ``--data-root`` is a DCI-format root (the folder that
holds densely_captioned_images/), e.g. one written by ``densecap-eval synth``. ``--model-dir`` is
a local transformers CLIP directory; without it a tiny random CLIP is built in a temp folder
(tests/tiny_models.py).

The reference runs as released, with three things set around it so it can run at all:
- its ``config`` module (which asks for a data directory with ``input()`` at import) is replaced
  by one pointing at ``--data-root``; its ``spacy_negs`` module (spacy, unused by these
  subtests) by a stub;
- its processor cache is given the model's own processor instead of a hub download;
- ``random.sample`` takes the first k items, so Pick5 uses the first 5 summaries as its README
  promises (docs/protocols/dci.md, "Pitfalls").
Then densecap-eval's ``evaluate("hf:DIR", "dci")`` runs on the same data (fp32, CPU by default),
both sets of six numbers are printed, and the exit status is 1 if any differs.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import types
from pathlib import Path

SUBTESTS = {
    "all_swaps": {"load_base_image": True, "load_subcaptions": True,
                  "negative_source": "swaps", "negative_strategy": "first", "caption_bag_size": 0},
    "all_swaps_pick5": {"load_base_image": True, "load_subcaptions": True,
                        "negative_source": "swaps", "negative_strategy": "first",
                        "caption_bag_size": 5},
    "base_swaps": {"load_base_image": True, "load_subcaptions": False,
                   "negative_source": "swaps", "negative_strategy": "first", "caption_bag_size": 0},
    "all_hardest": {"load_base_image": True, "load_subcaptions": True,
                    "negative_source": "any", "negative_strategy": "hardest",
                    "caption_bag_size": 0},
}  # fmt: skip
# The six published numbers: (label, subtest, metric).
SIX = (
    ("All SCM", "all_swaps", "scm"),
    ("All Neg", "all_swaps", "neg"),
    ("Pick5 SCM", "all_swaps_pick5", "scm"),
    ("Pick5 Neg", "all_swaps_pick5", "neg"),
    ("Base Neg", "base_swaps", "neg"),
    ("Hardest Neg", "all_hardest", "neg"),
)


def _package_dir(reference_repo: Path) -> Path:
    for candidate in (reference_repo, reference_repo / "dataset"):
        if (candidate / "densely_captioned_images" / "dataset" / "impl.py").is_file():
            return candidate
    raise SystemExit(
        f"{reference_repo}: no densely_captioned_images/dataset/impl.py here or under dataset/"
    )


def _install_stubs(data_root: Path) -> None:
    base = data_root / "densely_captioned_images"
    config = types.ModuleType("densely_captioned_images.dataset.config")
    config.DCI_CONFIG = {"initialized": True, "data_dir": str(data_root)}
    config.DATASET_BASE = str(base)
    config.MODEL_BASE = str(data_root / "models")
    config.DATASET_PHOTO_PATH = str(base / "photos")
    config.DATASET_ANNOTATIONS_PATH = str(base / "annotations")
    config.DATASET_COMPLETE_PATH = str(base / "complete")
    sys.modules[config.__name__] = config
    spacy_negs = types.ModuleType("densely_captioned_images.dataset.spacy_negs")

    def get_spacy_negative(*args: object, **kwargs: object) -> str:
        raise RuntimeError("spacy negatives are not part of the reference subtests")

    spacy_negs.get_spacy_negative = get_spacy_negative
    sys.modules[spacy_negs.__name__] = spacy_negs


def run_reference(
    reference_repo: Path, data_root: Path, model_dir: Path
) -> dict[str, dict[str, float]]:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    sys.path.insert(0, str(_package_dir(reference_repo)))
    _install_stubs(data_root)
    from densely_captioned_images.dataset import utils as ref_utils
    from densely_captioned_images.dataset.impl import get_clip_ready_ds
    from densely_captioned_images.dataset.scripts.run_clip_dense_cap_eval import (
        run_dense_cap_test_on_model,
    )

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPProcessor.from_pretrained(model_dir)
    if processor.tokenizer.model_max_length > 10_000:  # a tokenizer saved without its limit
        processor.tokenizer.model_max_length = model.config.text_config.max_position_embeddings
    ref_utils.processor = processor  # instead of downloading openai/clip-vit-base-patch32

    original_sample = random.sample
    random.sample = lambda population, k, **kw: list(population)[:k]  # Pick5: the first 5
    out: dict[str, dict[str, float]] = {}
    try:
        for key, args in SUBTESTS.items():
            dataset = get_clip_ready_ds(split="test", **args)
            dataset.processor = processor
            with torch.no_grad():
                scm, neg = run_dense_cap_test_on_model(model, dataset)
            out[key] = {"scm": float(scm), "neg": float(neg), "n": len(dataset)}
    finally:
        random.sample = original_sample
    return out


def run_ours(data_root: Path, model_dir: Path, device: str) -> dict[str, dict[str, float]]:
    from densecap_eval import evaluate

    result = evaluate(
        f"hf:{model_dir}", "dci", data_root=data_root, device=device, precision="fp32",
        n_boot=0, use_cache=False, progress=False,
    )  # fmt: skip
    return {
        task.removeprefix("dci/"): {"scm": m["scm"], "neg": m["neg"], "n": m["n"]}
        for task, m in result.metrics.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-repo", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from tiny_models import make_tiny_hf_clip

            model_dir = Path(make_tiny_hf_clip(Path(tmp) / "tiny_hf_clip").removeprefix("hf:"))
        ours = run_ours(args.data_root, model_dir, args.device)
        ref = run_reference(args.reference_repo, args.data_root, model_dir)

    failed = False
    print(f"{'metric':<12} {'reference':>12} {'densecap-eval':>14}   n (ref/ours)")
    for label, key, metric in SIX:
        a, b = ref[key][metric], ours[key][metric]
        same = a == b and ref[key]["n"] == ours[key]["n"]
        failed |= not same
        mark = "" if same else "   <-- differs"
        print(f"{label:<12} {a:>12.6f} {b:>14.6f}   {ref[key]['n']}/{ours[key]['n']}{mark}")
    print("identical" if not failed else "DIFFERENT")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
