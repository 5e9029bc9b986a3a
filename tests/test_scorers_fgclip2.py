"""``fgclip2:``: FG-CLIP 2 folders as a stock SigLIP 2, with the family's per-image patch rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tiny_fgclip2 import PATCH, gemma_tokenizer, make_tiny_fgclip2, reference_long_text
from tiny_models import one_thread

from densecap_eval.core.errors import ModelLoadError

WORDS = "red blue green small large dog cat tree house car road sky water stone".split()
# About 10, 100, 240 and 400 characters-as-tokens (the tiny tokenizer is per character).
LENGTHS = (10, 100, 240, 400)
# (width, height) -> FG-CLIP 2's patch budget at 4 px patches: 70, 320, 720, 900 and 1024 patches
SIZES = {(40, 30): 128, (80, 64): 576, (120, 96): 784, (120, 120): 1024, (160, 120): 1024}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    yield from one_thread()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_fgclip2(tmp_path_factory.mktemp("fgclip2") / "fg-clip2-tiny")


def _texts() -> list[str]:
    out = []
    for n in LENGTHS:
        words, i = [], 0
        while len(" ".join(words)) < n - 1:
            words.append(WORDS[(i * 5 + n) % len(WORDS)].upper() if i % 3 == 0 else WORDS[i % 14])
            i += 1
        out.append(" ".join(words)[: n - 1])
    return out


def _images() -> list[Image.Image]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def _load(spec: str) -> Any:
    from densecap_eval.scorers import load_scorer

    return load_scorer(spec, "cpu")


def _state(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _own_inputs(texts: list[str]) -> tuple[Any, Any]:
    """FG-CLIP 2's eval: lower-cased, padded to 196, truncated (the folder's tokenizer)."""
    out = gemma_tokenizer()([t.lower() for t in texts], padding="max_length", max_length=196,
                            truncation=True, return_tensors="pt")  # fmt: skip
    return out["input_ids"], out["attention_mask"]


def test_text_equals_fgclip2_long_forward(folder: Path) -> None:
    import torch

    scorer = _load(f"fgclip2:{folder}")
    texts = _texts()
    assert scorer.max_text_tokens == 196
    counts = scorer.count_tokens(texts)
    assert counts[0] == 10 and counts[-1] == 400  # characters + end token, untruncated
    want = reference_long_text(_state(folder), *_own_inputs(texts))
    got = scorer.encode_texts(texts).embeddings
    assert torch.allclose(got, want, atol=1e-5)
    # lower-cased as FG-CLIP 2's eval does (this Gemma tokenizer would not)
    upper = scorer.encode_texts([t.upper() for t in texts]).embeddings
    assert torch.allclose(upper, got, atol=1e-6)


def test_the_long_tables_and_head_matter(folder: Path) -> None:
    state = _state(folder)
    ids, mask = _own_inputs(_texts())
    real = reference_long_text(state, ids, mask)
    e = "text_model.embeddings."
    no_res = {
        **state,
        e + "position_embedding_res.weight": state[e + "position_embedding_ori.weight"],
    }
    stock_head = {**state, "longtext_head.weight": state["text_model.head.weight"],
                  "longtext_head.bias": state["text_model.head.bias"]}  # fmt: skip
    for other in (no_res, stock_head):
        gap = (reference_long_text(other, ids, mask) - real).norm(dim=-1)
        assert bool((gap > 0.05).all())


def test_images_get_the_family_patch_budget_each(folder: Path) -> None:
    """Each image alone through SigLIP 2's processor at the family's budget, stock vision tower."""
    import torch
    import torch.nn.functional as F
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model

    scorer = _load(f"fgclip2:{folder}")
    images = _images()
    assert [scorer.preprocess.budget(im) for im in images] == list(SIZES.values())
    model = Siglip2Model(Siglip2Config.from_pretrained(str(folder))).eval()
    vision = {k: v for k, v in _state(folder).items() if k.startswith("vision_model.")}
    model.load_state_dict(vision, strict=False)
    processor = Siglip2ImageProcessorPil(patch_size=PATCH, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3)  # fmt: skip
    want, fixed = [], []
    with torch.no_grad():
        for image, budget in zip(images, SIZES.values(), strict=True):
            for out, n in ((want, budget), (fixed, 256)):
                inputs = processor(images=image, max_num_patches=n, return_tensors="pt")
                feats = model.get_image_features(**inputs)
                out.append(getattr(feats, "pooler_output", feats)[0])
    want_t = F.normalize(torch.stack(want), dim=-1)
    got = scorer.encode_images(images)  # one batch of five sizes
    assert torch.allclose(got, want_t, atol=1e-5)
    assert torch.allclose(scorer.encode_images(images[:1]), want_t[:1], atol=1e-5)
    # a stock SigLIP 2 processor at 256 patches gives other embeddings for the larger images
    gap = (F.normalize(torch.stack(fixed), dim=-1) - want_t).norm(dim=-1)
    assert bool((gap[1:] > 1e-3).all())


def test_short_mode_and_keys(folder: Path) -> None:
    long, short = _load(f"fgclip2:{folder}"), _load(f"fgclip2:{folder}?mode=short")
    assert (long.max_text_tokens, short.max_text_tokens) == (196, 64)
    assert long.fingerprint != short.fingerprint and short.provenance["mode"] == "short"
    assert long.provenance["lowercase"] is True
    texts = _texts()[:2]
    assert not bool(
        (long.encode_texts(texts).embeddings - short.encode_texts(texts).embeddings).abs().max()
        < 1e-3
    )
    assert long.logit_bias == pytest.approx(-3.0) and long.logit_scale == pytest.approx(7.389, 1e-3)


@pytest.mark.parametrize(
    ("drop", "needle"),
    [
        (("text_model.embeddings.position_embedding_res.weight",), "position_embedding_res"),
        (("longtext_head.weight",), "longtext_head.weight"),
        (("vision_model.post_layernorm.bias",), "missing keys: vision_model.post_layernorm"),
    ],
)
def test_missing_tensors_fail_in_one_line(tmp_path: Path, drop: tuple[str, ...], needle: str):
    bad = make_tiny_fgclip2(tmp_path / "bad", drop=drop)
    with pytest.raises(ModelLoadError) as err:
        _load(f"fgclip2:{bad}")
    assert needle in str(err.value) and str(bad) in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_table_length_is_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    bad = make_tiny_fgclip2(tmp_path / "bad")
    state = load_file(str(bad / "model.safetensors"))
    key = "text_model.embeddings.position_embedding_ori.weight"
    state[key] = state[key][:180].contiguous()
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"position_embedding_ori.weight has shape \(180"):
        _load(f"fgclip2:{bad}")
    assert torch.Size([180, 32]) == state[key].shape


def test_cli_run_records_the_196_limit(folder: Path, tmp_path: Path) -> None:
    import json

    from densecap_eval.cli.app import main

    out = tmp_path / "runs"
    argv = ["run", "--model", f"fgclip2:{folder}", "--task", "dci", "--sample", "--out",
            str(out), "--device", "cpu", "--bootstrap", "10", "--no-cache"]  # fmt: skip
    assert main(argv) == 0
    (card,) = out.rglob("run.json")
    assert json.loads(card.read_text())["model"]["max_text_tokens"] == 196
