"""`report` over a results directory: formats, blind rows, filters, broken runs skipped loudly."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_results_store import make_examples, make_result, store_run

from densecap_eval.cli.app import main
from densecap_eval.results.report import collect_rows, render_csv, render_markdown
from densecap_eval.results.store import RunWriter

ALL = "dci/all_swaps"
BASE = "dci/base_swaps"


@pytest.fixture
def results(tmp_path: Path) -> dict[str, Path]:
    """Two models, one blind control, one failed run, one corrupt run, one stray directory."""
    out = tmp_path / "results"
    runs = {
        "clip": store_run(out, make_result("open_clip:ViT-B-32/openai")),
        "blind": store_run(out, make_result("open_clip:ViT-B-32/openai", blind=True)),
        "siglip": store_run(
            out,
            make_result(
                "hf:google/siglip",
                metrics={ALL: {"scm": 0.125, "neg": 0.875, "n": 4}},
                examples=make_examples(ALL, [True, True, False, True]),
            ),
        ),
        "corrupt": store_run(out, make_result("hf:corrupt")),
    }
    (runs["corrupt"].path / "examples.parquet").unlink()
    with pytest.raises(RuntimeError), RunWriter(out, model_spec="hf:failing", task="dci") as writer:
        raise RuntimeError("boom")
    paths = {name: run.path for name, run in runs.items()}
    paths["failed"] = writer.run_dir
    paths["stray"] = out / "stray"
    paths["stray"].mkdir()
    paths["out"] = out
    return paths


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_report_schema(results: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _report(capsys, str(results["out"]), "--format", "json")
    assert code == 0
    items = json.loads(out)
    keys = {"run_id", "model", "task", "metrics", "status", "note"}
    assert all(set(item) == keys for item in items)
    assert {item["note"] for item in items} == {None}  # every run here is fp32
    got = sorted((item["model"], item["task"], item["metrics"]["neg"]) for item in items)
    assert got == [
        ("hf:google/siglip", ALL, 0.875),
        ("open_clip:ViT-B-32/openai", ALL, 0.75),
        ("open_clip:ViT-B-32/openai", BASE, 0.5),
        ("open_clip:ViT-B-32/openai (blind)", ALL, 0.75),
        ("open_clip:ViT-B-32/openai (blind)", BASE, 0.5),
    ]
    assert {item["status"] for item in items} == {"complete"}
    clip = next(i for i in items if i["run_id"] == results["clip"].name and i["task"] == ALL)
    assert clip["metrics"] == {"scm": 0.5, "neg": 0.75, "n": 4, "ci": {"neg": [0.5, 1.0]}}


def test_broken_runs_are_skipped_with_a_warning(
    results: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _report(capsys, str(results["out"]))
    assert code == 0
    warnings = err.strip().splitlines()
    assert len(warnings) == 3
    assert (
        f"warning: skipping {results['corrupt']}: corrupt run (status is complete but examples.parquet is missing)"
        in warnings
    )
    assert f"warning: skipping {results['failed']}: run failed: RuntimeError: boom" in warnings
    assert f"warning: skipping {results['stray']}: corrupt run (no run.json)" in warnings
    assert "hf:corrupt" not in out and "hf:failing" not in out
    assert "hf:google/siglip" in out  # the rest still prints


def test_table_groups_by_task_and_shows_ci(
    results: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _report(capsys, str(results["out"]), "--format", "table")
    assert code == 0
    lines = out.splitlines()
    # One section per dataset: its heading, underlined, then a table per task.
    assert lines[:2] == ["dci: 2 tasks, 3 models", "=" * len("dci: 2 tasks, 3 models")]
    assert lines[2].strip() == ALL
    base_at = next(i for i, line in enumerate(lines) if line.strip() == BASE)
    all_block, base_block = lines[:base_at], lines[base_at:]
    header = next(line for line in all_block if line.split()[:1] == ["model"])
    # The blind control of the same model sits beside each metric, its row folded in.
    assert [c.strip() for c in header.split("  ") if c.strip()] == [
        "model", "scm", "scm blind", "neg", "neg blind", "n", "run", "blind run"
    ]  # fmt: skip
    clip_row = next(line for line in all_block if "openai " in line)
    assert clip_row.split()[1:9] == [
        "50.0", "50.0", "75.0", "[50.0,", "100.0]", "75.0", "4", results["clip"].name
    ]  # fmt: skip
    assert clip_row.split()[9] == results["blind"].name
    assert not any("(blind)" in line for line in all_block)
    siglip_row = next(line for line in all_block if "siglip" in line)
    assert siglip_row.split()[1:6] == ["12.5", "-", "87.5", "-", "4"]  # no blind control
    assert not any("siglip" in line for line in base_block)


def test_markdown_report(results: dict[str, Path]) -> None:
    rows = collect_rows(results["out"], on_skip=lambda run: None)
    text = render_markdown(rows)
    sections = text.strip().split("\n\n")
    assert sections[0] == "## dci: 2 tasks, 3 models"
    sections = sections[1:]
    assert sections[0] == f"### {ALL}"
    table = sections[1].splitlines()
    assert table[0] == "| model | scm | scm blind | neg | neg blind | n | run | blind run |"
    assert table[1] == "|---|---:|---:|---:|---:|---:|---|---|"
    assert (
        f"| open_clip:ViT-B-32/openai | 50.0 | 50.0 | 75.0 [50.0, 100.0] | 75.0 | 4 | "
        f"{results['clip'].name} | {results['blind'].name} |"
    ) in table
    assert f"| hf:google/siglip | 12.5 | - | 87.5 | - | 4 | {results['siglip'].name} |  |" in table
    assert len(table) == 2 + 2  # the blind control is folded into its model's row
    assert sections[2] == f"### {BASE}" and len(sections[3].splitlines()) == 2 + 1


def test_csv_report_is_tidy(results: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _report(capsys, str(results["out"]), "--format", "csv")
    assert code == 0
    records = list(csv.DictReader(io.StringIO(out)))
    assert list(records[0]) == [
        "run_id",
        "model",
        "blind",
        "task",
        "split",
        "metric",
        "value",
        "ci_lo",
        "ci_hi",
        "note",
    ]
    neg = [
        r
        for r in records
        if r["run_id"] == results["clip"].name and r["task"] == ALL and r["metric"] == "neg"
    ]
    assert neg == [
        {"run_id": results["clip"].name, "model": "open_clip:ViT-B-32/openai", "blind": "False", "task": ALL,
         "split": "test", "metric": "neg", "value": "0.75", "ci_lo": "0.5", "ci_hi": "1.0", "note": ""}
    ]  # fmt: skip
    blind = {r["blind"] for r in records if r["run_id"] == results["blind"].name}
    assert blind == {"True"}
    # 2 tasks x (scm, neg, n) for each of the two dci runs, 3 for siglip
    assert len(records) == 6 + 6 + 3


def test_nested_breakdowns_flatten_in_csv(tmp_path: Path) -> None:
    metrics = {
        ALL: {"neg": 0.5, "n": 2, "by_length": {"<=77": {"neg": 1.0, "n": 1}}, "cut_share": 0.0}
    }
    store_run(tmp_path, make_result(metrics=metrics, examples=make_examples(ALL, [True, False])))
    records = list(csv.DictReader(io.StringIO(render_csv(collect_rows(tmp_path)))))
    assert [(r["metric"], r["value"]) for r in records] == [
        ("neg", "0.5"), ("n", "2"), ("by_length.<=77.neg", "1.0"), ("by_length.<=77.n", "1"), ("cut_share", "0.0"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--task", BASE], {("open_clip:ViT-B-32/openai", BASE), ("open_clip:ViT-B-32/openai (blind)", BASE)}),
        (["--task", "dci", "--model", "siglip"], {("hf:google/siglip", ALL)}),
        (["--model", "open_clip:ViT-B-32/openai (blind)"],
         {("open_clip:ViT-B-32/openai (blind)", ALL), ("open_clip:ViT-B-32/openai (blind)", BASE)}),
    ],
)  # fmt: skip
def test_filters(
    results: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: set[tuple[str, str]],
) -> None:
    code, out, _ = _report(capsys, str(results["out"]), "--format", "json", *args)
    assert code == 0
    assert {(item["model"], item["task"]) for item in json.loads(out)} == expected


def test_no_matching_runs(results: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _report(capsys, str(results["out"]), "--task", "docci")
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith(
        f"error: no complete runs matching the filters in {results['out']}"
    )


def test_empty_and_missing_results_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _report(capsys, str(tmp_path))
    assert (code, out) == (1, "")
    assert err.startswith(
        f"error: no complete runs in {tmp_path}; create some with `densecap-eval run"
    )
    code, out, err = _report(capsys, str(tmp_path / "missing"))
    assert (code, out, err) == (
        2,
        "",
        f"error: results directory {tmp_path / 'missing'} does not exist\n",
    )


def test_unknown_format(results: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _report(capsys, str(results["out"]), "--format", "xml")
    assert (
        code == 2 and err == "error: unknown --format 'xml' (known: table, markdown, csv, json)\n"
    )


def test_library_default_skip_logs_a_warning(
    results: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    rows = collect_rows(results["out"])
    assert len(rows) == 5
    skipped = sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert len(skipped) == 3 and all(m.startswith("skipping ") for m in skipped)


# --------------------------------------------------------------------------- not reference-exact

RETRIEVAL = "dci/retrieval"


def _store_with_precision(out: Path, model: str, precision: str | None) -> Path:
    metrics = {
        ALL: {"scm": 0.5, "neg": 0.75, "n": 4},
        BASE: {"scm": 0.25, "neg": 0.5, "n": 2},
        RETRIEVAL: {"i2t_r1": 0.5, "t2i_r1": 0.25, "n": 2},
    }
    examples = pd.concat(
        [make_examples(ALL, [True] * 4), make_examples(BASE, [True, False]),
         make_examples(RETRIEVAL, [True, False])],
        ignore_index=True,
    )  # fmt: skip
    run = store_run(out, make_result(model, metrics=metrics, examples=examples))
    card = json.loads((run.path / "run.json").read_text())
    card["precision"] = precision  # None: a run from before the precision was recorded
    (run.path / "run.json").write_text(json.dumps(card))
    return run.path


@pytest.fixture
def mixed_precision(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "results"
    return {
        "out": out,
        "fp32": _store_with_precision(out, "m:fp32", "fp32"),
        "fp16": _store_with_precision(out, "m:fp16", "fp16"),
        "old": _store_with_precision(out, "m:old", None),
    }


def test_json_marks_reference_subtests_of_half_precision_runs(
    mixed_precision: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _report(capsys, str(mixed_precision["out"]), "--format", "json")
    assert code == 0
    notes = {(item["model"], item["task"]): item["note"] for item in json.loads(out)}
    assert notes == {
        ("m:fp16 (fp16)", ALL): "fp16: not reference-exact",
        ("m:fp16 (fp16)", BASE): "fp16: not reference-exact",
        ("m:fp16 (fp16)", RETRIEVAL): None,  # no reference numbers to be exact to
        ("m:fp32", ALL): None, ("m:fp32", BASE): None, ("m:fp32", RETRIEVAL): None,
        ("m:old", ALL): None, ("m:old", BASE): None, ("m:old", RETRIEVAL): None,  # None = fp32
    }  # fmt: skip


def test_table_and_markdown_mark_not_reference_exact(
    mixed_precision: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _report(capsys, str(mixed_precision["out"]), "--format", "table")
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["model"]).split()
    assert header == ["model", "scm", "neg", "n", "note", "run"]
    fp16 = [line for line in lines if line.strip().startswith("m:fp16")]
    assert len(fp16) == 3 and sum("fp16: not reference-exact" in line for line in fp16) == 2
    assert not any("reference-exact" in line for line in lines if "m:fp32" in line)

    rows = collect_rows(mixed_precision["out"])
    markdown = render_markdown(rows)
    assert "| model | scm | neg | n | note | run |" in markdown
    assert "|---|---:|---:|---:|---|---|" in markdown
    assert (
        f"| m:fp16 (fp16) | 50.0 | 75.0 | 4 | fp16: not reference-exact "
        f"| {mixed_precision['fp16'].name} |" in markdown
    )
    retrieval = markdown.split(f"### {RETRIEVAL}")[1]
    assert "note" not in retrieval and "reference-exact" not in retrieval  # fmt: skip


def test_csv_marks_not_reference_exact(mixed_precision: dict[str, Path]) -> None:
    rows = collect_rows(mixed_precision["out"])
    records = list(csv.DictReader(io.StringIO(render_csv(rows))))
    notes = {(r["model"], r["task"], r["note"]) for r in records}
    assert ("m:fp16", ALL, "fp16: not reference-exact") in notes
    assert ("m:fp16", RETRIEVAL, "") in notes and ("m:old", ALL, "") in notes
    assert {r["note"] for r in records if r["model"] != "m:fp16"} == {""}


# --------------------------------------------------------------------------- interrupted runs


def test_killed_run_is_reported_as_interrupted(
    results: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A run.json left "running" by a writer that is gone: skipped as interrupted, with why."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    writer = RunWriter(results["out"], model_spec="hf:killed", task="dci")
    run_dir = writer.start()
    card = json.loads((run_dir / "run.json").read_text())
    card["pid"] = int(dead.stdout)
    (run_dir / "run.json").write_text(json.dumps(card))
    code, out, err = _report(capsys, str(results["out"]))
    assert code == 0 and "hf:killed" not in out
    assert (
        f"warning: skipping {run_dir}: run interrupted: "
        f"the process (pid {int(dead.stdout)}) writing it is gone"
    ) in err.splitlines()


def test_live_run_from_another_host_is_reported_as_running(
    results: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    writer = RunWriter(results["out"], model_spec="hf:elsewhere", task="dci")
    run_dir = writer.start()
    card = json.loads((run_dir / "run.json").read_text())
    card.update(host="gpu-node-7", pid=4242)
    (run_dir / "run.json").write_text(json.dumps(card))
    _, _, err = _report(capsys, str(results["out"]))
    assert (
        f"warning: skipping {run_dir}: still running (pid 4242 on gpu-node-7), "
        "or its writer died where this machine cannot check"
    ) in err.splitlines()


# --------------------------------------------------------------------------- datasets


def _mixed_store(out: Path) -> None:
    """A dci run (two subtests, one with scm_per_image null everywhere, and retrieval) and an
    urban1k retrieval run, plus a task named without a dataset prefix."""
    dci = {
        ALL: {"scm": 0.5, "neg": 0.75, "scm_per_image": 0.25, "n": 4},
        BASE: {"scm": 0.25, "neg": 0.5, "scm_per_image": None, "n": 2},
        "dci/all_swaps_pick5": {"scm": None, "neg": None, "scm_per_image": None, "n": 0},
        RETRIEVAL: {"i2t_r1": 0.5, "i2t_r5": 1.0, "t2i_r1": 0.25, "t2i_r5": 1.0, "n": 2},
    }
    urban = {"urban1k/retrieval": {"i2t_r1": 0.75, "t2i_r1": 0.5, "n": 4, "gallery": 4}}
    plain = {"mytask": {"accuracy": 0.5, "n": 2}}
    store_run(out, make_result("m:a", metrics=dci))
    store_run(out, make_result("m:a", task="urban1k/retrieval", metrics=urban))
    store_run(out, make_result("m:b", task="mytask", metrics=plain))


def test_sections_per_dataset_with_each_tasks_own_columns(tmp_path: Path) -> None:
    from densecap_eval.results.report import dataset_of, group_by_dataset

    _mixed_store(tmp_path)
    rows = collect_rows(tmp_path)
    groups = group_by_dataset(rows)
    # "mytask" has no prefix: its run card's dataset (make_result says dci) names the section.
    assert {name: list(tasks) for name, tasks in groups.items()} == {
        "dci": [ALL, BASE, "dci/all_swaps_pick5", RETRIEVAL, "mytask"],
        "urban1k": ["urban1k/retrieval"],
    }
    assert {dataset_of(row) for row in rows if row.task == "urban1k/retrieval"} == {"urban1k"}

    markdown = render_markdown(rows)
    sections = markdown.strip().split("\n\n")
    headings = [s for s in sections if s.startswith("## ")]
    assert headings == ["## dci: 5 tasks, 2 models", "## urban1k: 1 task, 1 model"]

    def header(task: str) -> str:
        return markdown.split(f"### {task}\n\n")[1].splitlines()[0]

    assert header(ALL) == "| model | scm | neg | scm_per_image | n | run |"
    assert header(BASE) == "| model | scm | neg | n | run |"  # scm_per_image: null everywhere
    assert header("dci/all_swaps_pick5") == "| model | scm | neg | scm_per_image | n | run |"
    assert header(RETRIEVAL) == "| model | i2t_r1 | i2t_r5 | t2i_r1 | t2i_r5 | n | run |"
    assert header("urban1k/retrieval") == "| model | i2t_r1 | t2i_r1 | n | run |"
    assert header("mytask") == "| model | accuracy | n | run |"


def test_table_sections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _mixed_store(tmp_path)
    code, out, _ = _report(capsys, str(tmp_path))
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    dci_at, urban_at = (
        lines.index("dci: 5 tasks, 2 models"),
        lines.index("urban1k: 1 task, 1 model"),
    )
    assert dci_at == 0 and lines[urban_at + 1] == "=" * len(lines[urban_at])
    assert lines[urban_at + 2] == "urban1k/retrieval"
    urban_header = next(line for line in lines[urban_at:] if line.startswith("model"))
    assert urban_header.split() == ["model", "i2t_r1", "t2i_r1", "n", "run"]
    retrieval_at = lines.index(RETRIEVAL)
    header = next(line for line in lines[retrieval_at:] if line.startswith("model")).split()
    assert header == ["model", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "n", "run"]
