"""lora backend: a peft adapter saved next to a tiny hf CLIP, merged through the spec string."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_tiny_hf_clip, make_tiny_lora, one_thread

from densecap_eval import load_scorer
from densecap_eval.core.errors import ModelLoadError

_one_thread = pytest.fixture(autouse=True)(one_thread)


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(n)]


TEXTS = ["a red cube.", "a blue ball on a green mat.", "two cats"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    base_dir = tmp_path_factory.mktemp("base")
    base = make_tiny_hf_clip(base_dir)
    adapter_dir = tmp_path_factory.mktemp("adapter") / "dci_pick1"
    return base, make_tiny_lora(adapter_dir, base), adapter_dir


def test_score_equals_peft_merged_model_called_directly(tiny) -> None:
    from peft import PeftModel
    from transformers import AutoModel, AutoProcessor

    base, spec, adapter_dir = tiny
    path = base[len("hf:") :]
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(path), str(adapter_dir))
    model = model.merge_and_unload().eval()
    processor = AutoProcessor.from_pretrained(path)
    ims = images(2)
    with torch.no_grad():
        expected = model(
            **processor(text=TEXTS, images=ims, padding=True, return_tensors="pt")
        ).logits_per_image
    got = load_scorer(spec, device="cpu").score(ims, TEXTS)
    assert (got - expected).abs().max().item() <= 1e-5


def test_adapter_changes_scores_and_fingerprint(tiny, tmp_path: Path) -> None:
    base, spec, _ = tiny
    ims = images(2)
    lora, plain = load_scorer(spec, device="cpu"), load_scorer(base, device="cpu")
    assert (lora.score(ims, TEXTS) - plain.score(ims, TEXTS)).abs().max().item() > 1e-3
    assert lora.fingerprint != plain.fingerprint
    assert lora.preprocess_id == plain.preprocess_id  # same processor
    other = load_scorer(make_tiny_lora(tmp_path / "other", base, seed=1), device="cpu")
    assert other.fingerprint != lora.fingerprint
    assert load_scorer(spec, device="cpu").fingerprint == lora.fingerprint


def test_bad_input(tiny, tmp_path: Path) -> None:
    base, _, adapter_dir = tiny
    cases = [
        (f"lora:{tmp_path / 'absent'}@{base}", "adapter directory not found"),
        (f"lora:{tmp_path}@{base}", "has no adapter_config.json"),
        (f"lora:{adapter_dir}", "malformed model spec"),
        (f"lora:{adapter_dir}@open_clip:ViT-B-32/openai", "LoRA base must be an hf: spec"),
        (f"lora:{adapter_dir}@hf:{tmp_path / 'nobase'}", "cannot load the config"),
    ]
    for spec, pattern in cases:
        with pytest.raises(ModelLoadError, match=pattern):
            load_scorer(spec, device="cpu")
