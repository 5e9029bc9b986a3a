"""Peak memory of `inspect urban1k` and of a 10,000 x 10,000 `urban1k/retrieval` run.

    python benchmarks/longcap_memory.py                    # 10,000 synthetic images
    python benchmarks/longcap_memory.py --images 2000 --keep
    python benchmarks/longcap_memory.py --root DIR         # an existing Urban1k-layout folder
    python benchmarks/longcap_memory.py --skip-run         # inspect only
    python benchmarks/longcap_memory.py --flat 2000 8000   # run's peak RSS at each size

Without --root it writes a synthetic long-caption set in the Urban1k layout: ``image/<n>.jpg``
(small distinct JPEGs: a few coloured blocks on a background, seeded) and ``caption/<n>.txt``
(a long first line, 150-450 words from a seeded word generator over the synthetic scenes'
vocabulary, then a short second line, as some releases have), n = 1..N.

Then, each in its own subprocess, with the peak RSS of that process (``os.wait4``'s
``ru_maxrss``), the peak of its and its worker processes' summed PSS (sampled from /proc every
0.2 s; PSS splits pages a forked worker shares with its parent) and wall time:

(a) ``densecap-eval inspect urban1k --root DIR --format json``
(b) ``densecap-eval run --model builtin:tiny --task urban1k/retrieval --data-root DIR
    --out OUT --bootstrap 0`` (the bundled tiny CPU model; its embedding cache goes under the
    benchmark's temporary folder)

The script exits 1 when a peak reaches the limit (default 2 GB). With ``--flat N1 N2 ...`` it
writes one set per size and measures (b) only, then exits 1 unless the largest size's peak RSS
is within ``--flat-mb`` (default 150 MB) of the smallest's: retrieval ranks the gallery in
strips, so its memory must not grow with the square of the gallery.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = "import sys; from densecap_eval.cli.app import main; sys.exit(main(sys.argv[1:]))"
SIZE = (96, 72)  # photo width, height: small, so the set costs ~25 MB of disk for 10,000


def _words() -> list[str]:
    from densecap_eval.synth.vocab import BACKGROUNDS, COLORS, OBJECT_KINDS, TEXTURES

    nouns = [*OBJECT_KINDS, *(b for group in BACKGROUNDS.values() for b in group)]
    glue = ["the", "a", "with", "and", "of", "on", "near", "behind", "beside", "above",
            "under", "left", "right", "small", "large", "bright", "dark", "old", "new"]  # fmt: skip
    return sorted({*COLORS, *TEXTURES, *nouns, *glue})


def caption(rng: np.random.Generator, words: list[str]) -> str:
    """A long first line of sentences (150-450 words), then a short second line."""
    sentences = []
    total = int(rng.integers(150, 451))
    while total > 0:
        n = min(total, int(rng.integers(8, 25)))
        picked = [words[i] for i in rng.integers(0, len(words), n)]
        sentences.append(" ".join(picked).capitalize() + ".")
        total -= n
    second = " ".join(words[i] for i in rng.integers(0, len(words), 12))
    return " ".join(sentences) + "\n" + second.capitalize() + ".\n"


def photo(rng: np.random.Generator) -> object:
    from PIL import Image, ImageDraw

    width, height = SIZE
    img = Image.new("RGB", SIZE, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
        x1, y1 = x0 + int(rng.integers(8, width // 2)), y0 + int(rng.integers(8, height // 2))
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def build_set(out: Path, images: int, seed: int) -> Path:
    """``out/image/<n>.jpg`` and ``out/caption/<n>.txt`` for n = 1..images; returns ``out``."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    words = _words()
    (out / "image").mkdir(parents=True)
    (out / "caption").mkdir()
    for n in range(1, images + 1):
        photo(rng).save(out / "image" / f"{n}.jpg", quality=85)  # type: ignore[attr-defined]
        (out / "caption" / f"{n}.txt").write_text(caption(rng, words), encoding="utf-8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"generated {images} images and captions ({size / 1e6:.0f} MB) in "
        f"{time.perf_counter() - start:.1f} s under {out}"
    )
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (from /proc: data-loader workers ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between the processes sharing them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def measure(args: list[str]) -> tuple[str, int, int, float]:
    """(stdout, peak RSS of the command's process, peak summed PSS of it and its worker
    processes sampled every 0.2 s, wall seconds) of one CLI command."""
    start = time.perf_counter()
    tree_peak = 0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=out, stderr=err)
        while True:
            # wait4's rusage is this child's own (RUSAGE_CHILDREN would be the max of all).
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                break
            tree_peak = max(tree_peak, sum(_pss(p) for p in _tree(child.pid)))
            time.sleep(0.2)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"{' '.join(args[:2])} failed with exit code {child.returncode}")
    return stdout, usage.ru_maxrss * 1024, tree_peak, wall  # ru_maxrss: KiB on Linux


