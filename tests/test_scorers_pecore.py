"""PE-Core (Perception Encoder) through ``open_clip:``: its 32-token text limit reaches the scorer.

open_clip 3.3 ships the PE-Core configs (timm ``vit_pe_core_*`` vision, a custom text tower with
context 32, 72 for bigG). A real config's text tower is too big for a fast test, so the test
registers a copy of PE-Core-T's config with a shrunk text tower (same tokenizer, same context)
through the ``open_clip:CONFIG.json/WEIGHTS`` path, and checks the scorer against open_clip.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from tiny_longtext import random_images, texts_of_lengths
from tiny_models import one_thread

from densecap_eval import load_scorer

_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.mark.parametrize(
    ("arch", "context"),
    [("PE-Core-T-16-384", 32), ("PE-Core-B-16", 32), ("PE-Core-L-14-336", 32),
     ("PE-Core-bigG-14-448", 72)],
)  # fmt: skip
def test_open_clip_configs_give_the_pe_context(arch: str, context: int) -> None:
    import open_clip

    assert open_clip.get_model_config(arch)["text_cfg"]["context_length"] == context
    assert open_clip.get_tokenizer(arch).context_length == context


def _build(config: dict):
    import open_clip

    return open_clip.CustomTextCLIP(**{k: v for k, v in config.items() if k != "custom_text"})


@pytest.fixture(scope="module")
def tiny_pe(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("pe")
    config = copy.deepcopy(open_clip.get_model_config("PE-Core-T-16-384"))
    config["embed_dim"] = 64
    config["text_cfg"].update(width=64, heads=1, layers=1)  # context_length stays 32
    (folder / "pe-core-t-tiny.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = _build(config)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "pe.safetensors"))
    spec = f"open_clip:{folder / 'pe-core-t-tiny.json'}/{folder / 'pe.safetensors'}"
    return spec, config, folder


@pytest.fixture(scope="module")
def scorer(tiny_pe):
    return load_scorer(tiny_pe[0], device="cpu")


def test_the_scorer_reports_32_and_counts_untruncated(scorer) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    texts = texts_of_lengths([10, 29, 30, 100])
    assert scorer.max_text_tokens == 32
    assert scorer.count_tokens(texts) == [12, 31, 32, 102]
    assert scorer.text_cut(texts) == [False, False, False, True]
    bpe = SimpleTokenizer()
    assert scorer.tokenize_ids(texts[:1]) == [[49406, *bpe.encode(texts[0]), 49407]]


def test_embeddings_equal_open_clip_called_directly(tiny_pe, scorer) -> None:
    import open_clip
    from safetensors.torch import load_file

    _, config, folder = tiny_pe
    model = _build(config)
    model.load_state_dict(load_file(str(folder / "pe.safetensors")))
    model.eval()
    texts, images = texts_of_lengths([10, 100]), random_images(2)
    with torch.no_grad():
        want_txt = model.encode_text(open_clip.tokenize(texts, context_length=32), normalize=True)
    got = scorer.encode_texts(texts)
    assert (got.embeddings - want_txt).abs().max().item() < 1e-5
    assert got.cut == [False, True] and got.n_tokens == [12, 102]
    # chunk-mean sees the whole 100-token text in 30-token pieces: not the truncated embedding
    chunked = scorer.encode_texts(texts, policy="chunk-mean").embeddings
    assert (chunked[1] - got.embeddings[1]).abs().max().item() > 1e-3
    pixels = torch.stack([scorer.preprocess(im) for im in images])
    assert pixels.shape[-1] == 384
    with torch.no_grad():
        want_img = model.encode_image(pixels, normalize=True)
    assert (scorer.encode_images(images) - want_img).abs().max().item() < 1e-5


@pytest.mark.slow
def test_cli_run_on_the_sample_records_32(tiny_pe, tmp_path: Path) -> None:
    from sample_run import run_dci_sample

    metrics, card = run_dci_sample(tiny_pe[0], tmp_path)
    assert card["status"] == "complete"
    assert {task: m["model_max_text_tokens"] for task, m in metrics.items()} == dict.fromkeys(
        metrics, 32
    )
