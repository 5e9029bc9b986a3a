"""ELEVATER zero-shot end to end on a synthetic release in its real layout, against a reference
computed the way ELEVATER's own code computes it.

ELEVATER's toolkit (vision_benchmark) is not on PyPI and its DCI path needs CUDA, so the
reference below is written from its code (Elevater_Toolkit_IC aae48b1, the commit DCI pins):
photos read from the zip with Pillow, EXIF orientation applied, then ``.convert('RGB')``;
``Resize(224, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet)`` (kitti-distance:
``Resize([224, 224])``, no crop); prompts ``template.format(class)`` tokenized by the CLIP BPE
(open_clip's tokenizer: the same vocabulary file and ids as ELEVATER's for prompts under 77
tokens); each prompt embedding normalised, the class mean renormalised; ``softmax(100 * img @
W)`` in float32; metrics by vision-evaluation 0.2.9 (ELEVATER's metric package).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from densecap_eval.datasets.elevater import catalog
from densecap_eval.datasets.elevater.synth import write_release
from densecap_eval.run.evaluate import evaluate_tasks

KEYS = ["cifar10", "voc2007classification", "kitti-distance", "hateful-memes"]
CONFIG = {  # a tiny CLIP at ELEVATER's 224 px
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "patch_size": 56, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    import open_clip
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("elevater")
    root = base / "data"
    write_release(root, keys=KEYS, images=6, seed=3)
    torch.manual_seed(0)
    model = open_clip.CLIP(**CONFIG)
    (base / "m.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(base / "m.safetensors")
    )
    return root, f"open_clip:{base / 'm.json'}/{base / 'm.safetensors'}", base


def _reference_samples(root: Path, key: str) -> list[tuple[bytes, object]]:
    """(photo bytes, label) in ELEVATER's order, read straight from the release files."""
    s = catalog.spec(key)
    folder = root / s.root_folder
    if s.format == "coco":
        m = json.loads((folder / s.test_index).read_text())
        cats = sorted(c["id"] for c in m["categories"])
        label = {a["image_id"]: cats.index(a["category_id"]) for a in m["annotations"]}
        rows = [(f"{i['zip_file']}@{i['file_name']}", label[i["id"]])
                for i in sorted(m["images"], key=lambda i: i["id"])]  # fmt: skip
    else:
        rows = []
        for line in (folder / s.test_index).read_text().splitlines():
            ref, labels = line.rsplit(" ", 1)
            ints = [int(x) for x in labels.split(",")]
            rows.append((ref, np.eye(len(s.classes))[ints].sum(0) if s.multilabel else ints[0]))
    out = []
    for ref, lab in rows:
        zip_name, member = ref.split("@", 1)
        with zipfile.ZipFile(folder / zip_name) as zf:
            out.append((zf.read(member), lab))
    return out


def _reference_probs(root: Path, key: str, model: object) -> tuple[np.ndarray, np.ndarray]:
    import open_clip
    from PIL import Image, ImageOps
    from torchvision import transforms as T

    s = catalog.spec(key)
    resize = (T.Resize(224, interpolation=T.InterpolationMode.BICUBIC) if s.center_crop
              else T.Resize([224, 224], interpolation=T.InterpolationMode.BICUBIC))  # fmt: skip
    steps = [resize, *([T.CenterCrop(224)] if s.center_crop else [])]
    tf = T.Compose([*steps, T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])  # fmt: skip
    samples = _reference_samples(root, key)
    imgs = []
    for data, _ in samples:
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        imgs.append(tf(img.convert("RGB")))
    with torch.no_grad():
        feats = model.encode_image(torch.stack(imgs)).float()  # type: ignore[attr-defined]
        ws = []
        for c in s.classes:
            tok = open_clip.tokenize([t.format(c) for t in s.templates])
            e = model.encode_text(tok).float()  # type: ignore[attr-defined]
            e /= e.norm(dim=-1, keepdim=True)
            w = e.mean(0)
            w /= w.norm()
            ws.append(w)
        W = torch.stack(ws, dim=1)
        img = torch.nn.functional.normalize(feats)
        probs = (100.0 * img @ W).softmax(dim=-1).numpy()
    labels = np.array([lab for _, lab in samples])
    return probs, labels


def test_elevater_dci_equals_the_reference(setup: tuple[Path, str, Path]) -> None:
    import open_clip
    from safetensors.torch import load_file
    from test_elevater_metrics import _reference

    root, spec, base = setup
    results = evaluate_tasks(
        spec, [f"elevater/{k}" for k in KEYS], data_root=root, protocol="elevater-dci",
        n_boot=0, progress=False, cache_dir=base / "cache", num_workers=0,
    )  # fmt: skip
    model = open_clip.CLIP(**CONFIG)
    model.load_state_dict(load_file(str(base / "m.safetensors")))
    model.eval()
    for result, key in zip(results, KEYS, strict=True):
        assert result.config["protocol"] == "elevater-dci"
        m = result.metrics[f"elevater/{key}"]
        probs, labels = _reference_probs(root, key, model)
        ours = np.array(result.examples["probs"].tolist(), dtype=np.float32)
        np.testing.assert_allclose(ours, probs, atol=1e-6)
        s = catalog.spec(key)
        assert (m["n"], m["n_classes"], m["n_templates"]) == (6, len(s.classes), len(s.templates))
        assert m["metric"] == s.metric
        assert m["zeroshot"] == pytest.approx(_reference(s.metric, labels, ours), abs=1e-12)
        assert result.examples["prediction"].tolist() == np.argmax(ours, axis=1).tolist()


