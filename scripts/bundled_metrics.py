"""Run the bundled session (and the other runs the bundled data allows) and copy every run's
metrics.json to OUT/<label>.json, so two checkouts can be compared byte for byte:

    python scripts/bundled_metrics.py /tmp/before && (after a change) python scripts/bundled_metrics.py /tmp/after
    diff -r /tmp/before /tmp/after   # empty: the change left every number as it was

Only the CLI is used, so the script runs unchanged across refactors of the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS: list[tuple[str, list[str]]] = [
    ("dci", []),
    ("dci-blind", ["--blind"]),
    ("dci-retrieval", ["--sample", "-t", "dci/retrieval", "-t", "dci/retrieval-full"]),
    ("dci-ties-first", ["--sample", "-t", "dci/retrieval", "--ties", "first"]),
    ("dci-chunk-mean", ["--sample", "-t", "dci", "--text-policy", "chunk-mean"]),
    ("synth-dci", ["-t", "dci", "-t", "dci/retrieval", "--data-root", "{synth}"]),
    ("elevater", ["-t", "elevater", "--data-root", "{elevater}"]),
    (
        "elevater-dci-protocol",
        ["-t", "elevater", "--protocol", "elevater-dci", "--data-root", "{elevater}"],
    ),
]


def _cli(*args: str, env: dict[str, str]) -> None:
    subprocess.run(["densecap-eval", *args], check=False, env=env, stdout=subprocess.DEVNULL)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        env = {**os.environ, "DENSECAP_EVAL_CACHE": str(work / "cache")}
        _cli("synth", str(work / "synth"), "-n", "12", env=env)
        _cli("synth", str(work / "elevater"), "--elevater", "-n", "6", env=env)
        for label, args in RUNS:
            results = work / "results" / label
            filled = [a.format(synth=work / "synth", elevater=work / "elevater") for a in args]
            model = [] if label == "dci" or label == "dci-blind" else ["-m", "builtin:tiny"]
            _cli("run", *model, *filled, "--out", str(results), env=env)
            for metrics in sorted(results.glob("*/metrics.json")):
                run_json = metrics.parent / "run.json"
                task = json.loads(run_json.read_text())["task"].replace("/", "_")
                shutil.copy(metrics, out / f"{label}--{task}.json")
    print(f"{len(list(out.glob('*.json')))} metrics files in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
