"""``longclip:``: a tiny Long-CLIP file in the released layout against a plain-torch reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hub_cache import hub_file, use_hub_cache
from sample_run import run_dci_sample
from tiny_longtext import (
    longclip_state,
    longclip_text_features,
    openai_image_embeddings,
    random_images,
    save_longclip,
    texts_of_lengths,
)
from tiny_models import one_thread

from densecap_eval import load_scorer
from densecap_eval.core.errors import ModelLoadError

_one_thread = pytest.fixture(autouse=True)(one_thread)
LENGTHS = [10, 100, 240, 400]  # the last two straddle and pass the 248-token limit


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("longclip") / "longclip-T.pt"
    return path, save_longclip(path)


@pytest.fixture(scope="module")
def scorer(released: tuple[Path, dict[str, torch.Tensor]]):
    return load_scorer(f"longclip:{released[0]}", device="cpu")


def test_limit_and_counts_follow_the_family_tokenizer(scorer) -> None:
    texts = texts_of_lengths(LENGTHS)
    assert scorer.max_text_tokens == 248 and scorer.kind == "embedding"
    assert scorer.count_tokens(texts) == [n + 2 for n in LENGTHS]  # sot + words + eot
    assert scorer.text_cut(texts) == [False, False, False, True]
    ids = scorer.tokenize_ids(texts[:1])[0]
    assert len(ids) == 12 and ids[0] == 49406 and ids[-1] == 49407


def test_embeddings_equal_the_reference_forward(released, scorer) -> None:
    _, state = released
    texts, images = texts_of_lengths(LENGTHS), random_images(4)
    want_txt = F.normalize(longclip_text_features(state, texts), dim=-1)
    want_img = openai_image_embeddings(state, images)
    got_txt = scorer.encode_texts(texts).embeddings
    got_img = scorer.encode_images(images)
    assert (got_txt - want_txt).abs().max().item() < 1e-5
    assert (got_img - want_img).abs().max().item() < 1e-5
    # the 400-token text is cut as Long-CLIP cuts: 247 tokens + EOT, the same as 246 words
    assert (
        got_txt[3] - scorer.encode_texts(texts_of_lengths([246])).embeddings[0]
    ).abs().max() < 1e-6


def test_the_res_table_matters(released, scorer) -> None:
    """A stock loader keeping only positional_embedding would be far off: the test sees it."""
    _, state = released
    texts = texts_of_lengths([100, 240])
    stock = F.normalize(longclip_text_features(state, texts, use_res=False), dim=-1)
    assert (scorer.encode_texts(texts).embeddings - stock).abs().max().item() > 0.05


def test_protocol_longclip_rounds_weights_through_fp16(tmp_path: Path) -> None:
    path = tmp_path / "fp32.pt"
    torch.save(longclip_state(1), path)  # fp32 weights: rounding changes them
    ours = load_scorer(f"longclip:{path}", device="cpu")
    theirs = load_scorer(f"longclip:{path}?protocol=longclip", device="cpu")
    assert ours.fingerprint != theirs.fingerprint
    assert theirs.provenance["protocol"] == "longclip"
    w = theirs.model.transformer.resblocks[0].attn.in_proj_weight
    assert torch.equal(w, w.half().float())
    assert torch.equal(theirs.model.token_embedding.weight, ours.model.token_embedding.weight)
    texts = texts_of_lengths([30])
    diff = (ours.encode_texts(texts).embeddings - theirs.encode_texts(texts).embeddings).abs()
    assert 0 < diff.max().item() < 1e-2
    with pytest.raises(ModelLoadError, match="unknown protocol 'fp8'"):
        load_scorer(f"longclip:{path}?protocol=fp8", device="cpu")


def _bad(tmp_path: Path, drop: str | None = None, rows: int | None = None) -> Path:
    state = longclip_state(2)
    if drop:
        del state[drop]
    if rows:
        state["positional_embedding_res"] = state["positional_embedding_res"][:rows]
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    ("drop", "rows", "message"),
    [
        ("positional_embedding_res", None, "has no positional_embedding_res: not a Long-CLIP"),
        (
            None,
            77,
            r"positional_embedding_res has shape \(77, 64\), Long-CLIP's text tower has 248",
        ),
        ("visual.proj", None, "lacks visual.proj"),
        ("ln_final.bias", None, "missing keys: ln_final.bias"),
    ],
)
def test_bad_files_fail_in_one_line(tmp_path: Path, drop, rows, message) -> None:
    path = _bad(tmp_path, drop, rows)
    with pytest.raises(ModelLoadError, match=message) as err:
        load_scorer(f"longclip:{path}", device="cpu")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_and_missing_file(tmp_path: Path, released) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(released[0].read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match=f"cannot read checkpoint {cut}"):
        load_scorer(f"longclip:{cut}", device="cpu")
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        load_scorer(f"longclip:{tmp_path}/nope.pt", device="cpu")


def test_hub_name_resolves_through_the_hub_cache(
    tmp_path: Path, released, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "c" * 40
    hub_file(
        tmp_path / "hub",
        "BeichenZhang/LongCLIP-L",
        commit,
        "longclip-L.pt",
        released[0].read_bytes(),
    )
    use_hub_cache(monkeypatch, tmp_path / "hub")
    hub = load_scorer("longclip:BeichenZhang/LongCLIP-L", device="cpu")
    local = load_scorer(f"longclip:{released[0]}", device="cpu")
    assert hub.provenance["hub"] == "BeichenZhang/LongCLIP-L"
    assert hub.provenance["file"] == "longclip-L.pt" and hub.provenance["revision"] == commit
    assert hub.provenance["weights_sha256"] == local.provenance["weights_sha256"]
    texts = texts_of_lengths([20])
    assert torch.equal(hub.encode_texts(texts).embeddings, local.encode_texts(texts).embeddings)
    with pytest.raises(ModelLoadError, match="the hub could not give BeichenZhang/LongCLIP-B"):
        load_scorer("longclip:BeichenZhang/LongCLIP-B", device="cpu")


def test_cli_run_on_the_sample_records_the_limit(tmp_path: Path, released) -> None:
    metrics, card = run_dci_sample(f"longclip:{released[0]}", tmp_path)
    assert metrics and all(m["model_max_text_tokens"] == 248 for m in metrics.values())
    assert card["model"]["max_text_tokens"] == 248
