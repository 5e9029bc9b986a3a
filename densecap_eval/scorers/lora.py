"""``lora:ADAPTER_DIR@BASE_SPEC``: a peft LoRA adapter merged onto an ``hf:`` base model.

DCI's released adapters (``dci_pick1``, ``dci_pick1_nl0``) are of this kind, on
``hf:openai/clip-vit-base-patch32``. The adapter is merged into the weights
(``merge_and_unload``), so scoring costs what the base model costs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from densecap_eval.core.config import Precision, TextPolicy
from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import hash_file, hash_files, spec_loader
from densecap_eval.scorers.hf import HFScorer, load_hf_parts

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
BASE_PREFIXES = ("hf",)


def parse_spec(rest: str, *, spec: str) -> tuple[str, str]:
    """``ADAPTER_DIR@hf:BASE`` -> (adapter_dir, base rest); the first ``@PREFIX:`` splits."""
    match = re.match(r"^(.+?)@([A-Za-z_][\w-]*):(.*)$", rest)
    if not match:
        raise ModelLoadError(
            f"malformed model spec {spec!r}: expected lora:ADAPTER_DIR@BASE_SPEC "
            "(e.g. lora:path/to/dci_pick1@hf:openai/clip-vit-base-patch32)"
        )
    adapter, prefix, base = match.groups()
    if prefix not in BASE_PREFIXES:
        raise ModelLoadError(
            f"{spec}: LoRA base must be an hf: spec, got {prefix}: "
            f"(supported: {', '.join(p + ':' for p in BASE_PREFIXES)})"
        )
    return adapter, base


@spec_loader("lora")
def load(
    rest: str,
    *,
    spec: str,
    device: torch.device,
    precision: Precision,
    text_policy: TextPolicy,
) -> HFScorer:
    """Registry loader (via `spec_loader`) for the ``lora:`` prefix."""
    adapter_str, base = parse_spec(rest, spec=spec)
    adapter = Path(adapter_str).expanduser()
    if not adapter.is_dir():
        raise ModelLoadError(f"{spec}: LoRA adapter directory not found: {adapter}")
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise ModelLoadError(f"{spec}: {adapter} has no {ADAPTER_CONFIG} (not a peft adapter)")
    weights = hash_files(adapter, ADAPTER_WEIGHTS)
    if not weights:
        raise ModelLoadError(
            f"{spec}: {adapter} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})"
        )
    model, processor, identity = load_hf_parts(base, spec=spec)
    from peft import PeftModel

    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except Exception as exc:  # wrong base, unknown target modules, shape mismatch ...
        raise ModelLoadError(f"{spec}: cannot apply LoRA adapter {adapter}: {exc}") from exc
    identity = {
        "base": identity,
        "adapter_config_sha256": hash_file(adapter / ADAPTER_CONFIG),
        "adapter_weights_sha256": weights,
    }
    return HFScorer(
        model=merged,
        processor=processor,
        spec=spec,
        device=device,
        precision=precision,
        text_policy=text_policy,
        identity=identity,
    )
