"""``fgclip:``: FG-CLIP v1 folders read without their modeling code, equal to FG-CLIP's forward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tiny_fgclip import make_tiny_fgclip, reference_image, reference_text
from tiny_models import one_thread

from densecap_eval.core.errors import ModelLoadError

WORDS = "red blue green small large dog cat tree house car road sky water stone".split()
LENGTHS = (10, 100, 240, 400)  # about this many tokens each (400: past the 248 limit)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    yield from one_thread()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_fgclip(tmp_path_factory.mktemp("fgclip") / "fg-clip-tiny")


def _texts() -> list[str]:
    return [" ".join(WORDS[(i * 7 + n) % len(WORDS)] for i in range(n - 2)) for n in LENGTHS]


def _images() -> list[Image.Image]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            for h, w in ((40, 64), (50, 30))]  # fmt: skip


def _state(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _own_ids(folder: Path, texts: list[str], max_length: int) -> Any:
    """FG-CLIP's eval tokenization: the folder's tokenizer, padded to max_length, truncated."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    out = tok(texts, max_length=max_length, padding="max_length", truncation=True)
    return torch.tensor(out["input_ids"])


def _load(spec: str) -> Any:
    from densecap_eval.scorers import load_scorer

    return load_scorer(spec, "cpu")


@pytest.mark.parametrize(("query", "long", "limit"), [("", True, 248), ("?mode=short", False, 77)])
def test_embeddings_equal_fgclip_forward(folder: Path, query: str, long: bool, limit: int) -> None:
    import torch
    from transformers import CLIPImageProcessor

    scorer = _load(f"fgclip:{folder}{query}")
    texts = _texts()
    assert scorer.max_text_tokens == limit
    assert scorer.count_tokens(texts)[0] < 20 and scorer.count_tokens(texts)[-1] > 248
    state = _state(folder)
    want = reference_text(state, _own_ids(folder, texts, limit), long=long)
    got = scorer.encode_texts(texts).embeddings
    assert torch.allclose(got, want, atol=1e-5)
    pixels = CLIPImageProcessor.from_pretrained(str(folder))(_images(), return_tensors="pt")
    want_img = reference_image(state, pixels["pixel_values"])
    assert torch.allclose(scorer.encode_images(_images()), want_img, atol=1e-5)


def test_the_long_tables_and_projection_matter(folder: Path) -> None:
    """Without _res (or without text_filip_projection) the result moves: no stock model passes."""
    import torch

    state = _state(folder)
    ids = _own_ids(folder, _texts(), 248)
    real = reference_text(state, ids, long=True)
    no_res = dict(state)
    no_res["text_model.embeddings.position_embedding_res.weight"] = state[
        "text_model.embeddings.position_embedding_ori.weight"
    ]
    no_filip = {**state, "text_filip_projection.weight": state["text_projection.weight"]}
    for other in (no_res, no_filip):
        gap = (reference_text(other, ids, long=True) - real).norm(dim=-1)
        assert bool((gap[1:] > 0.05).all())
    got = _load(f"fgclip:{folder}").encode_texts(_texts()).embeddings
    assert torch.allclose(got, real, atol=1e-5)


def test_modes_and_protocol_are_recorded(folder: Path) -> None:
    long, short = _load(f"fgclip:{folder}"), _load(f"fgclip:{folder}?mode=short")
    square = _load(f"fgclip:{folder}?protocol=fgclip")
    alias = _load(f"fgclip:{folder}?resize=square")
    assert long.fingerprint != short.fingerprint and long.provenance["mode"] == "long"
    assert square.fingerprint == long.fingerprint  # same weights, same texts
    assert square.preprocess_id != long.preprocess_id == short.preprocess_id
    assert alias.preprocess_id == square.preprocess_id