def _line(what: str, peak: int, tree: int, wall: float, limit: float) -> str:
    verdict = "ok" if max(peak, tree) < limit * 1e9 else "OVER THE LIMIT"
    return (
        f"{what}: peak RSS {peak / 1e6:.0f} MB ({peak / 2**20:.0f} MiB), peak PSS with "
        f"workers {tree / 1e6:.0f} MB, wall {wall:.1f} s [{verdict}]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="use this Urban1k-layout folder instead")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-gb", type=float, default=2.0, help="fail at this peak RSS")
    parser.add_argument("--skip-run", action="store_true", help="measure inspect only")
    parser.add_argument("--keep", action="store_true", help="keep the generated set and results")
    parser.add_argument("--flat", type=int, nargs="+", help="sizes whose run peaks to compare")
    parser.add_argument("--flat-mb", type=float, default=150.0)
    args = parser.parse_args(argv)
    if args.flat:
        return flat(sorted(args.flat), seed=args.seed, tolerance_mb=args.flat_mb, keep=args.keep)

    tmp = Path(tempfile.mkdtemp(prefix="densecap-longcap-bench-"))
    root = args.root or build_set(tmp / "Urban1k", args.images, args.seed)
    failed = False
    try:
        args_a = ["inspect", "urban1k", "--root", str(root), "--format", "json"]
        stdout, peak, tree, wall = measure(args_a)
        report = json.loads(stdout)
        stats = next(iter(report["tokens"].values()), {})
        print(
            f"inspect urban1k: {report['records']} records, {len(report['skipped'])} skipped; "
            f"tokens median {stats.get('median')}, p90 {stats.get('p90')}, max {stats.get('max')}, "
            f"over 77 {stats.get('over_77')}, over 248 {stats.get('over_248')}"
        )
        print(_line("(a) inspect urban1k", peak, tree, wall, args.limit_gb))
        failed |= max(peak, tree) >= args.limit_gb * 1e9
        if not args.skip_run:
            out = tmp / "results"
            command = ["run", "--model", "builtin:tiny", "--task", "urban1k/retrieval"]
            command += ["--data-root", str(root), "--out", str(out), "--bootstrap", "0"]
            command += ["--cache-dir", str(tmp / "cache")]
            _, peak, tree, wall = measure(command)
            (metrics_file,) = out.glob("*/metrics.json")
            metrics = json.loads(metrics_file.read_text())["urban1k/retrieval"]
            print(
                f"run urban1k/retrieval: n {metrics['n']}, gallery {metrics['gallery']}, "
                f"i2t_r1 {metrics['i2t_r1']:.4f}, t2i_r1 {metrics['t2i_r1']:.4f}"
            )
            print(_line("(b) run builtin:tiny urban1k/retrieval", peak, tree, wall, args.limit_gb))
            failed |= max(peak, tree) >= args.limit_gb * 1e9
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def flat(sizes: list[int], *, seed: int, tolerance_mb: float, keep: bool) -> int:
    """Peak RSS of an ``urban1k/retrieval`` run at each size; 1 unless it stays flat."""
    tmp = Path(tempfile.mkdtemp(prefix="densecap-longcap-flat-"))
    peaks: dict[int, int] = {}
    try:
        for n in sizes:
            root = build_set(tmp / f"Urban1k-{n}", n, seed)
            out = tmp / f"results-{n}"
            command = ["run", "--model", "builtin:tiny", "--task", "urban1k/retrieval"]
            command += ["--data-root", str(root), "--out", str(out), "--bootstrap", "0"]
            command += ["--cache-dir", str(tmp / f"cache-{n}")]
            _, peaks[n], tree, wall = measure(command)
            (metrics_file,) = out.glob("*/metrics.json")
            metrics = json.loads(metrics_file.read_text())["urban1k/retrieval"]
            print(
                f"{n} pairs: gallery {metrics['gallery']}, i2t_r1 {metrics['i2t_r1']:.4f}; "
                f"peak RSS {peaks[n] / 1e6:.0f} MB, peak PSS with workers "
                f"{tree / 1e6:.0f} MB, wall {wall:.1f} s",
                flush=True,
            )
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    growth = (peaks[sizes[-1]] - peaks[sizes[0]]) / 1e6
    ok = growth <= tolerance_mb
    print(
        f"peak RSS {sizes[-1]} vs {sizes[0]} pairs: {growth:+.0f} MB "
        f"({'within' if ok else 'OVER'} {tolerance_mb:.0f} MB)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
