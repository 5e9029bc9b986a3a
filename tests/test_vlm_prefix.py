"""Prefix sharing in the generative pair scorers (vqascore:, captionlik:), on tiny random models.

With prefix sharing (the default) each distinct image's prompt prefix (the image tokens and the
fixed text before the caption) runs once and its pairs' continuations run over its KV cache; the
scores must equal the per-pair path's (``?share_prefix=0``) within 1e-4, with either padding side,
on batches mixing caption lengths and images with many captions and with one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tiny_vlms
import torch
from pictures import noise_image
from PIL import Image

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers import vlm

LOADERS = {"vqascore": vlm.load_vqascore, "captionlik": vlm.load_captionlik}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vlms_prefix")
    return {
        "llava": tiny_vlms.build_llava(root / "llava"),
        "qwen2vl": tiny_vlms.build_qwen2vl(root / "qwen2vl"),
        "llava_image_last": tiny_vlms.build_llava_image_last(root / "llava_image_last"),
    }


_SCORERS: dict[str, Any] = {}


@pytest.fixture
def scorer_for(models: dict[str, Path]) -> Any:
    def get(prefix: str, family: str, query: str = "") -> Any:
        spec = f"{prefix}:{models[family]}{query}"
        if spec not in _SCORERS:
            _SCORERS[spec] = LOADERS[prefix](spec, "cpu", "fp32")
        return _SCORERS[spec]

    return get


# Qwen2-VL: 12, 10, 16 and 16 image tokens; the last two have the same count but different grids
# (8 x 8 and 4 x 16 patches), so one prefix length with two multimodal-RoPE offsets.
IMAGES = [
    noise_image(0, (40, 32)),
    noise_image(1, (24, 48)),
    noise_image(2, (32, 32)),
    noise_image(3, (64, 20)),
]
TEXTS = [
    "a red cat",
    "two big dogs on the left of a tree. There are people near the house",
    "sky",
    "a man and a woman with a blue car on the street",
    "the grey wall",
]
# Image 0 has five captions, image 1 one, image 2 three, image 3 two; the engine's order (by
# text length, then photo) interleaves them.
PAIRS = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (2, 2), (2, 0), (2, 3), (3, 4), (3, 1)]
CASES = [
    ("vqascore", "llava", ""),
    ("vqascore", "qwen2vl", ""),
    ("captionlik", "llava", ""),
    ("captionlik", "qwen2vl", "?reduce=sum"),
]


def batch() -> tuple[list[Image.Image], list[str]]:
    order = sorted(PAIRS, key=lambda p: (len(TEXTS[p[1]].split()), p[0]))
    return [IMAGES[i] for i, _ in order], [TEXTS[t] for _, t in order]


def off_query(query: str) -> str:
    return f"{query}&share_prefix=0" if query else "?share_prefix=0"


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize(("prefix", "family", "query"), CASES)
def test_shared_prefix_scores_equal_the_per_pair_path(
    scorer_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    family: str,
    query: str,
    padding_side: str,
) -> None:
    shared = scorer_for(prefix, family, query)
    plain = scorer_for(prefix, family, off_query(query))
    assert shared.config["share_prefix"] is True and plain.config["share_prefix"] is False
    images, texts = batch()
    reference = plain.score_pairs(images, texts)  # left padding, as loaded
    for scorer in (shared, plain):
        monkeypatch.setattr(scorer.tokenizer, "padding_side", padding_side)
    calls: list[int] = []
    real = shared._tail_group
    monkeypatch.setattr(
        shared,
        "_tail_group",
        lambda enc, group, *a: calls.append(len(group)) or real(enc, group, *a),
    )
    got = shared.score_pairs(images, texts)
    again = plain.score_pairs(images, texts)
    assert got.shape == (len(PAIRS),) and got.dtype == torch.float32
    assert float((got - reference).abs().max()) <= 1e-4
    assert float((again - reference).abs().max()) <= 1e-4
    # All four images went through shared prefixes, and the scores differ between pairs.
    assert sum(calls) == 4
    assert float(got.max() - got.min()) > 1e-3
    # Each pair scores the same alone (one image, one caption) as in the batch.
    alone = torch.stack(
        [shared.score_pairs([im], [t])[0] for im, t in zip(images, texts, strict=True)]
    )
    assert float((got - alone).abs().max()) <= 1e-4


def test_qwen2vl_batch_mixes_prefix_lengths_and_rope_offsets(scorer_for: Any) -> None:
    scorer = scorer_for("vqascore", "qwen2vl")
    grids = scorer.processor.image_processor(IMAGES, return_tensors="pt")["image_grid_thw"]
    tokens = (grids.prod(dim=-1) // 4).tolist()
    assert tokens == [12, 10, 16, 16] and grids[2].tolist() != grids[3].tolist()


def test_each_distinct_image_goes_through_the_vision_tower_once(scorer_for: Any) -> None:
    scorer = scorer_for("captionlik", "llava")
    seen: list[int] = []
    tower = scorer.model.model.vision_tower
    handle = tower.register_forward_hook(
        lambda _m, args, kwargs, _o: seen.append(
            int((args[0] if args else kwargs["pixel_values"]).shape[0])
        ),
        with_kwargs=True,
    )
    try:
        images, texts = batch()
        scorer.score_pairs(images, texts)
    finally:
        handle.remove()
    assert seen == [4]  # 11 pairs, 4 distinct images, one prefix forward


def test_caption_before_the_image_falls_back_and_says_so(scorer_for: Any) -> None:
    vqa = scorer_for("vqascore", "llava_image_last")
    assert vqa.prompt("a cat").startswith('USER: Does this figure show "a cat"')
    assert vqa.config["share_prefix"] is False
    assert vqa.config["share_prefix_off"] == "the caption comes before the image in the prompt"
    images, texts = batch()
    plain = scorer_for("vqascore", "llava_image_last", "?share_prefix=0")
    assert (
        float((vqa.score_pairs(images, texts) - plain.score_pairs(images, texts)).abs().max()) == 0
    )
    # A caption scored as the reply still follows the image: that prefix is shared.
    lik = scorer_for("captionlik", "llava_image_last")
    assert lik.config["share_prefix"] is True and "share_prefix_off" not in lik.config
    off = scorer_for("captionlik", "llava_image_last", "?share_prefix=0")
    assert (
        float((lik.score_pairs(images, texts) - off.score_pairs(images, texts)).abs().max()) <= 1e-4
    )


def test_share_prefix_0_takes_the_per_pair_path(
    scorer_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = scorer_for("vqascore", "llava", "?share_prefix=0")
    shared = scorer_for("vqascore", "llava")
    assert plain.config["share_prefix_off"] == "asked off (?share_prefix=0)"
    # Same scores by construction, so the same fingerprint (cached scores are shared).
    assert plain.fingerprint == shared.fingerprint
    assert {k: v for k, v in plain.config.items() if not k.startswith("share_prefix")} == {
        k: v for k, v in shared.config.items() if not k.startswith("share_prefix")
    }

    def never(*args: Any) -> Any:
        raise AssertionError("prefix sharing ran although asked off")

    monkeypatch.setattr(plain, "_tail_shared", never)
    images, texts = batch()
    assert plain.score_pairs(images, texts).shape == (len(PAIRS),)


def test_token_boundary_mismatch_falls_back_per_pair(
    scorer_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny tokenizer splits on word boundaries, so the prefix ends with '"'; an empty caption
    # makes the prompt read '""?', one token across the boundary: that pair takes the old path.
    shared = scorer_for("vqascore", "qwen2vl")
    plain = scorer_for("vqascore", "qwen2vl", "?share_prefix=0")
    # The scorer ends its prefix before the token next to the caption; the whole text before
    # the caption as the prefix shows the fallback.
    monkeypatch.setattr(shared, "_prefix_text", shared._prompt_before_text())
    before = dict(shared.config.get("share_prefix_fallbacks", {}))
    images = [IMAGES[0], IMAGES[0], IMAGES[1]]
    texts = ["", "a red cat", ""]
    got = shared.score_pairs(images, texts)
    after = shared.config["share_prefix_fallbacks"]
    reason = "prompt tokens differ from the prefix's at the boundary"
    assert after[reason] - before.get(reason, 0) == 2
    assert float((got - plain.score_pairs(images, texts)).abs().max()) <= 1e-4


def test_share_prefix_option_is_checked(models: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="share_prefix must be 0 or 1"):
        vlm.load_vqascore(f"vqascore:{models['llava']}?share_prefix=maybe", "cpu", "fp32")
