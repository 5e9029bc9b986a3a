"""Where one model ran a dataset under two protocols (ELEVATER default / elevater-dci, and
CLIP_benchmark on a wds copy of the same photos), the report and the dashboard show both numbers
side by side, each labelled with its protocol, metric and image count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from densecap_eval.cli.app import main
from densecap_eval.results.report import ReportRow
from densecap_eval.results.zeroshot_summary import (
    compare_protocols,
    protocol_table,
    without_protocol,
)

KEYS = ("caltech101", "voc2007classification")


def _row(model: str, task: str, **metrics: Any) -> ReportRow:
    return ReportRow("run", model, task, metrics, "complete", None)  # type: ignore[arg-type]


def test_without_protocol_keeps_the_other_marks() -> None:
    assert without_protocol("m (protocol elevater-dci)") == "m"
    assert without_protocol("m (fp16, protocol elevater-dci, blind)") == "m (fp16, blind)"
    assert without_protocol("m (fp16)") == "m (fp16)"
    assert without_protocol("hf:a/b") == "hf:a/b"


def test_hand_rows_side_by_side() -> None:
    rows = [
        _row("A", "elevater/caltech101", zeroshot=0.5, metric="mean-per-class", n=4,
             protocol="default"),
        _row("A (protocol elevater-dci)", "elevater/caltech101", zeroshot=0.25,
             metric="mean-per-class", n=4, protocol="elevater-dci"),
        _row("A", "clip_benchmark/caltech101", acc1=0.1, acc5=None, mean_per_class_recall=0.2,
             n=5, protocol="clip_benchmark"),
        _row("A", "clip_benchmark/voc2007classification", mean_average_precision=0.3, n=4),
        _row("A", "elevater/voc2007classification", zeroshot=0.4, metric="11point_mAP", n=4,
             protocol="default"),
        _row("A", "elevater/mnist", zeroshot=0.9, metric="accuracy", n=4),  # one protocol only
        _row("B (fp16)", "elevater/caltech101", zeroshot=0.7, metric="mean-per-class", n=4),
        _row("B (fp16)", "clip_benchmark/caltech101", acc1=0.6, mean_per_class_recall=0.65, n=4),
    ]  # fmt: skip
    got = compare_protocols(rows)
    assert [(c.model, c.dataset, list(c.scores)) for c in got] == [
        ("A", "caltech101", ["elevater", "elevater-dci", "clip_benchmark"]),
        ("A", "voc2007classification", ["elevater", "clip_benchmark"]),
        ("B (fp16)", "caltech101", ["elevater", "clip_benchmark"]),
    ]
    # CLIP_benchmark's number is the metric asking ELEVATER's question: mean-per-class recall
    assert got[0].scores["clip_benchmark"].metric == "mean_per_class_recall"
    header, body = protocol_table(got)
    assert header == ["model", "dataset", "elevater", "elevater-dci", "clip_benchmark"]
    assert body == [
        ["A", "caltech101", "50.0 (mean-per-class, n=4)", "25.0 (mean-per-class, n=4)",
         "20.0 (mean_per_class_recall, n=5)"],
        ["A", "voc2007classification", "40.0 (11point_mAP, n=4)", "-",
         "30.0 (mean_average_precision, n=4)"],
        ["B (fp16)", "caltech101", "70.0 (mean-per-class, n=4)", "-",
         "65.0 (mean_per_class_recall, n=4)"],
    ]  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:tiny on two ELEVATER sets (default and elevater-dci) and on their wds copies."""
    from densecap_eval.datasets.elevater.synth import write_dataset, write_wds_copy

    base = tmp_path_factory.mktemp("protocols")
    elevater, wds = base / "elevater", base / "wds"
    for key in KEYS:
        write_dataset(elevater, key, images=6)
        write_wds_copy(elevater, key, wds)
    common = ["--model", "builtin:tiny", "--out", str(base / "res"), "--cache-dir",
              str(base / "cache"), "--bootstrap", "0", "--workers", "0"]  # fmt: skip
    tasks = [x for k in KEYS for x in ("--task", f"elevater/{k}")]
    assert main(["run", *common, "--data-root", str(elevater), *tasks]) == 0
    assert main(["run", *common, "--data-root", str(elevater), *tasks,
                 "--protocol", "elevater-dci"]) == 0  # fmt: skip
    cb = [x for k in KEYS for x in ("--task", f"clip_benchmark/{k}")]
    assert main(["run", *common, "--data-root", f"clip_benchmark={wds}", *cb]) == 0
    return base / "res"


def _stored(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, protocol) -> the stored metrics of that task."""
    out = {}
    for run in sorted(root.iterdir()):
        for task, m in json.loads((run / "metrics.json").read_text()).items():
            out[(task, m["protocol"])] = m
    return out


def test_report_shows_both_protocols_labelled(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = _stored(results)
    capsys.readouterr()
    assert main(["report", str(results), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    section = out.split("## zero-shot protocols side by side", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("| builtin:tiny")]
    assert section.splitlines()[2] == (
        "| model | dataset | elevater | elevater-dci | clip_benchmark |"
    )
    cal = stored[("elevater/caltech101", "default")]
    dci = stored[("elevater/caltech101", "elevater-dci")]
    cb = stored[("clip_benchmark/caltech101", "clip_benchmark")]
    assert lines[0] == (
        f"| builtin:tiny | caltech101 | {100 * cal['zeroshot']:.1f} (mean-per-class, n=6) | "
        f"{100 * dci['zeroshot']:.1f} (mean-per-class, n=6) | "
        f"{100 * cb['mean_per_class_recall']:.1f} (mean_per_class_recall, n=6) |"
    )
    voc = stored[("clip_benchmark/voc2007classification", "clip_benchmark")]
    assert f"{100 * voc['mean_average_precision']:.1f} (mean_average_precision, n=6)" in lines[1]
    assert "(11point_mAP, n=6)" in lines[1]
    assert main(["report", str(results)]) == 0  # the table format has the section too
    assert "zero-shot protocols side by side" in capsys.readouterr().out


def test_dashboard_shows_both_protocols(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from densecap_eval.dashboard import data

    monkeypatch.setenv(data.ENV_VAR, str(results))
    at = AppTest.from_file(str(Path(data.__file__).with_name("app.py")), default_timeout=120)
    at.query_params["page"] = "zeroshot"
    at.run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert "Protocols side by side" in [s.value for s in at.subheader]
    frame = at.dataframe[1].value  # the second table: the first is the per-model summary
    assert list(frame.columns) == ["model", "dataset", "elevater", "elevater-dci",
                                   "clip_benchmark"]  # fmt: skip
    assert list(frame["dataset"]) == list(KEYS)
    assert frame["clip_benchmark"].str.contains("n=6").all()
