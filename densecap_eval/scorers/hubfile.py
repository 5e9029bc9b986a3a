"""One released checkpoint file: a local path, or a file of a hub repository.

The long-text families publish a single ``.pt`` file per model in a hub repository
(``BeichenZhang/LongCLIP-L`` holds ``longclip-L.pt``). A spec names either a local file or
``ORG/NAME`` (with the family's default file name) or ``ORG/NAME/FILE``; huggingface_hub
resolves a hub name through its cache, so ``HF_HUB_OFFLINE=1`` works once it is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers.common import hash_file


def resolve_checkpoint(
    name: str, *, spec: str, default_file: str | None
) -> tuple[Path, dict[str, Any]]:
    """(local path, identity) of the checkpoint ``name`` stands for.

    The identity always holds the file's sha256 (replaced weights change the fingerprint);
    a hub file also records the repository, the file name and the resolved revision.
    """
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_file():
            raise ModelLoadError(f"{spec}: {local} is not a checkpoint file")
        return local, {"weights_sha256": hash_file(local)}
    parts = name.split("/")
    if len(parts) not in (2, 3) or not all(parts) or name.startswith((".", "~")):
        raise ModelLoadError(f"{spec}: checkpoint not found: {local}")
    repo = "/".join(parts[:2])
    filename = parts[2] if len(parts) == 3 else default_file
    if filename is None:
        raise ModelLoadError(
            f"{spec}: {local} is not a local file, and no default file is known for hub repo "
            f"{repo!r}: name it as {repo}/FILE.pt"
        )
    try:
        from huggingface_hub import hf_hub_download

        found = Path(hf_hub_download(repo, filename))
    except Exception as exc:  # offline, no such repo or file: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{spec}: {local} is not a local file, and the hub could not give {repo}/{filename}: "
            f"{first}"
        ) from exc
    # hub cache layout: .../snapshots/<commit>/<file>
    revision = found.parent.name if found.parent.parent.name == "snapshots" else None
    identity = {"hub": repo, "file": filename, "revision": revision}
    return found, {**identity, "weights_sha256": hash_file(found)}
