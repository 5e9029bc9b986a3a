"""hf backend: tiny transformers CLIP, SigLIP and SigLIP 2 saved with save_pretrained."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from pictures import images
from PIL import Image
from tiny_models import make_tiny_hf_clip, make_tiny_hf_siglip, make_tiny_hf_siglip2, one_thread

from densecap_eval import EmbeddingScorer, load_scorer
from densecap_eval.core.errors import ModelLoadError, TextTooLongError

_one_thread = pytest.fixture(autouse=True)(one_thread)

LONG = " ".join(f"the cube {i} is red." for i in range(8))  # 8 x 18 characters + 7 spaces = 151


def texts(n: int) -> list[str]:
    return [("a red cube " * (1 + i % 4)).strip() + f" {i}." for i in range(n)]


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("hf")
    return {
        "clip": make_tiny_hf_clip(base / "clip"),
        "siglip": make_tiny_hf_siglip(base / "siglip"),
        "siglip2": make_tiny_hf_siglip2(base / "siglip2"),
    }


@pytest.fixture(scope="module")
def scorers(specs: dict[str, str]) -> dict:
    return {name: load_scorer(spec, device="cpu") for name, spec in specs.items()}


def direct_logits(spec: str, ims: list[Image.Image], txts: list[str]) -> torch.Tensor:
    """The library on its own: processor + model forward, the model's logits_per_image."""
    from transformers import AutoModel, AutoProcessor

    path = spec[len("hf:") :]
    model, processor = AutoModel.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)
    padding = True if model.config.model_type == "clip" else "max_length"
    inputs = processor(
        text=txts,
        images=ims,
        padding=padding,
        truncation=True,
        return_tensors="pt",
        max_length=model.config.text_config.max_position_embeddings,
    )
    with torch.no_grad():
        return model(**inputs).logits_per_image


@pytest.mark.parametrize("name", ["clip", "siglip", "siglip2"])
def test_score_equals_transformers_called_directly(specs, scorers, name: str) -> None:
    ims, txts = images(3), [*texts(4), LONG]
    got = scorers[name].score(ims, txts)
    expected = direct_logits(specs[name], ims, txts)
    assert got.dtype == torch.float32 and got.shape == (3, 5)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("name", "limit", "has_bias"),
    [("clip", 77, False), ("siglip", 64, True), ("siglip2", 64, True)],
)
def test_limits_and_logit_parameters(scorers, name: str, limit: int, has_bias: bool) -> None:
    scorer = scorers[name]
    assert isinstance(scorer, EmbeddingScorer) and not scorer.model.training
    assert scorer.max_text_tokens == limit
    assert (scorer.logit_bias is not None) == has_bias
    if has_bias:  # set by the fixture: scale 10, bias -2.5
        assert scorer.logit_scale == pytest.approx(10.0) and scorer.logit_bias == -2.5


@pytest.mark.parametrize("name", ["clip", "siglip", "siglip2"])
def test_batch_of_one_equals_batch_of_64(scorers, name: str) -> None:
    scorer = scorers[name]
    ims, txts = images(64, seed=1), [*texts(63), LONG]
    txt_all = scorer.encode_texts(txts).embeddings
    txt_one = torch.cat([scorer.encode_texts([t]).embeddings for t in txts])
    img_all = scorer.encode_images(ims)
    img_one = torch.cat([scorer.encode_images([im]) for im in ims])
    assert txt_all.shape[0] == img_all.shape[0] == 64
    assert (txt_all - txt_one).abs().max().item() <= 1e-5
    assert (img_all - img_one).abs().max().item() <= 1e-5


def test_clip_token_counts_match_open_clip_and_the_tokenizer(scorers) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    scorer, tok = scorers["clip"], SimpleTokenizer()
    txts = ["A photo of a cat.", LONG * 3]
    untruncated = [len(ids) for ids in scorer.tokenizer(txts, truncation=False)["input_ids"]]
    assert scorer.count_tokens(txts) == untruncated == [len(tok.encode(t)) + 2 for t in txts]
    assert scorer.count_tokens(txts)[0] == 8


def test_siglip_counts_characters_plus_end_token(scorers) -> None:
    # the fixture's tokenizer has one token per character (space included) and appends <eos>
    for name in ("siglip", "siglip2"):
        assert scorers[name].count_tokens(["A cat.", "", LONG]) == [7, 1, len(LONG) + 1]


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_chunk_mean_equals_truncate_within_the_limit_and_differs_beyond(scorers, name) -> None:
    scorer = scorers[name]
    long_text = LONG if name == "siglip" else LONG * 4
    short = texts(4)
    assert torch.equal(
        scorer.encode_texts(short, policy="chunk-mean").embeddings,
        scorer.encode_texts(short, policy="truncate").embeddings,
    )
    trunc = scorer.encode_texts([*short, long_text], policy="truncate")
    chunk = scorer.encode_texts([*short, long_text], policy="chunk-mean")
    assert (chunk.embeddings[:4] - trunc.embeddings[:4]).abs().max().item() <= 1e-5
    assert (chunk.embeddings[4] - trunc.embeddings[4]).abs().max().item() > 1e-3
    assert trunc.cut == [False] * 4 + [True] and chunk.cut == [False] * 5


def test_error_policy(scorers) -> None:
    with pytest.raises(TextTooLongError, match=r"152 tokens, over the model's limit of 64"):
        scorers["siglip"].encode_texts([LONG], policy="error")


@pytest.mark.parametrize("name", ["clip", "siglip2"])
def test_preprocess_pickles_and_fingerprint_is_stable(specs, scorers, name: str) -> None:
    scorer = scorers[name]
    restored = pickle.loads(pickle.dumps(scorer.preprocess))
    im = images(1)[0]
    assert torch.equal(restored(im), scorer.preprocess(im))
    again = load_scorer(specs[name], device="cpu")
    assert again.fingerprint == scorer.fingerprint and again.preprocess_id == scorer.preprocess_id


def test_fingerprints_differ_between_models(scorers) -> None:
    assert len({s.fingerprint for s in scorers.values()}) == 3


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load the config of local directory"):
        (tmp_path / "empty").mkdir()
        load_scorer(f"hf:{tmp_path / 'empty'}", device="cpu")
    with pytest.raises(ModelLoadError, match="malformed model spec"):
        load_scorer("hf:", device="cpu")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="model type 'bert' is not supported"):
        load_scorer(f"hf:{tmp_path / 'bert'}", device="cpu")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_scorer(f"hf:{tmp_path / 'file'}", device="cpu")


def test_hub_name_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="hub model"):
        load_scorer("hf:densecap-eval-tests/no-such-model", device="cpu")