def test_default_protocol_uses_the_models_own_preprocessing(
    setup: tuple[Path, str, Path],
) -> None:
    root, spec, base = setup
    ours, dci = (
        evaluate_tasks(spec, ["elevater/cifar10"], data_root=root, protocol=p, n_boot=0,
                       progress=False, cache_dir=base / "cache", num_workers=0)[0]
        for p in ("default", "elevater-dci")
    )  # fmt: skip
    assert ours.config["protocol"] == "default"
    assert ours.config["preprocess_id"] == dci.config["preprocess_id"]  # the scorer's own id
    a = np.array(ours.examples["probs"].tolist())
    b = np.array(dci.examples["probs"].tolist())
    assert not np.allclose(a, b)  # CLIP's statistics, not ImageNet's


def test_elevater_cleaning_leaves_clip_token_ids_alone() -> None:
    """The DCI protocol cleans prompts as ELEVATER's tokenizer does; for the CLIP BPE (which
    cleans the same way) the ids of all 9,938 prompts are unchanged, caltech's double space
    included, and none is longer than 77 tokens (ELEVATER's EOT-less truncation never acts)."""
    import open_clip

    from densecap_eval.datasets.elevater.protocol import elevater_clean

    texts = [p for k in catalog.dataset_keys() for c in range(len(catalog.spec(k).classes))
             for p in catalog.spec(k).prompts(c)]  # fmt: skip
    assert len(texts) == 9938
    raw = open_clip.tokenize(texts)
    clean = open_clip.tokenize([elevater_clean(t) for t in texts])
    assert torch.equal(raw, clean)
    assert int((raw != 0).sum(1).max()) == 28  # the longest prompt, SOT and EOT included
    assert (
        elevater_clean("a photo of a head of a  crocodile.") == "a photo of a head of a crocodile."
    )


def test_caltech101_with_absent_classes_equals_vision_evaluation(
    setup: tuple[Path, str, Path],
) -> None:
    """caltech-101 (mean-per-class) on 12 photos: 12 of its 102 classes in the test labels.
    Class order and prompts are ELEVATER's (``background`` is class 4, 34 templates); the
    probabilities equal the reference's, and the metric equals vision-evaluation 0.2.9's
    BalancedAccuracyScoreEvaluator, which keeps only the classes present: the argmax over all
    102 classes (CLIP_benchmark's formula) gives another number here."""
    import open_clip
    from safetensors.torch import load_file
    from test_elevater_metrics import _reference

    from densecap_eval.datasets.elevater.synth import write_dataset
    from densecap_eval.datasets.elevater.tasks import prompt_texts

    _, spec, base = setup
    root = base / "caltech"
    write_dataset(root, "caltech101", images=12, seed=1)
    (result,) = evaluate_tasks(spec, ["elevater/caltech101"], data_root=root,
                               protocol="elevater-dci", n_boot=0, progress=False,
                               cache_dir=base / "cache", num_workers=0)  # fmt: skip
    m = result.metrics["elevater/caltech101"]
    s = catalog.spec("caltech101")
    texts = prompt_texts("caltech101", "elevater-dci")
    assert (len(texts), len(texts[0])) == (102, 34) == (m["n_classes"], m["n_templates"])
    assert texts[4][0] == "a photo of a background." and s.classes[37] == "centered face"
    model = open_clip.CLIP(**CONFIG)
    model.load_state_dict(load_file(str(base / "m.safetensors")))
    model.eval()
    probs, labels = _reference_probs(root, "caltech101", model)
    ours = np.array(result.examples["probs"].tolist(), dtype=np.float32)
    # Scorers hand over L2-normalised embeddings, which ELEVATER's order normalises once more:
    # one float32 rounding of the cosines (~1e-7), times the scale 100, over 102 classes.
    np.testing.assert_allclose(ours, probs, rtol=2e-5, atol=1e-6)
    assert len(set(labels.tolist())) == 12 < 102  # 90 classes absent from the test labels
    assert result.examples["labels"].tolist() == [[int(x)] for x in labels]
    expected = _reference("mean-per-class", labels, ours)
    assert m["metric"] == "mean-per-class"
    assert m["zeroshot"] == pytest.approx(expected, abs=1e-12)
    from densecap_eval.metrics.clip_benchmark import mean_per_class_recall

    unfiltered = mean_per_class_recall(labels, ours)  # argmax over all 102 classes
    assert m["zeroshot"] != pytest.approx(unfiltered, abs=1e-9)  # the column filter matters
