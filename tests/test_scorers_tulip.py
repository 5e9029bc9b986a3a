"""``tulip:``: a tiny TULIP checkpoint in its released layout against a plain-torch reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hub_cache import hub_file, use_hub_cache
from sample_run import run_dci_sample
from tiny_longtext import (
    openai_image_embeddings,
    random_images,
    save_tulip,
    texts_of_lengths,
    tulip_state,
    tulip_text_features,
)
from tiny_models import one_thread

from densecap_eval import load_scorer
from densecap_eval.core.errors import ModelLoadError

_one_thread = pytest.fixture(autouse=True)(one_thread)
LENGTHS = [10, 100, 240, 400]


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("tulip") / "tulip-tiny.pt"
    return path, save_tulip(path)


@pytest.fixture(scope="module")
def scorer(released):
    return load_scorer(f"tulip:{released[0]}", device="cpu")


def test_limit_counts_and_scale(scorer) -> None:
    texts = texts_of_lengths(LENGTHS)
    assert scorer.max_text_tokens == 248 and scorer.kind == "embedding"
    assert scorer.count_tokens(texts) == [n + 2 for n in LENGTHS]
    assert scorer.text_cut(texts) == [False, False, False, True]
    assert scorer.tokenize_ids(texts[:1])[0][0] == 49406
    assert scorer.logit_scale == 100.0  # TULIP's eval, not the file's logit_scale


def test_embeddings_equal_the_reference_forward(released, scorer) -> None:
    _, state = released
    texts, images = texts_of_lengths(LENGTHS), random_images(4)
    want_txt = F.normalize(tulip_text_features(state, texts), dim=-1)
    want_img = openai_image_embeddings(state, images)
    got_txt = scorer.encode_texts(texts).embeddings
    assert (got_txt - want_txt).abs().max().item() < 1e-5
    assert (scorer.encode_images(images) - want_img).abs().max().item() < 1e-5
    cut = scorer.encode_texts(texts_of_lengths([246])).embeddings[0]  # 247 tokens + EOT
    assert (got_txt[3] - cut).abs().max().item() < 1e-6
    scores = scorer.score(images, texts)
    assert torch.allclose(scores, 100 * want_img @ want_txt.T, atol=1e-3)


def test_rotary_positions_and_gelu_matter(released, scorer) -> None:
    """A stock CLIP text tower (no rotation, or QuickGELU) would be off: the test sees it."""
    _, state = released
    texts = texts_of_lengths([100, 240])
    got = scorer.encode_texts(texts).embeddings
    for kwargs in ({"rope": False}, {"gelu": "quick"}):
        other = F.normalize(tulip_text_features(state, texts, **kwargs), dim=-1)
        assert (got - other).abs().max().item() > 1e-3, kwargs


def test_batches_do_not_change_embeddings(scorer) -> None:
    texts = texts_of_lengths([5, 50, 300])
    together = scorer.encode_texts(texts).embeddings
    alone = torch.cat([scorer.encode_texts([t]).embeddings for t in texts])
    assert (together - alone).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    ("drop", "extra", "message"),
    [
        ("visual.proj", None, "lacks visual.proj"),
        ("transformer.resblocks.0.attn.in_proj_bias", None, "missing keys: transformer"),
        (None, "text.unknown", "unexpected keys: text.unknown"),
    ],
)
def test_bad_files_fail_in_one_line(tmp_path: Path, drop, extra, message) -> None:
    state = tulip_state(1)
    if drop:
        del state[drop]
    if extra:
        state[extra] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(ModelLoadError, match=message) as err:
        load_scorer(f"tulip:{path}", device="cpu")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unused_position_table_is_ignored(tmp_path: Path, released, scorer) -> None:
    """The 77-row table is not read: a file without it gives the same embeddings."""
    state = dict(released[1])
    del state["positional_embedding"]
    path = tmp_path / "nopos.pt"
    torch.save({"state_dict": state}, path)
    texts = texts_of_lengths([30])
    other = load_scorer(f"tulip:{path}", device="cpu")
    assert torch.equal(other.encode_texts(texts).embeddings, scorer.encode_texts(texts).embeddings)
    assert other.fingerprint != scorer.fingerprint  # another file, another key


def test_hub_file_resolves_through_the_hub_cache(
    tmp_path: Path, released, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "d" * 40
    hub_file(tmp_path / "hub", "mderakhshani/TULIP", commit, "tulip.pt", released[0].read_bytes())
    use_hub_cache(monkeypatch, tmp_path / "hub")
    hub = load_scorer("tulip:mderakhshani/TULIP/tulip.pt", device="cpu")
    assert (hub.provenance["hub"], hub.provenance["revision"]) == ("mderakhshani/TULIP", commit)
    with pytest.raises(ModelLoadError, match="no default file is known"):
        load_scorer("tulip:mderakhshani/TULIP", device="cpu")


def test_cli_run_on_the_sample_records_the_limit(tmp_path: Path, released) -> None:
    metrics, _ = run_dci_sample(f"tulip:{released[0]}", tmp_path)
    assert metrics and all(m["model_max_text_tokens"] == 248 for m in metrics.values())
