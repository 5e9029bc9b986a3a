"""`densecap-eval sweep`: the sweep file and its errors, cells and their ids, each cell's state
read back from the store, a real 2 x 2 sweep on the bundled sample that is killed and resumed,
the grid in `report` and the dashboard, and a SLURM array submission built without a cluster
(fake ``sbatch`` / ``srun`` on PATH; one of the pickled cells is then run here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from densecap_eval.cli.app import main
from densecap_eval.core.config import RunConfig
from densecap_eval.core.paths import bundled_sample_root
from densecap_eval.results.store import RunWriter, list_runs, read_run
from densecap_eval.results.sweeps import grids_from_runs
from densecap_eval.run.sweep import (
    SweepError,
    SweepTag,
    cell_id,
    expand,
    load_sweep,
    parse_sweep,
    plan,
    requests_for,
    to_run,
    torchrun_command,
)

TASKS = ["dci/all_swaps", "dci/retrieval"]
CLI = "import sys; from densecap_eval.cli.app import main; sys.exit(main(sys.argv[1:]))"


def write_sweep(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"models": ["builtin:tiny"], "tasks": list(TASKS), "sample": True,
                            "out": "results", "options": {"n_boot": 0}}  # fmt: skip
    data.update(changes)
    return data


# --------------------------------------------------------------------------- the sweep file


def test_parse_resolves_paths_from_the_file_and_names_the_sweep(tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "grid.yaml", base(grid={"seed": [0, 1]})))
    assert spec.name == "grid"  # the file's stem
    assert spec.out == (tmp_path / "results").resolve()
    assert spec.grid == (("seed", (0, 1)),)
    assert spec.options == (("n_boot", 0),)
    assert spec.launcher == "local" and spec.nproc_per_node is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"modles": ["x"]}, "unknown key 'modles' (did you mean 'models'?); known keys: name, "),
        ({"grid": {"text_polcy": ["truncate"]}},
         "unknown 'grid' option 'text_polcy' (did you mean 'text_policy'?)"),
        ({"options": {"precison": "bf16"}}, "unknown 'options' option 'precison' (did you mean"),
        ({"grid": {"text_policy": ["truncate", "chunk_mean"]}},
         "grid text_policy=chunk_mean: unknown text policy 'chunk_mean'"),
        ({"grid": {"seed": []}}, "grid option 'seed' must be a non-empty list"),
        ({"grid": {"seed": [1, 1]}}, "grid option 'seed' lists a value more than once"),
        ({"grid": {"n_boot": [0, 10]}}, "'n_boot' is both in 'options' and in 'grid'"),
        ({"options": {"data_root": "x"}}, "option 'data_root' is not allowed here (give it as"),
        ({"grid": {"world_size": [1, 2]}}, "option 'world_size' is not allowed here"),
        ({"data_root": "data"}, "give 'data_root' or 'sample: true', not both"),
        ({"out": None}, "missing key 'out'"),
        ({"models": []}, "'models' must be a non-empty list of strings"),
        ({"tasks": ["dci/all_swaps", "dci/all_swaps"]}, "'tasks' lists dci/all_swaps more than"),
        ({"tasks": ["dci/nope"]}, "tasks: unknown task"),
        ({"models": ["nope:x"]}, "models: model spec 'nope:x'"),
        ({"launcher": "pbs"}, "unknown launcher 'pbs' (known: local, slurm)"),
        ({"slurm": {"partiton": "gpu"}}, "unknown key 'partiton' in 'slurm' (did you mean 'par"),
        ({"slurm": {"mem_gb": 0}}, "'slurm.mem_gb' must be a number > 0"),
        ({"nproc_per_node": 0}, "'nproc_per_node' must be an integer >= 1"),
    ],
)  # fmt: skip
def test_sweep_file_errors_name_the_file_and_the_key(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = write_sweep(tmp_path / "bad.yaml", base(**changes))
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [builtin:tiny\n", encoding="utf-8")
    with pytest.raises(SweepError, match=r"broken.yaml: not valid YAML \(line 2"):
        load_sweep(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- builtin:tiny\n", encoding="utf-8")
    with pytest.raises(SweepError, match=r"list\.yaml: a sweep file is a mapping"):
        load_sweep(listed)
    with pytest.raises(SweepError, match="cannot read sweep file"):
        load_sweep(tmp_path / "none.yaml")


# --------------------------------------------------------------------------- cells


def test_cells_are_models_x_grid_x_tasks_with_stable_ids(tmp_path: Path) -> None:
    data = base(models=["builtin:tiny", "open_clip:ViT-B-32/openai"],
                grid={"text_policy": ["truncate", "chunk-mean"]})  # fmt: skip
    cells = expand(load_sweep(write_sweep(tmp_path / "s.yaml", data)))
    assert [(c.model, dict(c.options)["text_policy"], c.task) for c in cells] == [
        (m, p, t) for m in data["models"] for p in ("truncate", "chunk-mean") for t in TASKS
    ]
    assert len({c.id for c in cells}) == 8
    assert all(c.config.n_boot == 0 and c.config.data_root == bundled_sample_root() for c in cells)
    # the same file gives the same ids; what cannot change a number does not change the id
    again = expand(load_sweep(write_sweep(tmp_path / "t.yaml", {**data, "name": "other"})))
    assert [c.id for c in again] == [c.id for c in cells]
    cell = cells[0]
    quiet = cell.config.with_options(use_cache=False, progress=False, cache_dir=tmp_path)
    assert cell_id(cell.model, cell.task, quiet) == cell.id
    assert cell_id(cell.model, cell.task, cell.config.with_options(seed=1)) != cell.id


def test_requests_share_a_model_load_and_carry_the_cells(tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", base(grid={"seed": [0, 1]})))
    cells = expand(spec)
    shared = requests_for(spec, cells)
    assert [r.tasks for r in shared] == [tuple(TASKS), tuple(TASKS)]
    assert shared[1].sweep == SweepTag("s", ((TASKS[0], cells[2].id), (TASKS[1], cells[3].id)),
                                       (("seed", 1),))  # fmt: skip
    assert shared[1].sweep.card_fields(TASKS[1]) == {
        "sweep": "s", "cell": cells[3].id, "cell_options": {"seed": 1},
    }  # fmt: skip
    single = requests_for(spec, cells, share_model=False)
    assert [r.tasks for r in single] == [(c.task,) for c in cells]

    # a cell run as its own process (torchrun) records the same tag, from its command line
    argv = shared[1].command_line()
    tag = argv[argv.index("--sweep-tag") + 1]
    assert SweepTag.from_json(tag) == shared[1].sweep
    command = torchrun_command(shared[1], 4)
    assert command[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=4", "-m", "densecap_eval"]  # fmt: skip
    assert command[7:] == argv[1:] and command[7] == "run"


def test_states_come_from_the_run_cards(tmp_path: Path) -> None:
    """complete is skipped; failed, interrupted and missing run; running is left alone."""
    from test_results_store import make_result

    spec = load_sweep(write_sweep(tmp_path / "s.yaml", base(grid={"seed": [0, 1, 2, 3]})))
    cells = expand(spec)[::2]  # one task, four seeds

    def writer(i: int) -> RunWriter:
        tag = SweepTag(spec.name, ((cells[i].task, cells[i].id),), cells[i].options)
        return RunWriter(spec.out, model_spec=cells[i].model, task=cells[i].task,
                         config=cells[i].config, **tag.card_fields(cells[i].task))  # fmt: skip

    for attempt in range(2):  # an old failed attempt, then a complete one: complete wins
        with writer(0) as w:
            if attempt:
                w.complete(make_result(cells[0].model, cells[0].task))
            else:
                w.fail("out of memory")
    writer(1).__enter__().fail("boom")
    running = writer(2).__enter__()  # this process writes it: alive, so running
    states = plan(spec, cells)
    assert [s.status for s in states] == ["complete", "failed", "running", "missing"]
    assert states[1].reason == "boom" and states[0].run is not None
    assert to_run(states) == [cells[1], cells[3]]
    assert to_run(states, rerun_running=True) == cells[1:]
    running.fail("done", interrupted=True)
    assert plan(spec, cells)[2].status == "interrupted"


# --------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """2 models x 2 tasks on the bundled sample: started as a process, killed (SIGKILL) once a
    cell is complete and another started, then resumed in-process. Module scope, so its own cache (the autouse fixture that
    isolates it is per test)."""
    from tiny_models import make_tiny_open_clip

    root = tmp_path_factory.mktemp("sweep")
    models = ["builtin:tiny", make_tiny_open_clip(root / "model")]
    path = write_sweep(root / "tiny.yaml", base(name="tiny-grid", models=models,
                                                options={"n_boot": 0, "cache_dir": "cache"}))  # fmt: skip
    out = root / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DENSECAP_EVAL_CACHE", str(root / "user-cache"))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "sweep", str(path)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                # kill it in the middle: the first model's cells stored, the second's started
                runs = [read_run(p) for p in out.iterdir()] if out.is_dir() else []
                seen = {(r.card.model_spec, r.status) for r in runs if r.card is not None}
                if {(models[0], "complete"), (models[1], "running")} <= seen:
                    break
                time.sleep(0.01)
            finished_early = proc.poll() is not None
        finally:
            proc.send_signal(signal.SIGKILL)
            _, stderr = proc.communicate(timeout=30)
        assert not finished_early, stderr.decode()
        before = {run.path.name: run.status for run in list_runs(out)}
        dry_before = plan(load_sweep(path))
        code = main(["sweep", str(path)])
        after = list_runs(out)
    yield {"path": path, "out": out, "before": before, "dry_before": dry_before, "code": code,
           "after": after, "models": models}  # fmt: skip


def test_a_killed_sweep_resumes_with_only_the_missing_cells(tiny_sweep: dict[str, Any]) -> None:
    before, after = tiny_sweep["before"], tiny_sweep["after"]
    complete_before = [name for name, status in before.items() if status == "complete"]
    assert 1 <= len(complete_before) <= 3
    # the killed process left its unfinished runs "running" on disk, read back as interrupted
    # (or, killed between mkdir and the first card, a directory without run.json: corrupt)
    assert {"complete"} < set(before.values()) <= {"complete", "interrupted", "corrupt"}
    states = {s.cell.id: s.status for s in tiny_sweep["dry_before"]}
    assert sorted(states.values()).count("complete") == len(complete_before)
    assert tiny_sweep["code"] == 0
    new = [run for run in after if run.path.name not in before]
    assert len(new) == 4 - len(complete_before)  # only the cells that were not complete ran
    assert all(run.is_complete for run in new)
    assert {run.card.cell for run in new} == {i for i, s in states.items() if s != "complete"}
    final = plan(load_sweep(tiny_sweep["path"]))
    assert [s.status for s in final] == ["complete"] * 4
    card = final[3].run.card
    assert card.sweep == "tiny-grid" and card.cell == final[3].cell.id
    assert card.model_spec == tiny_sweep["models"][1] and card.task == TASKS[1]


def test_rerun_skips_everything_and_dry_run_lists_states(
    tiny_sweep: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path, out = tiny_sweep["path"], tiny_sweep["out"]
    n_runs = len(list_runs(out))
    assert main(["sweep", str(path)]) == 0
    assert len(list_runs(out)) == n_runs
    assert "4 cells: 4 complete; 0 to run" in capsys.readouterr().err
    assert main(["sweep", str(path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "4 cells: 4 complete" in text
    for state in plan(load_sweep(path)):
        assert state.cell.id in text and state.run is not None and state.run.run_id in text


def test_report_shows_the_grid(
    tiny_sweep: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out, models = tiny_sweep["out"], tiny_sweep["models"]
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sweep tiny-grid: 4 cells: 4 complete" in text
    grid = text[text.index("sweep tiny-grid") :]
    header = next(line for line in grid.splitlines() if line.strip().startswith("model"))
    assert header.split() == ["model", *TASKS]
    assert "builtin:tiny" in grid and "scm " in grid and "i2t_r1 " in grid

    assert main(["report", str(out), "--sweep", "--format", "json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert [(c["model"], c["task"], c["status"]) for c in cells] == [
        (m, t, "complete") for m in models for t in TASKS
    ]
    assert [c["metric"] for c in cells] == ["scm", "i2t_r1"] * 2
    assert all(0 <= c["value"] <= 1 for c in cells)


def test_grid_shows_failed_and_missing_cells(tmp_path: Path) -> None:
    from test_results_store import make_result

    spec = load_sweep(write_sweep(tmp_path / "s.yaml", base(models=["builtin:tiny", "hf:x/y"])))
    cells = expand(spec)
    for cell, ok in ((cells[0], True), (cells[3], False)):
        tag = SweepTag(spec.name, ((cell.task, cell.id),))
        with RunWriter(spec.out, model_spec=cell.model, task=cell.task, config=cell.config,
                       **tag.card_fields(cell.task)) as w:  # fmt: skip
            if ok:
                w.complete(make_result(cell.model, cell.task))
            else:
                w.fail("no such model")
    (grid,) = grids_from_runs(list_runs(spec.out))
    assert grid.summary() == "4 cells: 1 complete, 1 failed, 2 missing"
    assert grid.rows() == [["builtin:tiny", "scm 50.0", "missing"],
                           ["hf:x/y", "missing", "failed"]]  # fmt: skip


def test_dashboard_sweeps_page(tiny_sweep: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from densecap_eval.dashboard import data

    frames = data.sweep_grid_frames(list_runs(tiny_sweep["out"]))
    assert [(title, summary) for title, summary, _ in frames] == [
        ("sweep tiny-grid", "4 cells: 4 complete")
    ]
    assert list(frames[0][2].columns) == ["model", *TASKS]
    app = Path(data.__file__).with_name("app.py")
    monkeypatch.setenv(data.ENV_VAR, str(tiny_sweep["out"]))
    at = AppTest.from_file(str(app), default_timeout=120)
    at.query_params["page"] = "sweeps"
    at.run()
    assert not at.exception and at.header[0].value == "Sweeps"
    assert [s.value for s in at.subheader] == ["sweep tiny-grid"]
    assert len(at.dataframe) == 1


@pytest.mark.slow
def test_a_cell_under_torchrun_records_its_cell(tmp_path: Path) -> None:
    """--nproc-per-node 2: the cell runs as `torchrun -m densecap_eval run --sweep-tag ...`
    (gloo on CPU), and its card carries the same cell id as a one-process run would."""
    path = write_sweep(tmp_path / "tr.yaml", base(tasks=["dci/all_swaps"]))
    spec = load_sweep(path)
    assert main(["sweep", str(path), "--nproc-per-node", "2"]) == 0
    (state,) = plan(spec)
    assert state.status == "complete" and state.run is not None and state.run.card is not None
    card = state.run.card
    assert (card.sweep, card.cell, card.world_size) == ("tr", expand(spec)[0].id, 2)
    assert card.command is not None and "--sweep-tag" in card.command


# --------------------------------------------------------------------------- SLURM, no cluster


def fake_slurm(bin_dir: Path, capture: Path) -> None:
    """``sbatch`` that keeps the submission script and answers with a job id; a ``srun`` that
    only makes submitit believe it is on a cluster."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {capture}\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)


