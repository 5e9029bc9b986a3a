"""load_scorer's registry: prefixes, listings, plugins, devices, precisions, the built-in model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densecap_eval import list_models, load_scorer
from densecap_eval.core.errors import ModelLoadError, UnknownNameError
from densecap_eval.core.registry import Registry
from densecap_eval.scorers import SCORERS
from densecap_eval.scorers.common import resolve_device, resolve_precision, spec_loader


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("openclip:ViT-B-32/openai", r"did you mean 'open_clip'\?"),
        ("hff:openai/clip", r"did you mean 'hf'\?"),
        ("ViT-B-32", r"has no PREFIX"),
    ],
)
def test_unknown_prefix_lists_known_ones(spec: str, pattern: str) -> None:
    with pytest.raises(UnknownNameError, match=pattern) as err:
        load_scorer(spec)
    for prefix in ("builtin", "hf", "lora", "open_clip"):
        assert prefix in str(err.value)


def test_list_models_has_a_row_for_every_prefix() -> None:
    rows = list_models()
    assert {row.prefix for row in rows} == set(SCORERS.names())
    assert [row.prefix for row in rows] == sorted(row.prefix for row in rows)
    for row in rows:
        assert row.example.startswith(f"{row.prefix}:"), row
        assert row.kind in ("embedding", "late-interaction", "pair"), row
        assert row.family and row.text_limit and row.conversion, row
    examples = {row.example for row in rows}
    assert {"builtin:tiny", "open_clip:ViT-B-32/laion2b_s34b_b79k"} <= examples


def test_each_prefix_declares_its_kind_once() -> None:
    from densecap_eval.scorers import SCORER_KINDS, scorer_kind

    for prefix in SCORERS.names():
        assert SCORERS.kind_of(prefix) in SCORER_KINDS, prefix
    for row in list_models():  # a row's kind is its prefix's
        assert row.kind == SCORERS.kind_of(row.prefix), row
    assert scorer_kind("vqascore:x") == "pair" and scorer_kind("itm:x") == "pair"
    assert scorer_kind("flair:x") == "late-interaction" and scorer_kind("hf:x") == "embedding"
    assert scorer_kind("nosuch:x") == "unknown"


def test_a_prefix_is_registered_with_a_kind_before_its_rows() -> None:
    from densecap_eval.scorers.catalog import ModelCatalog, ScorerRegistry

    registry = ScorerRegistry()
    catalog = ModelCatalog(registry.kind_of)
    row = {"family": "f", "text_limit": "7", "conversion": "none", "example": "mine:x"}
    with pytest.raises(ValueError, match="register the prefix 'mine'"):
        catalog.add("mine", **row)
    with pytest.raises(ValueError, match="scorer kind 'dense'"):
        registry.register_prefix("mine", "os.path:join", kind="dense")  # type: ignore[arg-type]
    registry.register_prefix("mine", "os.path:join", kind="pair")
    catalog.add("mine", **row)
    assert [(r.prefix, r.kind) for r in catalog.rows(registry.names())] == [("mine", "pair")]


def test_models_command_prints_the_same_rows(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from densecap_eval.cli.app import main

    assert main(["models", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == [row.as_dict() for row in list_models()]
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    for row in list_models():
        assert row.example in table


def test_registered_prefix_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    @spec_loader("fake")
    def loader(rest, *, spec, device, precision, text_policy):
        seen.update(rest=rest, spec=spec, device=device, precision=precision, policy=text_policy)
        return "scorer"

    monkeypatch.setitem(SCORERS._entries, "fake", loader)
    assert load_scorer("fake:x/y", device="cpu", text_policy="chunk-mean") == "scorer"
    assert seen == {
        "rest": "x/y",
        "spec": "fake:x/y",
        "device": torch.device("cpu"),
        "precision": "fp32",
        "policy": "chunk-mean",
    }
    fake = [row for row in list_models() if row.prefix == "fake"]
    assert [(row.kind, row.example) for row in fake] == [("unknown", "fake:...")]


def test_entry_point_plugins_join_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import densecap_eval.core.registry as registry_module

    ep = EntryPoint(name="myvlm", value="os.path:join", group="densecap_eval.scorers")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep])
    fresh: Registry[object] = Registry(
        "model spec prefix", entry_point_group="densecap_eval.scorers"
    )
    import os.path

    assert fresh.names() == ["myvlm"] and fresh.get("myvlm") is os.path.join


def test_importing_scorers_does_not_import_torch() -> None:
    code = "import densecap_eval.scorers, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_builtin_tiny_missing_files_say_how_to_make_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import densecap_eval.scorers.builtin as builtin

    monkeypatch.setattr(builtin, "bundled_models_dir", lambda: tmp_path)
    with pytest.raises(ModelLoadError, match=r"scripts/train_tiny_clip\.py"):
        load_scorer("builtin:tiny", device="cpu")
    with pytest.raises(UnknownNameError, match="builtin:tiny"):
        load_scorer("builtin:huge", device="cpu")


def test_builtin_tiny_loads_the_bundled_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tiny_models import make_tiny_open_clip

    import densecap_eval.scorers.builtin as builtin

    make_tiny_open_clip(tmp_path / "src")
    shutil.copy(tmp_path / "src" / "tiny_open_clip.json", tmp_path / "tiny_clip.json")
    shutil.copy(tmp_path / "src" / "tiny_open_clip.safetensors", tmp_path / "tiny_clip.safetensors")
    monkeypatch.setattr(builtin, "bundled_models_dir", lambda: tmp_path)
    scorer = load_scorer("builtin:tiny", device="cpu")
    assert scorer.spec == "builtin:tiny" and scorer.max_text_tokens == 77
    assert scorer.encode_texts(["a red cube"]).embeddings.shape == (1, 16)


def test_device_and_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_precision(None, cpu) == "fp32"
    assert resolve_precision(None, torch.device("cuda")) == "fp32"  # reference-exact by default
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ModelLoadError, match="use 'bf16' or 'fp32'"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ModelLoadError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", cpu)
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device(None).type in ("mps", "cpu")


def test_unknown_text_policy() -> None:
    with pytest.raises(UnknownNameError, match="unknown text policy 'chunk'"):
        load_scorer("builtin:tiny", device="cpu", text_policy="chunk")  # type: ignore[arg-type]
