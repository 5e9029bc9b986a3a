"""``lotlip:``: a tiny LoTLIP checkpoint and BERT folder against a plain-torch reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hub_cache import hub_file, use_hub_cache
from sample_run import run_dci_sample
from tiny_longtext import (
    half_pixels,
    lotlip_state,
    lotlip_text_features,
    random_images,
    save_lotlip,
    timm_vit_features,
    write_bert_folder,
)
from tiny_models import one_thread

from densecap_eval import load_scorer
from densecap_eval.core.errors import ModelLoadError

_one_thread = pytest.fixture(autouse=True)(one_thread)
WORDS = "the red cat sat on a blue mat near an old green door".split()


def sentences(n_words: int) -> str:
    """Sentences of six words joined by ". " (the rule LoTLIP turns into [SEP])."""
    words = [WORDS[i % len(WORDS)] for i in range(n_words)]
    return ". ".join(" ".join(words[i : i + 6]) for i in range(0, n_words, 6)) + "."


# about 10, 100, 240 and 400 tokens; LoTLIP's limit is 128 ([CLS] + 2 corners + text + [SEP])
TEXTS = [sentences(6), sentences(84), sentences(204), sentences(342)]


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("lotlip")
    bert = write_bert_folder(folder / "bert-base-uncased")
    path = folder / "model.pt"
    return path, bert, save_lotlip(path)


@pytest.fixture(scope="module")
def scorer(released):
    path, bert, _ = released
    return load_scorer(f"lotlip:{path}?bert={bert}", device="cpu")


def _tokenizer(bert: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bert), local_files_only=True)
    tok.add_tokens(["[Corner0]", "[Corner1]"], special_tokens=True)
    return tok


def reference_ids(bert: Path, texts: list[str]) -> torch.Tensor:
    """LoTLIP's HFTokenizer: ". " -> [SEP], corners prepended, BERT at 128 padded."""
    prepared = [
        " ".join(("[Corner0] [Corner1]" + "[SEP]".join(t.split(". "))).split()) for t in texts
    ]
    return _tokenizer(bert)(
        prepared, return_tensors="pt", max_length=128, padding="max_length", truncation=True
    ).input_ids


def test_tokenizer_rule_and_counts(released, scorer) -> None:
    _, bert, _ = released
    vocab = (bert / "vocab.txt").read_text().split("\n")
    ids = scorer.tokenize_ids(["The red cat. Sat on a mat."])[0]
    cls, sep, c0, c1 = 2, 3, len(vocab) - 1, len(vocab)  # vocab.txt ends with a newline
    words = [vocab.index(w) for w in "the red cat".split()]
    rest = [vocab.index(w) for w in "sat on a mat .".split()]
    assert ids == [cls, c0, c1, *words, sep, *rest, sep]  # the period before [SEP] is gone
    counts = scorer.count_tokens(TEXTS)
    # words + inner [SEP]s + final period + [CLS], corners, [SEP]
    assert counts[0] == 6 + 0 + 1 + 4 and counts[1] == 84 + 13 + 1 + 4
    assert scorer.max_text_tokens == 128
    assert scorer.text_cut(TEXTS) == [False, False, True, True]
    # chunk-mean's pieces fit 128 with LoTLIP's own overhead (4 special tokens each)
    assert scorer.encode_texts(TEXTS[2:], policy="chunk-mean").cut == [False, False]


def test_embeddings_equal_the_reference_forward(released, scorer) -> None:
    _, bert, state = released
    ids = reference_ids(bert, TEXTS)
    want_txt = F.normalize(lotlip_text_features(state, ids), dim=-1)
    got = scorer.encode_texts(TEXTS)
    assert (got.embeddings - want_txt).abs().max().item() < 1e-5
    images = random_images(4)
    pixels = torch.stack([half_pixels(im) for im in images])
    want_img = F.normalize(timm_vit_features(state, pixels), dim=-1)
    assert (scorer.encode_images(images) - want_img).abs().max().item() < 1e-5
    # no RGB conversion in LoTLIP; we convert: a grey image scores as its RGB copy
    grey = images[0].convert("L")
    assert torch.equal(scorer.encode_images([grey]), scorer.encode_images([grey.convert("RGB")]))


def test_the_corner_mask_matters(released, scorer) -> None:
    """A stock BERT tower (plain padding mask) would be off: the test sees it."""
    _, bert, state = released
    ids = reference_ids(bert, TEXTS[:2])
    stock = F.normalize(lotlip_text_features(state, ids, corner_mask=False), dim=-1)
    assert (scorer.encode_texts(TEXTS[:2]).embeddings - stock).abs().max().item() > 1e-3


def test_batches_do_not_change_embeddings(scorer) -> None:
    together = scorer.encode_texts(TEXTS).embeddings
    alone = torch.cat([scorer.encode_texts([t]).embeddings for t in TEXTS])
    assert (together - alone).abs().max().item() < 1e-5


def test_bad_inputs_fail_in_one_line(tmp_path: Path, released) -> None:
    path, bert, _ = released
    with pytest.raises(ModelLoadError, match=r"needs its BERT folder: add \?bert=DIR"):
        load_scorer(f"lotlip:{path}", device="cpu")
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_scorer(f"lotlip:{path}?bert={tmp_path}", device="cpu")
    state = lotlip_state(1)
    rows = "text.transformer.embeddings.word_embeddings.weight"
    state[rows] = state[rows][:-2]  # a checkpoint without the corner rows
    bad = tmp_path / "nocorner.pt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(ModelLoadError, match="has 21 rows; the BERT folder's vocabulary") as err:
        load_scorer(f"lotlip:{bad}?bert={bert}", device="cpu")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    state = lotlip_state(1)
    del state["visual.trunk.norm.bias"]
    torch.save({"state_dict": state}, bad)
    with pytest.raises(ModelLoadError, match=r"missing keys: trunk\.norm\.bias"):
        load_scorer(f"lotlip:{bad}?bert={bert}", device="cpu")


def test_hub_default_file(tmp_path: Path, released, monkeypatch: pytest.MonkeyPatch) -> None:
    path, bert, _ = released
    commit = "e" * 40
    hub_file(
        tmp_path / "hub", "weiwu-ww/LoTLIP-ViT-B-16-100M", commit, "model.pt", path.read_bytes()
    )
    use_hub_cache(monkeypatch, tmp_path / "hub")
    hub = load_scorer(f"lotlip:weiwu-ww/LoTLIP-ViT-B-16-100M?bert={bert}", device="cpu")
    assert (hub.provenance["file"], hub.provenance["revision"]) == ("model.pt", commit)
    assert set(hub.provenance["bert_files_sha256"]) == {
        "config.json",
        "vocab.txt",
        "tokenizer_config.json",
    }


def test_cli_run_on_the_sample_records_the_limit(tmp_path: Path, released) -> None:
    path, bert, _ = released
    metrics, _ = run_dci_sample(f"lotlip:{path}?bert={bert}", tmp_path)
    assert metrics and all(m["model_max_text_tokens"] == 128 for m in metrics.values())
