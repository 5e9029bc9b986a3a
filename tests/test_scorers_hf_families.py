"""``hf:`` beyond CLIP / SigLIP: MetaCLIP 2 (native) and folders with their own modeling code
(``?trust_remote_code=1``, opt-in only)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tiny_models import make_tiny_hf_clip, one_thread

from densecap_eval.core.errors import ModelLoadError

WORDS = "a red blue dog cat tree house car small large green sky".split()


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    yield from one_thread()


def _load(spec: str) -> Any:
    from densecap_eval.scorers import load_scorer

    return load_scorer(spec, "cpu")


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (200, 40, 40)), Image.new("RGB", (30, 50), (10, 90, 200))]


# -- MetaCLIP 2 ------------------------------------------------------------------------------


def make_tiny_metaclip2(folder: Path) -> Path:
    """A metaclip_2 folder: XLM-R style tokenizer (<s>=0, <pad>=1, </s>=2), 24 text positions."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPProcessor,
        MetaClip2Config,
        MetaClip2Model,
        XLMRobertaTokenizer,
    )

    pieces = ["▁" + w for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz▁")
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, -1.0 - i / 100) for i, p in enumerate(pieces)] + [("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=vocab, model_max_length=24)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2}  # fmt: skip
    config = MetaClip2Config(
        text_config={"vocab_size": len(vocab), "max_position_embeddings": 24, "bos_token_id": 0,
                     "pad_token_id": 1, "eos_token_id": 2, **tower},
        vision_config={"image_size": 32, "patch_size": 16, **tower},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    MetaClip2Model(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def metaclip2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_metaclip2(tmp_path_factory.mktemp("mc2") / "metaclip2")


def test_metaclip2_loads_natively_and_pools_the_first_end_token(metaclip2: Path) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import AutoTokenizer, MetaClip2Model

    scorer = _load(f"hf:{metaclip2}")
    assert scorer.max_text_tokens == 24 and scorer.model_type == "metaclip_2"
    texts = ["a red dog", "small green house " * 3, "a cat in a tree " * 6]  # the last one is cut
    counts = scorer.count_tokens(texts)
    assert counts[0] < 10 < 24 < counts[2]
    model = MetaClip2Model.from_pretrained(str(metaclip2)).eval()
    tok = AutoTokenizer.from_pretrained(str(metaclip2))
    ids = tok(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_model(input_ids=ids["input_ids"]).last_hidden_state
        first_eos = (ids["input_ids"] == 2).int().argmax(-1)
        want = model.text_projection(hidden[torch.arange(3), first_eos])
        argmax = model.text_projection(hidden[torch.arange(3), ids["input_ids"].argmax(-1)])
        img = model.get_image_features(
            **scorer.processor.image_processor(_images(), return_tensors="pt")
        )
    got = scorer.encode_texts(texts).embeddings
    assert torch.allclose(got, F.normalize(want, dim=-1), atol=1e-5)
    # argmax pooling (a stock CLIPModel with eos id 2) lands elsewhere: not a substitute
    assert bool(((F.normalize(argmax, dim=-1) - got).norm(dim=-1) > 0.05).all())
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    assert torch.allclose(scorer.encode_images(_images()), F.normalize(img, dim=-1), atol=1e-5)


def test_metaclip2_row_in_the_model_table() -> None:
    from densecap_eval.scorers import list_models

    rows = [r for r in list_models() if r.prefix == "hf"]
    assert any("MetaCLIP 2" in r.family for r in rows)
    assert any("trust_remote_code" in r.example for r in rows)


# -- remote code ---------------------------------------------------------------------------------

_CONFIG_PY = """
from transformers import CLIPConfig


class TinyRemoteConfig(CLIPConfig):
    model_type = "tiny_remote_clip"
"""

_MODELING_PY = '''
from transformers import CLIPModel

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteModel(CLIPModel):
    """A CLIP whose text features are flipped: proof that this file ran."""

    config_class = TinyRemoteConfig

    def get_text_features(self, input_ids=None, attention_mask=None, **kwargs):
        out = super().get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        out = getattr(out, "pooler_output", out)
        return -out
'''


def make_tiny_remote(folder: Path) -> Path:
    make_tiny_hf_clip(folder)
    (folder / "configuration_tiny_remote.py").write_text(textwrap.dedent(_CONFIG_PY))
    (folder / "modeling_tiny_remote.py").write_text(textwrap.dedent(_MODELING_PY))
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="tiny_remote_clip",
        architectures=["TinyRemoteModel"],
        auto_map={
            "AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
            "AutoModel": "modeling_tiny_remote.TinyRemoteModel",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_remote(tmp_path_factory.mktemp("remote") / "tiny-remote")


def test_remote_code_needs_the_opt_in(remote: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelLoadError) as err:
        _load(f"hf:{remote}")
    message = str(err.value)
    assert str(remote) in message and f"hf:{remote}?trust_remote_code=1" in message
    assert "\n" not in message
    from densecap_eval.cli.app import main

    assert main(["run", "--model", f"hf:{remote}", "--task", "dci", "--sample"]) == 2
    assert "trust_remote_code=1" in capsys.readouterr().err


def test_auto_map_on_a_known_model_type_still_needs_the_opt_in(tmp_path: Path) -> None:
    folder = make_tiny_remote(tmp_path / "clip-with-code")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "clip"  # transformers would load a stock CLIPModel and skip the code
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"ships its own modeling code .*trust_remote_code=1"):
        _load(f"hf:{folder}")


def test_remote_code_runs_with_the_opt_in_and_is_recorded(remote: Path) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import CLIPModel

    scorer = _load(f"hf:{remote}?trust_remote_code=1")
    assert type(scorer.model).__name__ == "TinyRemoteModel"
    assert scorer.provenance["trust_remote_code"] is True
    code = scorer.provenance["remote_code_sha256"]
    assert sorted(code) == ["configuration_tiny_remote.py", "modeling_tiny_remote.py"]
    texts = ["a red square", "a blue circle on a plain background"]
    stock = CLIPModel.from_pretrained(str(remote)).eval()  # same weights, stock code
    ids = scorer.tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        want = stock.get_text_features(**ids)
    want = getattr(want, "pooler_output", want)
    assert torch.allclose(scorer.encode_texts(texts).embeddings, -F.normalize(want, dim=-1),
                          atol=1e-5)  # fmt: skip
    # the code is part of the fingerprint
    (remote / "modeling_tiny_remote.py").write_text(textwrap.dedent(_MODELING_PY) + "\n# edited\n")
    assert _load(f"hf:{remote}?trust_remote_code=1").fingerprint != scorer.fingerprint


def test_remote_code_without_feature_methods_is_refused(tmp_path: Path) -> None:
    folder = make_tiny_remote(tmp_path / "no-features")
    (folder / "modeling_tiny_remote.py").write_text(
        textwrap.dedent(
            """
            from transformers import CLIPModel

            from .configuration_tiny_remote import TinyRemoteConfig


            class TinyRemoteModel(CLIPModel):
                config_class = TinyRemoteConfig
                get_text_features = None
            """
        )
    )
    with pytest.raises(ModelLoadError, match="has no get_text_features / get_image_features"):
        _load(f"hf:{folder}?trust_remote_code=1")
    with pytest.raises(ModelLoadError, match="trust_remote_code must be 1 or 0"):
        _load(f"hf:{folder}?trust_remote_code=yes")
    with pytest.raises(ModelLoadError, match="unknown option"):
        _load(f"hf:{folder}?revision=main")


def test_open_clip_worldwide_tokenizer_missing_offline_is_one_line(tmp_path: Path) -> None:
    """open_clip ``*-worldwide`` (MetaCLIP 2) configs name the hub tokenizer facebook/xlm-v-base."""
    import open_clip
    from safetensors.torch import save_file

    from densecap_eval.scorers.openclip import register_config

    config = tmp_path / "tiny-worldwide.json"
    text = {"hf_tokenizer_name": "org/not-cached-xlm-v", "context_length": 77, "vocab_size": 64,
            "width": 32, "heads": 2, "layers": 1, "pool_type": "eos", "eos_id": 2}  # fmt: skip
    vision = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16}
    config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": vision, "text_cfg": text}))
    name, _, _ = register_config(config)
    state = open_clip.create_model(name).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError) as err:
        _load(f"open_clip:{config}/{tmp_path / 'w.safetensors'}")
    message = str(err.value)
    assert "'org/not-cached-xlm-v'" in message and "hf download org/not-cached-xlm-v" in message
    assert "\n" not in message


def test_fgclip_folders_are_sent_to_their_own_prefix(tmp_path: Path) -> None:
    """hf: would load FG-CLIP v1 as a stock 77-token CLIP, dropping its long tables: refused."""
    from tiny_fgclip import make_tiny_fgclip
    from tiny_fgclip2 import make_tiny_fgclip2

    v1 = make_tiny_fgclip(tmp_path / "v1")
    with pytest.raises(ModelLoadError, match=f"load it with fgclip:{v1}"):
        _load(f"hf:{v1}")
    v2 = make_tiny_fgclip2(tmp_path / "v2")
    with pytest.raises(ModelLoadError, match=f"load it with fgclip2:{v2}"):
        _load(f"hf:{v2}")


def test_remote_code_from_the_hub_cache_offline(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id with remote code resolves from its cached snapshot only (HF_HUB_OFFLINE=1)."""
    from hub_cache import hub_snapshot
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    hub_snapshot(hub, "org/tiny-remote", "d" * 40, remote)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    scorer = _load("hf:org/tiny-remote?trust_remote_code=1")
    assert type(scorer.model).__name__ == "TinyRemoteModel"
    assert scorer.provenance["revision"] == "d" * 40
    assert sorted(scorer.provenance["remote_code_sha256"]) == [
        "configuration_tiny_remote.py",
        "modeling_tiny_remote.py",
    ]
    with pytest.raises(ModelLoadError, match=r"hf:org/tiny-remote\?trust_remote_code=1"):
        _load("hf:org/tiny-remote")


@pytest.mark.slow
def test_cli_runs_record_the_text_limit(metaclip2: Path, remote: Path, tmp_path: Path) -> None:
    """MetaCLIP 2 and an opted-in remote-code folder run the DCI sample through the CLI."""
    from sample_run import run_dci_sample

    for name, spec in (
        ("metaclip2", f"hf:{metaclip2}"),
        ("remote", f"hf:{remote}?trust_remote_code=1"),
    ):
        metrics, card = run_dci_sample(spec, tmp_path / name)
        limit = load_scorer_limit(spec)
        assert card["status"] == "complete", name
        assert {m["model_max_text_tokens"] for m in metrics.values()} == {limit}, name


def load_scorer_limit(spec: str) -> int:
    return int(_load(spec).max_text_tokens)
