"""Released HF-style model folders read without their own modeling code.

Families such as FG-CLIP ship ``config.json`` + safetensors + tokenizer files with custom
modeling code that does not run on transformers 5 (or loads wrongly there). Their loaders read
the folder themselves: these helpers find the folder (a local directory, or a hub id resolved
to its cached or downloaded snapshot) and read its JSON and weights with one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import hash_files, hub_weights_identity

if TYPE_CHECKING:
    import torch

# What a snapshot download fetches: configs, weights, tokenizer and processor files; plain
# torch weights only when a repo has no safetensors (repos often hold both).
FOLDER_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
TORCH_WEIGHTS = ("*.bin",)


def weight_patterns(folder: Path) -> tuple[str, ...]:
    """The weight files read (and hashed): ``*.safetensors``, else plain torch ``*.bin``."""
    return ("*.safetensors",) if any(folder.glob("*.safetensors")) else TORCH_WEIGHTS


def resolve_folder(source: str, *, spec: str) -> tuple[Path, dict[str, Any]]:
    """(folder, identity) of a local directory or a hub id (its snapshot, offline from cache).

    The identity holds the weights' sha256 (and, for a hub id, the repo and resolved revision).
    """
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"{spec}: {local} is a file; expected a model folder")
        return local, {"weights_sha256": hash_files(local, weight_patterns(local))}
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(source, allow_patterns=list(FOLDER_FILES)))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(source, allow_patterns=list(TORCH_WEIGHTS)))
    except Exception as exc:  # no network, unknown repo, not in the cache ...
        raise ModelLoadError(
            f"{spec}: {source} is neither a local folder nor a hub model that can be fetched "
            f"(offline: not in the hub cache): {str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from exc
    return folder, hub_weights_identity(source, folder.name, weight_patterns(folder))


def read_json(path: Path, *, spec: str) -> dict[str, Any]:
    """A JSON object from ``path`` or ModelLoadError naming the file."""
    if not path.is_file():
        raise ModelLoadError(f"{spec}: {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{spec}: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{spec}: {path} does not hold a JSON object")
    return data


def read_safetensors(folder: Path, *, spec: str) -> dict[str, torch.Tensor]:
    """All tensors of the folder's ``*.safetensors`` files (shards merged), else of its plain
    torch ``*.bin`` files (read with ``weights_only``: anything needing full pickle is refused)."""
    from safetensors.torch import load_file

    from densecap_eval.scorers.openclip import read_state_dict

    files = sorted(p for pattern in weight_patterns(folder) for p in folder.glob(pattern))
    if not files:
        raise ModelLoadError(f"{spec}: no weights (*.safetensors or *.bin) in {folder}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".bin":
            try:
                state.update(read_state_dict(path))
            except ModelLoadError as exc:
                raise ModelLoadError(f"{spec}: {exc}") from exc
            continue
        try:
            state.update(load_file(str(path), device="cpu"))
        except Exception as exc:  # truncated or foreign file
            raise ModelLoadError(f"{spec}: cannot read weights {path}: {exc}") from exc
    return state


def drop_position_ids(state: dict[str, torch.Tensor], *, spec: str, where: Path) -> None:
    """Remove saved ``*.position_ids`` buffers (0, 1, 2 ... by construction, rebuilt by the model).

    A buffer that is not the plain range is refused: the model would silently ignore it.
    """
    import torch

    for key in [k for k in state if k.endswith(".position_ids")]:
        ids = state.pop(key)
        if not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
            raise ModelLoadError(f"{spec}: {where}: {key} is not 0..{ids.numel() - 1}")
