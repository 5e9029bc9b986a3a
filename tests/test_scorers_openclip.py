"""open_clip backend: a tiny model from a config JSON and a safetensors file, loaded by spec."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from pictures import images
from tiny_models import OPEN_CLIP_CONFIG, make_tiny_open_clip, one_thread

from densecap_eval import EmbeddingScorer, load_scorer
from densecap_eval.core.errors import ModelLoadError, TextTooLongError

LONG = " ".join(f"The object number {i} is red." for i in range(20))  # 7 sentences of 8+ tokens


_one_thread = pytest.fixture(autouse=True)(one_thread)


def texts(n: int) -> list[str]:
    return [("a red square " * (1 + i % 9)).strip() + f" number {i}." for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("oc")
    return make_tiny_open_clip(folder), folder


@pytest.fixture(scope="module")
def scorer(tiny: tuple[str, Path]):
    return load_scorer(tiny[0], device="cpu")


def test_spec_loads_an_embedding_scorer(scorer) -> None:
    assert isinstance(scorer, EmbeddingScorer)
    assert scorer.kind == "embedding"
    assert scorer.max_text_tokens == 77
    assert scorer.precision == "fp32" and scorer.device == torch.device("cpu")
    assert not scorer.model.training


def test_score_equals_open_clip_called_directly(tiny, scorer) -> None:
    import open_clip
    from safetensors.torch import load_file

    model = open_clip.CLIP(**OPEN_CLIP_CONFIG)
    model.load_state_dict(load_file(str(tiny[1] / "tiny_open_clip.safetensors")))
    model.eval()
    preprocess = open_clip.image_transform(32, is_train=False)
    ims, txts = images(3), [*texts(4), LONG]
    with torch.no_grad():
        pixels = torch.stack([preprocess(im) for im in ims])
        expected, _ = model.get_logits(pixels, open_clip.tokenize(txts))
    got = scorer.score(ims, txts)
    assert got.dtype == torch.float32 and got.shape == (3, 5)
    assert (got - expected).abs().max().item() <= 1e-5


def test_batch_of_one_equals_batch_of_64(scorer) -> None:
    ims, txts = images(64, seed=1), [*texts(63), LONG]
    txt_all = scorer.encode_texts(txts).embeddings
    txt_one = torch.cat([scorer.encode_texts([t]).embeddings for t in txts])
    img_all = scorer.encode_images(ims)
    img_one = torch.cat([scorer.encode_images([im]) for im in ims])
    assert txt_all.shape == (64, 16) and img_all.shape == (64, 16)
    assert (txt_all - txt_one).abs().max().item() <= 1e-5
    assert (img_all - img_one).abs().max().item() <= 1e-5
    assert torch.allclose(txt_all.norm(dim=1), torch.ones(64), atol=1e-5)


def test_token_counts_are_untruncated_tokenizer_counts(scorer) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    txts = ["A photo of a cat.", "", LONG]
    # start, a, photo, of, a, cat, ".", end
    assert scorer.count_tokens(txts)[:2] == [8, 2]
    assert scorer.count_tokens(txts) == [len(tok.encode(t)) + 2 for t in txts]
    assert scorer.count_tokens(txts)[2] > 77


def test_token_ids_are_the_untruncated_ids_with_start_and_end(scorer) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    texts = ["A photo of a cat.", "word " * 100]
    ids = scorer.tokenize_ids(texts)
    assert ids[0] == [tok.sot_token_id, *tok.encode(texts[0]), tok.eot_token_id]
    assert [len(x) for x in ids] == scorer.count_tokens(texts) == [8, 102]


def test_chunk_mean_equals_truncate_within_the_limit_and_differs_beyond(scorer) -> None:
    short = texts(5)
    # all within the limit: the very same forward, bit for bit
    assert torch.equal(
        scorer.encode_texts(short, policy="chunk-mean").embeddings,
        scorer.encode_texts(short, policy="truncate").embeddings,
    )
    # mixed with a long text, the short ones share a batch with its chunks (float noise only)
    trunc = scorer.encode_texts([*short, LONG], policy="truncate")
    chunk = scorer.encode_texts([*short, LONG], policy="chunk-mean")
    assert (chunk.embeddings[:5] - trunc.embeddings[:5]).abs().max().item() <= 1e-6
    assert (chunk.embeddings[5] - trunc.embeddings[5]).abs().max().item() > 1e-3
    assert trunc.cut == [False] * 5 + [True]
    assert chunk.cut == [False] * 6  # every sentence fitted in a chunk
    assert chunk.n_tokens == trunc.n_tokens == scorer.count_tokens([*short, LONG])


def test_chunk_mean_is_the_mean_of_its_chunks(scorer) -> None:
    from densecap_eval.scorers.text_policy import split_chunks

    chunks, _ = split_chunks(LONG, limit=77, count=scorer.count_tokens)
    assert len(chunks) > 1 and all(n <= 77 for n in scorer.count_tokens(chunks))
    parts = scorer.encode_texts(chunks, policy="truncate").embeddings
    mean = torch.nn.functional.normalize(parts.mean(dim=0), dim=0)
    got = scorer.encode_texts([LONG], policy="chunk-mean").embeddings[0]
    assert (got - mean).abs().max().item() <= 1e-6


def test_error_policy_raises_on_long_text_only(scorer) -> None:
    assert scorer.encode_texts(texts(2), policy="error").cut == [False, False]
    with pytest.raises(TextTooLongError, match=r"over the model's limit of 77"):
        scorer.encode_texts([LONG], policy="error")


def test_default_policy_comes_from_load_scorer(tiny) -> None:
    strict = load_scorer(tiny[0], device="cpu", text_policy="error")
    with pytest.raises(TextTooLongError):
        strict.encode_texts([LONG])


def test_preprocess_is_picklable_and_ids_are_stable(tiny, scorer) -> None:
    again = load_scorer(tiny[0], device="cpu")
    restored = pickle.loads(pickle.dumps(scorer.preprocess))
    im = images(1)[0]
    assert torch.equal(restored(im), scorer.preprocess(im))
    assert again.fingerprint == scorer.fingerprint and len(scorer.fingerprint) == 16
    assert again.preprocess_id == scorer.preprocess_id


def test_fingerprint_changes_with_the_weights(tmp_path: Path, scorer) -> None:
    other = load_scorer(make_tiny_open_clip(tmp_path, seed=1), device="cpu")
    assert other.fingerprint != scorer.fingerprint
    assert other.preprocess_id == scorer.preprocess_id


def test_torch_checkpoint_loads_like_safetensors(tmp_path: Path, tiny, scorer) -> None:
    from safetensors.torch import load_file

    state = load_file(str(tiny[1] / "tiny_open_clip.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    other = load_scorer(f"open_clip:{tiny[1] / 'tiny_open_clip.json'}/{tmp_path / 'w.pt'}")
    ims, txts = images(2), texts(3)
    assert (other.score(ims, txts) - scorer.score(ims, txts)).abs().max().item() <= 1e-6


def test_bf16_autocast_on_cpu_is_close_to_fp32(tiny, scorer) -> None:
    bf16 = load_scorer(tiny[0], device="cpu", precision="bf16")
    got = bf16.encode_texts(texts(4)).embeddings
    assert got.dtype == torch.float32
    assert (got - scorer.encode_texts(texts(4)).embeddings).abs().max().item() < 0.1


class _Evil:  # anything that is not a tensor needs full pickle to load
    pass


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda d, cfg: f"open_clip:{cfg}", "malformed model spec"),
        (lambda d, cfg: "open_clip:", "malformed model spec"),
        (lambda d, cfg: f"open_clip:{cfg}/{d / 'absent.safetensors'}", "checkpoint not found"),
        (
            lambda d, cfg: f"open_clip:{d / 'absent.json'}/{d / 'w.safetensors'}",
            "model config not found",
        ),
        (
            lambda d, cfg: f"open_clip:NoSuchArch/{d / 'w.safetensors'}",
            "unknown open_clip architecture",
        ),
        (lambda d, cfg: f"open_clip:{d / 'bad.json'}/{d / 'w.safetensors'}", "lacks embed_dim"),
        (lambda d, cfg: f"open_clip:{cfg}/{d / 'evil.pt'}", "unrestricted pickle"),
        (
            lambda d, cfg: f"open_clip:{cfg}/{d / 'wide.safetensors'}",
            "does not fit the architecture",
        ),
    ],
)
def test_bad_input_raises_model_load_error(tmp_path: Path, tiny, make, pattern: str) -> None:
    import open_clip
    from safetensors.torch import save_file

    cfg = tiny[1] / "tiny_open_clip.json"
    (tmp_path / "bad.json").write_text(json.dumps({"vision_cfg": {}}), encoding="utf-8")
    torch.save({"weights": _Evil()}, tmp_path / "evil.pt")
    wide = json.loads(json.dumps(OPEN_CLIP_CONFIG))
    wide["text_cfg"]["width"] = 48
    save_file(open_clip.CLIP(**wide).state_dict(), str(tmp_path / "wide.safetensors"))
    with pytest.raises(ModelLoadError, match=pattern) as err:
        load_scorer(make(tmp_path, cfg), device="cpu")
    if "fit" in pattern:  # names the file and the first mismatching keys
        assert "wide.safetensors" in str(err.value) and "positional_embedding (77, 48)" in str(
            err.value
        )


def test_missing_keys_are_named(tmp_path: Path, tiny) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny[1] / "tiny_open_clip.safetensors"))
    del state["text_projection"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ModelLoadError, match=r"missing keys: text_projection"):
        load_scorer(
            f"open_clip:{tiny[1] / 'tiny_open_clip.json'}/{tmp_path / 'partial.safetensors'}"
        )


def test_fp16_on_cpu_is_refused(tiny) -> None:
    with pytest.raises(ModelLoadError, match="bf16"):
        load_scorer(tiny[0], device="cpu", precision="fp16")
