"""A task that cannot run here (a missing optional tool) fails alone; the run's other tasks run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_aro_order import _versions, make_root

from densecap_eval.cli.app import main
from densecap_eval.results.store import list_runs


@pytest.mark.slow
def test_order_task_without_spacy_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _versions(monkeypatch, spacy=None, nltk=None)  # as on a machine without the 'aro' extra
    coco = make_root(tmp_path / "coco")
    out = tmp_path / "results"
    code = main(["run", "--sample", "--task", "dci/base_swaps", "--task", "aro/coco_order",
                 "--data-root", f"aro-coco={coco}", "--bootstrap", "0", "--no-cache",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1  # not a success, but not a usage error either
    assert "python -m spacy download en_core_web_sm" in err
    assert "aro/coco_order could not run here" in err
    runs = {r.card.task: r for r in list_runs(out) if r.card is not None}
    assert runs["dci/base_swaps"].status == "complete"  # the other task ran and is stored
    assert runs["aro/coco_order"].status == "failed"
    assert "densecap-eval[aro]" in (runs["aro/coco_order"].reason or "")
    metrics = json.loads((runs["dci/base_swaps"].path / "metrics.json").read_text())
    assert metrics["dci/base_swaps"]["n"] > 0
