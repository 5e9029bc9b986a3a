"""CLIP_benchmark's protocol on a local ``wds_<name>`` copy: densecap-eval's `clip_benchmark/...`
tasks equal clip-benchmark 1.6.2's own `build_dataset` + `evaluate` on the same shards."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from releases import WDS_SETS as SETS
from releases import write_wds

from densecap_eval.core.errors import DatasetError
from densecap_eval.datasets.elevater.wds import ClipBenchmarkDataset, folder_name
from densecap_eval.run.evaluate import evaluate_tasks

CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    import open_clip
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("cbwds")
    for seed, key in enumerate(SETS):
        write_wds(base / "data", key, 10, seed)
    torch.manual_seed(0)
    model = open_clip.CLIP(**CONFIG)
    (base / "m.json").write_text(json.dumps(CONFIG))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(base / "m.safetensors"))  # fmt: skip
    return base / "data", f"open_clip:{base / 'm.json'}/{base / 'm.safetensors'}", base


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.filterwarnings("ignore:WebDataset\\(shardshuffle")  # its builder's, not ours
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # webdataset leaves its tars open
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_equals_clip_benchmark(
    setup: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as cb
    from safetensors.torch import load_file
    from test_clip_benchmark_metrics import _accuracy_numpy2

    root, spec, base = setup
    monkeypatch.setattr(cb, "accuracy", _accuracy_numpy2)  # numpy 2 (see that test)
    results = evaluate_tasks(spec, [f"clip_benchmark/{k}" for k in SETS], data_root=root,
                             n_boot=0, progress=False, cache_dir=base / "cache",
                             num_workers=0)  # fmt: skip
    model = open_clip.CLIP(**CONFIG)
    model.load_state_dict(load_file(str(base / "m.safetensors")))
    model.eval()
    preprocess = open_clip.image_transform(32, is_train=False)
    for result, key in zip(results, SETS, strict=True):
        ds = build_dataset(
            f"wds/{'vtab/cifar10' if key == 'cifar10' else key}",
            root=str(root / folder_name(key)),
            transform=preprocess,
            split="test",
        )
        loader = torch.utils.data.DataLoader(ds.batched(4), batch_size=None)
        loader.dataset.classes = ds.classes  # type: ignore[attr-defined]
        classes, templates = SETS[key]
        assert ds.classes == classes and ds.templates == templates
        expected = cb.evaluate(model, loader, open_clip.tokenize, ds.classes, ds.templates,
                               "cpu", amp=False)  # fmt: skip
        ours = result.metrics[f"clip_benchmark/{key}"]
        assert set(expected) == {"acc1", "acc5", "mean_per_class_recall"}
        assert ours["n"] == 10 and ours["protocol"] == "clip_benchmark"
        for name, value in expected.items():
            if math.isnan(value):
                assert ours[name] is None, name  # acc5 below 5 classes: null
            else:
                assert ours[name] == pytest.approx(value, abs=1e-12), name
        del loader, ds
    import gc

    gc.collect()  # webdataset's open tars are closed (and warn) here, under this test's filters


def test_a_missing_classnames_file_is_one_error(setup: tuple[Path, str, Path]) -> None:
    import shutil

    root, _, base = setup
    broken = base / "broken"
    shutil.copytree(root / folder_name("mnist"), broken / folder_name("mnist"))
    (broken / folder_name("mnist") / "classnames.txt").unlink()
    with pytest.raises(DatasetError, match=r"classnames\.txt is missing"):
        ClipBenchmarkDataset(broken, cache_dir=base / "c2").split("mnist")


def _add_to_shard(folder: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(folder / "test" / "1.tar", "a") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"bad1.png": _png()}, "has no image or no cls"),
        ({"bad2.cls": b"1"}, "has no image or no cls"),
        ({"bad3.png": _png(), "bad3.cls": b"x"}, "not an integer"),
        ({"bad4.png": _png(), "bad4.cls": b"7"}, "outside 0..2"),
        ({"bad5.png": b"not a png", "bad5.cls": b"1"}, "not an image"),
    ],
)
def test_one_bad_sample_is_skipped_and_named(
    tmp_path: Path, members: dict[str, bytes], reason: str
) -> None:
    folder = write_wds(tmp_path / "data", "mnist", 6, 0)
    _add_to_shard(folder, members)
    ds = ClipBenchmarkDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(ds.split("mnist").samples) == 6  # every good sample still there
    assert len(ds.skipped) == 1 and reason in ds.skipped[0].reason
    assert ds.skipped[0].image.startswith("1.tar#bad")


@pytest.mark.filterwarnings("ignore:WebDataset\\(shardshuffle")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_multilabel_voc_equals_clip_benchmark(setup: tuple[Path, str, Path]) -> None:
    """VOC 2007 multilabel in the wds layout (``npy`` 0/1 targets, dataset_type.txt): the same
    photos as ELEVATER's synthetic VOC (a class without positives); clip-benchmark's own
    `build_dataset` + `evaluate` give its non-interpolated mAP over all 20 classes."""
    import gc

    import open_clip
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as cb
    from safetensors.torch import load_file

    from densecap_eval.datasets.elevater import catalog
    from densecap_eval.datasets.elevater.synth import write_dataset, write_wds_copy

    _, spec, base = setup
    elevater, wds = base / "voc-elevater", base / "voc-wds"
    write_dataset(elevater, "voc2007classification", images=12)
    folder = write_wds_copy(elevater, "voc2007classification", wds)
    assert folder.name == "wds_voc2007_multilabel"
    split = ClipBenchmarkDataset(wds, cache_dir=base / "cache").split("voc2007classification")
    assert split.multilabel and len(split.samples) == 12
    assert any(len(s.labels) > 1 for s in split.samples)  # several labels on one photo

    (result,) = evaluate_tasks(spec, ["clip_benchmark/voc2007classification"], data_root=wds,
                               n_boot=0, progress=False, cache_dir=base / "cache",
                               num_workers=0)  # fmt: skip
    ours = result.metrics["clip_benchmark/voc2007classification"]
    model = open_clip.CLIP(**CONFIG)
    model.load_state_dict(load_file(str(base / "m.safetensors")))
    model.eval()
    ds = build_dataset("wds/voc2007_multilabel", root=str(folder),
                       transform=open_clip.image_transform(32, is_train=False), split="test")  # fmt: skip
    loader = torch.utils.data.DataLoader(ds.batched(5), batch_size=None)
    loader.dataset.classes = ds.classes  # type: ignore[attr-defined]
    assert ds.classes == list(catalog.spec("voc2007classification").classes)
    expected = cb.evaluate(model, loader, open_clip.tokenize, ds.classes, ds.templates, "cpu",
                           amp=False)  # fmt: skip
    assert set(expected) == {"mean_average_precision"}
    assert ours["mean_average_precision"] == pytest.approx(
        expected["mean_average_precision"], abs=1e-12
    )
    assert ours["n"] == 12 and ours["n_classes"] == 20
    del loader, ds
    gc.collect()


def test_a_bad_multilabel_target_is_skipped_and_named(tmp_path: Path) -> None:
    from densecap_eval.datasets.elevater.synth import write_dataset, write_wds_copy

    write_dataset(tmp_path / "e", "voc2007classification", images=4)
    folder = write_wds_copy(tmp_path / "e", "voc2007classification", tmp_path / "w")
    buf = io.BytesIO()
    np.save(buf, np.full(20, 2.0))
    _add_to_shard(folder, {"bad1.png": _png(), "bad1.npy": buf.getvalue(),
                           "bad2.png": _png(), "bad2.npy": b"not numpy",
                           "bad3.png": _png(), "bad3.cls": b"1"})  # fmt: skip
    ds = ClipBenchmarkDataset(tmp_path / "w", cache_dir=tmp_path / "cache")
    assert len(ds.split("voc2007classification").samples) == 4
    reasons = sorted(s.reason for s in ds.skipped)
    assert len(reasons) == 3
    assert any("not a 0/1 vector of 20 classes" in r for r in reasons)
    assert any("not a numpy array" in r for r in reasons)
    assert any("no image or no npy" in r for r in reasons)