def test_slurm_submits_one_array_job_and_its_cells_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit")
    from submitit.core.utils import DelayedSubmission

    slurm = {"partition": "gpu", "timeout_min": 30, "cpus_per_task": 4, "mem_gb": 16,
             "array_parallelism": 1, "setup": ["module load cuda"], "account": "vision"}  # fmt: skip
    path = write_sweep(tmp_path / "s.yaml", base(launcher="slurm", slurm=slurm))
    capture = tmp_path / "submitted.sh"
    fake_slurm(tmp_path / "bin", capture)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    assert main(["sweep", str(path)]) == 0
    assert "submitted SLURM job 4242: 2 task(s)" in capsys.readouterr().err
    script = capture.read_text()
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --time=30",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --account=vision", "#SBATCH --job-name=densecap-s",
                 "#SBATCH --ntasks-per-node=1", "module load cuda"):  # fmt: skip
        assert line in script.splitlines(), (line, script)
    assert "-m submitit.core._submit" in script
    spec = load_sweep(path)
    pickles = sorted((spec.out / ".sweeps" / "s" / "slurm").rglob("*_submitted.pkl"))
    assert len(pickles) == 2
    assert list_runs(spec.out) == []  # nothing ran here

    # what array task 1 runs on its node: one cell, recorded as that cell
    monkeypatch.setenv("DENSECAP_EVAL_CACHE", str(tmp_path / "cache"))
    submission = DelayedSubmission.load(pickles[0] if "_1_" in pickles[0].name else pickles[1])
    (run_id,) = submission.result()
    states = plan(spec)
    assert [s.status for s in states] == ["missing", "complete"]
    assert states[1].run is not None and states[1].run.run_id == run_id


def test_slurm_without_srun_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))
    path = write_sweep(tmp_path / "s.yaml", base())
    assert main(["sweep", str(path), "--launcher", "slurm"]) == 2


def test_config_of_a_cell_is_a_runconfig(tmp_path: Path) -> None:
    """Cells hold the same frozen RunConfig `run` builds (docs/architecture.md, "Data flow")."""
    spec = parse_sweep(base(options={"n_boot": 0, "ties": "first"}), source=tmp_path / "x.yaml")
    (cell, _) = expand(spec)
    assert cell.config == RunConfig.from_options(data_root=bundled_sample_root(), n_boot=0,
                                                 ties="first")  # fmt: skip