def test_square_protocol_resizes_before_the_processor(folder: Path) -> None:
    import pickle

    import torch
    from transformers import CLIPImageProcessor

    scorer = _load(f"fgclip:{folder}?protocol=fgclip")
    images = _images()
    squashed = [im.resize((32, 32), Image.Resampling.BICUBIC) for im in images]
    pixels = CLIPImageProcessor.from_pretrained(str(folder))(squashed, return_tensors="pt")
    want = reference_image(_state(folder), pixels["pixel_values"])
    assert torch.allclose(scorer.encode_images(images), want, atol=1e-5)
    assert torch.equal(pickle.loads(pickle.dumps(scorer.preprocess))(images[0]),
                       scorer.preprocess(images[0]))  # fmt: skip


@pytest.mark.parametrize(
    ("drop", "needle"),
    [
        (("text_model.embeddings.position_embedding_res.weight",), "position_embedding_res"),
        (("text_filip_projection.weight",), "text_filip_projection"),
        (("vision_model.post_layernorm.weight",), "missing keys: vision_model.post_layernorm"),
    ],
)
def test_missing_tensors_fail_in_one_line(tmp_path: Path, drop: tuple[str, ...], needle: str):
    bad = make_tiny_fgclip(tmp_path / "bad", drop=drop)
    with pytest.raises(ModelLoadError) as err:
        _load(f"fgclip:{bad}")
    assert needle in str(err.value) and str(bad) in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_table_length_and_bad_files_are_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    bad = make_tiny_fgclip(tmp_path / "short_res")
    state = load_file(str(bad / "model.safetensors"))
    key = "text_model.embeddings.position_embedding_res.weight"
    state[key] = torch.cat([state[key], state[key][:4]])  # 252 rows
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"position_embedding_res.weight has shape \(252"):
        _load(f"fgclip:{bad}")
    (bad / "model.safetensors").write_bytes(b"\x10\x00truncated")
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        _load(f"fgclip:{bad}")
    (bad / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no weights \(\*.safetensors or \*.bin\)"):
        _load(f"fgclip:{bad}")
    with pytest.raises(ModelLoadError, match="unknown mode 'medium'"):
        _load(f"fgclip:{bad}?mode=medium")
    with pytest.raises(ModelLoadError, match="neither a local folder nor a hub model"):
        _load("fgclip:org/not-cached-anywhere")


def test_plain_torch_weights_load_the_same(folder: Path, tmp_path: Path) -> None:
    """A folder with pytorch_model.bin instead of safetensors (read with weights_only)."""
    import shutil

    import torch

    copy = tmp_path / "bin"
    shutil.copytree(folder, copy)
    torch.save(_state(folder), copy / "pytorch_model.bin")
    (copy / "model.safetensors").unlink()
    texts = _texts()[:2]
    want = _load(f"fgclip:{folder}").encode_texts(texts).embeddings
    assert torch.equal(_load(f"fgclip:{copy}").encode_texts(texts).embeddings, want)


def test_hub_id_resolves_from_the_hub_cache(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id loads its cached snapshot offline (HF_HUB_OFFLINE=1, set by conftest)."""
    from hub_cache import hub_snapshot
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    hub_snapshot(hub, "qihoo360/fg-clip-tiny", "c" * 40, folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    scorer = _load("fgclip:qihoo360/fg-clip-tiny")
    assert (scorer.provenance["hub"], scorer.provenance["revision"]) == (
        "qihoo360/fg-clip-tiny",
        "c" * 40,
    )
    assert len(scorer.provenance["weights_sha256"]["model.safetensors"]) == 64
    assert scorer.fingerprint != _load(f"fgclip:{folder}").fingerprint  # the hub id is recorded


def test_cli_run_records_the_248_limit(folder: Path, tmp_path: Path) -> None:
    import json

    from densecap_eval.cli.app import main

    out = tmp_path / "runs"
    argv = ["run", "--model", f"fgclip:{folder}", "--task", "dci", "--sample", "--out", str(out),
            "--device", "cpu", "--bootstrap", "10", "--no-cache"]  # fmt: skip
    assert main(argv) == 0
    (metrics,) = out.rglob("metrics.json")
    assert '"max_text_tokens": 248' in metrics.read_text() or (
        json.loads((metrics.parent / "run.json").read_text())["model"]["max_text_tokens"] == 248
    )
