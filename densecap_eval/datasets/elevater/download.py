"""`densecap-eval download elevater`: what is there, and how to get what is not.

ELEVATER's test splits are served only from the toolkit's Azure blob (its SAS URL, which the
toolkit's maintainers renew); densecap-eval fetches nothing. The message lists, per dataset,
whether its test files are under the root and, for the missing ones, the files to put there.
"""

from __future__ import annotations

from pathlib import Path

from densecap_eval.datasets.elevater import catalog, layout

STEPS = (
    "ELEVATER's test splits come from the toolkit's own storage: run Computer-Vision-in-the-Wild/"
    "DataDownload's classification/download_datasets.py with --output_dir {root} (or "
    "vision-datasets 0.2.17), which writes <root>/<folder>/<files> as listed; densecap-eval "
    "reads them offline as they are (no unpacking)"
)


def status(root: Path) -> list[tuple[str, str, list[str]]]:
    """``(key, folder, missing files)`` for every dataset, in catalog order."""
    out = []
    for key in catalog.dataset_keys():
        s = catalog.spec(key)
        folder = layout.dataset_dir(root, s)
        missing = [f for f in layout.required_files(s) if not (folder / f).is_file()]
        out.append((key, s.root_folder, missing))
    return out


def download(
    root: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch nothing; say which of the 20 test splits are under ``root`` and how to get the rest."""
    from densecap_eval.core.errors import DownloadError
    from densecap_eval.datasets.dci.download import DownloadMessage

    del progress
    if url is not None or sha256 is not None:
        raise DownloadError(
            "ELEVATER has no single archive: --url/--sha256 do not apply; follow the steps "
            "`densecap-eval download elevater` prints"
        )
    root = Path(root).expanduser()
    rows = status(root)
    have = [key for key, _, missing in rows if not missing]
    lack = [(key, folder, missing) for key, folder, missing in rows if missing]
    done = f"ELEVATER under {root}: {len(have)} of {len(rows)} test splits present"
    if have:
        done += f" ({', '.join(have)})"
    if not lack:
        return DownloadMessage(done)
    lines = [STEPS.format(root=root)]
    lines += [f"  {key}: {folder}/ needs {', '.join(missing)}" for key, folder, missing in lack]
    return DownloadMessage(done, "\n".join(lines))
