"""`densecap-eval download elevater[/<key>]`: what is there, and exactly how to get what is not.

ELEVATER's test splits are served only from the toolkit's own Azure storage (a read-only SAS URL
its maintainers renew), through Computer-Vision-in-the-Wild/DataDownload's
``classification/download_datasets.py --ds <ELEVATER name> --output_dir <root>`` with
vision-datasets 0.2.17; densecap-eval fetches nothing. That script writes
``<root>/<root_folder>/`` (train, val and test files: densecap-eval reads only the test index, the
test zip(s) and the label map, offline, as they are).

``download elevater`` lists the 20 datasets, present or not; ``download elevater/<key>`` says,
for one dataset, where its files must be, which are missing, the command that fetches them, and
CLIP_benchmark's ``wds`` copy of it (dataset ``clip_benchmark``: its own split, on the Hugging
Face Hub as ``clip-benchmark/wds_<name>``), present or not under the same root.
"""

from __future__ import annotations

from pathlib import Path

from densecap_eval.datasets.elevater import catalog, layout
from densecap_eval.datasets.elevater.wds import CLIP_BENCHMARK_NAMES, folder_name

DATADOWNLOAD = "https://github.com/Computer-Vision-in-the-Wild/DataDownload"
HUB = "https://huggingface.co/datasets/clip-benchmark"
STEPS = (
    "ELEVATER's test splits come from the toolkit's own storage: run Computer-Vision-in-the-Wild/"
    "DataDownload's classification/download_datasets.py --ds <name> --output_dir {root} (with "
    "vision-datasets 0.2.17), which writes <root>/<folder>/<files> as listed; densecap-eval "
    "reads them offline as they are (no unpacking); `densecap-eval download elevater/<key>` "
    "gives the exact commands for one dataset"
)


def status(root: Path) -> list[tuple[str, str, list[str]]]:
    """``(key, folder, missing files)`` for every dataset, in catalog order."""
    return [(key, catalog.spec(key).root_folder, missing_files(root, key))
            for key in catalog.dataset_keys()]  # fmt: skip


def missing_files(root: Path, key: str) -> list[str]:
    """The test files of ``key`` that are not under ``root`` (index, zips, label map)."""
    s = catalog.spec(key)
    folder = layout.dataset_dir(root, s)
    return [f for f in layout.required_files(s) if not (folder / f).is_file()]


def elevater_steps(root: Path, key: str) -> list[str]:
    """The commands that put ELEVATER's ``key`` under ``root``."""
    s = catalog.spec(key)
    return [
        f"elevater/{key} is ELEVATER's {s.elevater_name}, served only from the toolkit's own "
        "storage; fetch it with Computer-Vision-in-the-Wild/DataDownload:",
        "  pip install vision-datasets==0.2.17",
        f"  git clone {DATADOWNLOAD} && cd DataDownload/classification",
        f"  python download_datasets.py --ds {s.elevater_name} --output_dir {root}",
        f"It writes {root / s.root_folder}/ (train and val too: densecap-eval reads only "
        f"{', '.join(layout.required_files(s))}; the others may be deleted).",
    ]


def clip_benchmark_line(root: Path, key: str) -> str:
    """Where CLIP_benchmark's copy of ``key`` goes and how to get it (or that it has none)."""
    if key not in CLIP_BENCHMARK_NAMES:
        return f"clip_benchmark/{key}: CLIP_benchmark has no copy of this dataset"
    name, folder = CLIP_BENCHMARK_NAMES[key], folder_name(key)
    where = root / folder
    state = "present" if where.is_dir() else "missing"
    line = (f"clip_benchmark/{key}: CLIP_benchmark's wds/{name} copy (its own split, not "
            f"ELEVATER's) at {where}/: {state}")  # fmt: skip
    if state == "missing":
        line += f"; get it with git lfs installed: git clone {HUB}/{folder} {where}"
    return line


def describe_one(root: Path, key: str) -> tuple[str, str]:
    """(what is there, what is left to do) for ``elevater/<key>`` under ``root``."""
    s = catalog.spec(key)
    missing = missing_files(root, key)
    head = (f"elevater/{key} (ELEVATER's {s.elevater_name}: {s.format} layout, "
            f"{s.test_images} test images, {len(s.classes)} classes, {s.metric}) at "
            f"{root / s.root_folder}/: ")  # fmt: skip
    if missing:
        head += f"missing {', '.join(missing)}"
    else:
        head += f"present ({', '.join(layout.required_files(s))})"
    done = "\n".join([head, clip_benchmark_line(root, key)])
    return done, "\n".join(elevater_steps(root, key)) if missing else ""


def download(
    root: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    part: str | None = None,
) -> str:
    """Fetch nothing; say which of the 20 test splits are under ``root`` and how to get the rest
    (``part``: one dataset, DCI's key, in full)."""
    from densecap_eval.core.errors import DownloadError
    from densecap_eval.datasets.dci.download import DownloadMessage

    del progress
    if url is not None or sha256 is not None:
        raise DownloadError(
            "ELEVATER has no single archive: --url/--sha256 do not apply; follow the steps "
            "`densecap-eval download elevater` prints"
        )
    root = Path(root).expanduser()
    if part is not None:
        if part not in catalog.dataset_keys():
            raise DownloadError(
                f"no ELEVATER dataset {part!r}; known: {', '.join(catalog.dataset_keys())}"
            )
        return DownloadMessage(*describe_one(root, part))
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
