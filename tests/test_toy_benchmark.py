"""A new benchmark is one new folder: a plugin package registering a dataset and a task that
declares its metric under a new name ("toy_hits"), run through the real CLI, shows that metric
in the report, compare, a sweep grid and the dashboard's leaderboard, with nothing else in the
package edited."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from densecap_eval.cli.app import main
from densecap_eval.datasets import DATASETS, DOWNLOADERS
from densecap_eval.results.store import list_runs
from densecap_eval.results.sweeps import grids_from_runs
from densecap_eval.tasks import TASKS

PLUGIN = "toybench_plugin"
TASK = "toy/hits"

# The whole benchmark: a loader of captioned photos and a two-choice task scoring each photo's
# caption against another photo's. It declares "toy_hits" (outcome column "hit", a name no
# convention would guess) and keeps "toy_extra" undeclared: the report must show only the former.
PLUGIN_SOURCE = """
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from densecap_eval.datasets import DATASETS
from densecap_eval.datasets.regions import Region
from densecap_eval.results.schema import MetricSpec
from densecap_eval.tasks import TASKS
from densecap_eval.tasks.base import ComputeContext


class ToyDataset:
    name = "toy"
    title = "Toy"

    def __init__(self, root: str, *, strict: bool = False) -> None:
        self.root = Path(root)
        self.skipped: list[Any] = []
        lines = (self.root / "captions.tsv").read_text(encoding="utf-8").splitlines()
        self.items = [tuple(line.split("\\t", 1)) for line in lines if line]

    def splits(self) -> list[str]:
        return ["test"]

    def fingerprint(self, splits: list[str]) -> str:
        return "toy-" + str(len(self.items))


@dataclass
class ToyInstance:
    task: str
    items: list[tuple[str, str]]
    root: Path
    split: str = "test"
    skipped: list[Any] = field(default_factory=list)
    needs_embedding: bool = False
    _r: Any = None
    _t: Any = None

    def add_to_plan(self, plan: Any) -> None:
        n = len(self.items)
        self._r = np.array([plan.add_region(Region(str(self.root / f))) for f, _ in self.items])
        own = [plan.add_text(c) for _, c in self.items]
        self._t = np.array([[own[i], own[(i + 1) % n]] for i in range(n)])
        for r, (a, b) in zip(self._r.tolist(), self._t.tolist()):
            plan.need(r, a)
            plan.need(r, b)

    def compute(self, table: Any, ctx: ComputeContext) -> tuple[dict[str, Any], pd.DataFrame]:
        s = table.scores(np.stack([self._r, self._r], 1), self._t)
        hit = s[:, 0] > s[:, 1]
        metrics = {"toy_hits": float(hit.mean()), "toy_extra": 0.5, "n": len(hit)}
        frame = pd.DataFrame({
            "task": [self.task] * len(hit),
            "split": [self.split] * len(hit),
            "image": [f for f, _ in self.items],
            "entry_key": [f for f, _ in self.items],
            "hit": hit.astype(bool),
        })
        return metrics, frame


@dataclass(frozen=True)
class ToyTask:
    name: str = "toy/hits"
    dataset: str = "toy"
    description: str = "each photo's caption against the next photo's"
    metrics: tuple[MetricSpec, ...] = (MetricSpec("toy_hits", column="hit", label="hits"),)

    def concrete(self) -> tuple[str, ...]:
        return (self.name,)

    def prepare(self, dataset: ToyDataset, *, split: str | None = None, seed: int = 0) -> Any:
        return ToyInstance(self.name, list(dataset.items), dataset.root)


DATASETS.register("toy", ToyDataset)
TASKS.register("toy/hits", ToyTask())
"""


@pytest.fixture
def toy_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin folder importable from tmp_path; the registries get their entries back after
    the test (and the plugin module is forgotten)."""
    for registry in (DATASETS, DOWNLOADERS, TASKS):
        registry.names()  # discover the package's own entries before taking the copy
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    package = tmp_path / "plugins" / PLUGIN
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PLUGIN_SOURCE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.delitem(sys.modules, PLUGIN, raising=False)
    __import__(PLUGIN)
    data = tmp_path / "data"
    data.mkdir()
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}
    lines = []
    for i, (name, rgb) in enumerate(colours.items()):
        Image.new("RGB", (32, 24 + 4 * i), rgb).save(data / f"{name}.png")
        lines.append(f"{name}.png\ta plain {name} square")
    (data / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    yield data
    sys.modules.pop(PLUGIN, None)


def test_a_toy_benchmark_shows_its_declared_metric_everywhere(
    toy_plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from densecap_eval.dashboard import data as dashboard_data
    from densecap_eval.dashboard import explorer

    out = tmp_path / "results"
    for seed in ("0", "1"):
        argv = ["run", "--model", "builtin:tiny", "--task", TASK, "--data-root", str(toy_plugin),
                "--out", str(out), "--seed", seed, "--bootstrap", "0", "--no-cache"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
    runs = list_runs(out)
    assert len(runs) == 2 and all(run.is_complete for run in runs)
    card = json.loads((runs[0].path / "run.json").read_text(encoding="utf-8"))
    assert card["metric_specs"][TASK][0]["name"] == "toy_hits"
    capsys.readouterr()

    assert main(["report", str(out), "--format", "markdown"]) == 0
    report = capsys.readouterr().out
    header = next(line for line in report.splitlines() if "toy_hits" in line)
    assert "toy_extra" not in header  # only the declared headline metric is a column

    assert main(["compare", str(runs[0].path), str(runs[1].path), "--format", "json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert [(m["task"], m["metric"]) for m in compared["metrics"]] == [(TASK, "toy_hits")]

    sweep = tmp_path / "toy.yaml"
    sweep.write_text(
        json.dumps(
            {
                "models": ["builtin:tiny"],
                "tasks": [TASK],
                "data_root": str(toy_plugin),
                "out": str(tmp_path / "swept"),
                "options": {"n_boot": 0},
            }
        ),
        encoding="utf-8",
    )
    assert main(["sweep", str(sweep)]) == 0, capsys.readouterr().err
    (grid,) = grids_from_runs(list_runs(tmp_path / "swept"))
    assert grid.at("builtin:tiny", TASK).metric == "toy_hits"

    frame = dashboard_data.leaderboard_rows(list_runs(out))
    assert "toy_hits" in dashboard_data.metric_names(frame)
    assert dashboard_data.metric_names(frame)[0] == "toy_hits"  # declared headline first
    declared = explorer.declared_outcome_columns(runs[0])
    assert explorer.correct_columns(["task", "image", "hit"], declared) == ["hit"]


def test_the_toy_plugin_left_no_entry_behind() -> None:
    assert TASK not in TASKS and "toy" not in DATASETS
