"""Peak memory of `densecap-eval inspect dci` over a 10,000-image split (issue 2: under 1 GB).

    python benchmarks/inspect_memory.py                 # generate 10,000 synthetic images
    python benchmarks/inspect_memory.py --root DIR      # or inspect an existing release
    python benchmarks/inspect_memory.py --images 2000 --keep

Without --root it writes a synthetic release whose train split holds every image. Photos: the
records are generated without JPEGs, then every record's photo is a hard link to one real
640x480 JPEG, so inspect opens and checks a real photo per image (as on the real release)
while the set costs a few MB of disk instead of ~500 MB.

The inspect command runs in a subprocess; its peak RSS (getrusage RUSAGE_CHILDREN ru_maxrss)
and wall time are printed, and the script exits 1 when the peak reaches the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH, HEIGHT = 640, 480
CLI = "import sys; from densecap_eval.cli.app import main; sys.exit(main(sys.argv[1:]))"


def build_release(out: Path, images: int, seed: int) -> Path:
    """A synthetic release with all ``images`` in train and hard-linked photos; returns ``out``."""
    from PIL import Image

    from densecap_eval.synth import generate_dci

    start = time.perf_counter()
    generate_dci(
        out,
        images=images,
        seed=seed,
        split_sizes=(images, 0, 0),
        width=WIDTH,
        height=HEIGHT,
        photos=False,
    )
    base = out / "densely_captioned_images"
    shared = out / "shared_photo.jpg"
    Image.radial_gradient("L").resize((WIDTH, HEIGHT)).convert("RGB").save(shared, quality=90)
    for record in sorted((base / "complete").glob("*.json")):
        image = json.loads(record.read_text(encoding="utf-8"))["image"]
        target = base / "photos" / image
        try:
            os.link(shared, target)
        except OSError:  # no hard links on this file system
            shutil.copyfile(shared, target)
    print(f"generated {images} images in {time.perf_counter() - start:.1f} s under {out}")
    return out


def run_inspect(root: Path, split: str) -> tuple[dict, int, float]:
    """(report, peak RSS of the child in bytes, wall seconds)."""
    command = [sys.executable, "-c", CLI, "inspect", "dci", "--root", str(root)]
    command += ["--split", split, "--format", "json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"inspect failed with exit code {done.returncode}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return json.loads(done.stdout), peak_kib * 1024, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="inspect this release instead of generating one")
    parser.add_argument("--split", default=None, help="split to inspect (default: train)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit-gb", type=float, default=1.0, help="fail at this peak RSS (10^9 bytes)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated release")
    args = parser.parse_args(argv)

    tmp = None
    root = args.root
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="densecap-inspect-bench-"))
        root = build_release(tmp / "release", args.images, args.seed)
    try:
        report, peak, wall = run_inspect(root, args.split or "train")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    tokens = report["tokens"]
    print(
        f"inspect dci --split {report['split']}: {report['images']} images, "
        f"{len(report['skipped'])} skipped, {report['entries']} entries, "
        f"{tokens['long_caption']['count']} long captions, {tokens['summary']['count']} summaries"
    )
    print(
        f"peak RSS {peak / 1e6:.0f} MB ({peak / 2**20:.0f} MiB), wall time {wall:.1f} s "
        f"(limit {args.limit_gb:g} GB)"
    )
    if peak >= args.limit_gb * 1e9:
        print("FAIL: peak RSS at or over the limit")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
