"""`densecap-eval run` / `demo`: validation before any model loads, one run per (model, task),
failures recorded in the store; end to end on a synthetic DCI release with a tiny open_clip model.

Golden file: tests/golden/report_tiny_open_clip.json holds the `report --format json` metrics of
a fixed small run. After an intended change of the numbers, regenerate it with
``DENSECAP_UPDATE_GOLDEN=1 pytest tests/test_cli_run.py -k golden`` and review the diff.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from test_results_store import make_result

from densecap_eval.cli.app import main
from densecap_eval.core.config import RunConfig, flag_of
from densecap_eval.results.store import list_runs
from densecap_eval.run import runner

# --------------------------------------------------------------------------- with fakes


class FakeScorer:
    def __init__(self, spec: str) -> None:
        self.spec = spec


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Validation passes, models 'load', evaluate returns hand-made results per task."""
    calls: dict[str, Any] = {"loaded": [], "evaluated": [], "raise": None}

    def evaluate_tasks(scorer: FakeScorer, tasks: list[str], **options: Any) -> list[Any]:
        calls["evaluated"].append((scorer.spec, list(tasks), options))
        if calls["raise"] is not None:
            raise calls["raise"]
        from densecap_eval.datasets.records import SkippedImage

        skipped = [SkippedImage("broken.json", "no summaries")]
        return [
            make_result(scorer.spec, task, blind=options["config"].blind, skipped=skipped)
            for task in tasks
        ]

    def load_scorer(spec: str, **options: Any) -> FakeScorer:
        calls["loaded"].append((spec, options))
        return FakeScorer(spec)

    monkeypatch.setattr(runner, "check_task", lambda name: object())
    monkeypatch.setattr(runner, "check_model_spec", lambda spec: None)
    monkeypatch.setattr(runner, "check_data_root", lambda dataset, root, options=None: None)
    monkeypatch.setattr(runner, "load_scorer", load_scorer)
    monkeypatch.setattr(runner, "evaluate_tasks", evaluate_tasks)
    return calls


def test_one_run_per_model_and_task(
    tmp_path: Path, fake_backend: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    argv = ["run", "--model", "m:a", "--model", "m:b", "--task", "dci", "--task", "dci/retrieval",
            "--data-root", str(tmp_path), "--out", str(out), "--seed", "3", "--blind", "--precision", "fp16"]  # fmt: skip
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    runs = list_runs(out)
    assert sorted((r.card.model_spec, r.card.task, r.status) for r in runs) == [
        ("m:a", "dci", "complete"), ("m:a", "dci/retrieval", "complete"),
        ("m:b", "dci", "complete"), ("m:b", "dci/retrieval", "complete"),
    ]  # fmt: skip
    # one load and one shared evaluation per model, with the options passed through
    assert [spec for spec, _ in fake_backend["loaded"]] == ["m:a", "m:b"]
    assert [(spec, tasks) for spec, tasks, _ in fake_backend["evaluated"]] == [
        ("m:a", ["dci", "dci/retrieval"]), ("m:b", ["dci", "dci/retrieval"]),
    ]  # fmt: skip
    config = fake_backend["evaluated"][0][2]["config"]
    assert (config.seed, config.blind, config.precision, config.use_cache) == (
        3,
        True,
        "fp16",
        True,
    )
    card = runs[0].card
    assert (
        card.blind and card.n_skipped == 1 and card.seed == 0
    )  # seed as the (fake) result reports it
    assert card.command[:4] == ["densecap-eval", "run", "--model", "m:a"]
    assert "--blind" in card.command and "--seed" in card.command
    # skipped images: one warning each (once per model), then a count
    assert captured.err.count("warning: skipped image broken.json: no summaries") == 2
    assert "warning: 2 image(s) skipped; the run cards list them with their reasons" in captured.err
    assert "m:a (blind)" in captured.out and "dci/all_swaps" in captured.out


def test_failure_during_evaluation_marks_every_task_failed(
    tmp_path: Path, fake_backend: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from densecap_eval.core.errors import DatasetError

    fake_backend["raise"] = DatasetError("photos/ is missing")
    code = main(["run", "--model", "m:a", "--task", "dci", "--task", "dci/all_swaps",
                 "--data-root", str(tmp_path), "--out", str(tmp_path / "res")])  # fmt: skip
    assert code == 1  # an unusable release is not a usage error (2)
    assert capsys.readouterr().err.splitlines()[-1] == "error: photos/ is missing"
    runs = list_runs(tmp_path / "res")
    assert [(r.status, r.reason) for r in runs] == [
        ("failed", "DatasetError: photos/ is missing")
    ] * 2
    assert main(["report", str(tmp_path / "res")]) == 1


def test_ctrl_c_marks_runs_interrupted(
    tmp_path: Path, fake_backend: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_backend["raise"] = KeyboardInterrupt()
    code = main(
        ["run", "--model", "m:a", "--data-root", str(tmp_path), "--out", str(tmp_path / "res")]
    )
    assert code == 130
    assert [r.status for r in list_runs(tmp_path / "res")] == ["interrupted"]


def test_no_arguments_is_the_bundled_main_job(
    tmp_path: Path,
    fake_backend: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from densecap_eval.core.paths import bundled_sample_root

    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 0
    ((spec, tasks, options),) = fake_backend["evaluated"]
    assert (spec, tasks) == ("builtin:tiny", ["dci"])
    config = options["config"]
    assert config.data_root == bundled_sample_root()
    assert config.text_policy == "truncate" and config.n_boot == 1000 and config.precision == "fp32"
    assert [r.card.task for r in list_runs(tmp_path / "densecap-results")] == ["dci"]


def test_model_without_data_root_uses_the_resolved_root(
    tmp_path: Path, fake_backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DENSECAP_EVAL_DATA", str(tmp_path / "dci-data"))
    assert main(["run", "--model", "m:a", "--out", str(tmp_path / "r")]) == 0
    assert fake_backend["evaluated"][0][2]["config"].data_root == tmp_path / "dci-data"
    assert main(["run", "--model", "m:a", "--sample", "--out", str(tmp_path / "r")]) == 0
    from densecap_eval.core.paths import bundled_sample_root

    assert fake_backend["evaluated"][1][2]["config"].data_root == bundled_sample_root()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--text-policy", "squash"],
            "Error: Invalid value for '--text-policy': Value error, 'squash' is not one of "
            "'truncate', 'chunk-mean', 'error'.",
        ),
        (
            ["--precision", "fp8"],
            "Error: Invalid value for '--precision': Value error, 'fp8' is not one of 'fp32', "
            "'fp16', 'bf16'.",
        ),
        (
            ["--ties", "last"],
            "Error: Invalid value for '--ties': Value error, 'last' is not one of 'pessimistic', "
            "'first'.",
        ),
    ],
)
def test_bad_options_fail_before_loading(
    tmp_path: Path,
    fake_backend: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    error: str,
) -> None:
    assert main(["run", "--model", "m:a", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: densecap-eval run [OPTIONS]") and err.endswith(error + "\n")
    assert fake_backend["loaded"] == [] and not (tmp_path / "r").exists()


def test_unwritable_results_dir_fails_before_loading(
    tmp_path: Path, fake_backend: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "run",
                "--model",
                "m:a",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "file" / "r"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"error: results directory {tmp_path / 'file' / 'r'} is not writable")
    assert len(err.splitlines()) == 1 and fake_backend["loaded"] == []


def test_demo_without_dashboard_points_to_report(
    tmp_path: Path,
    fake_backend: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "densecap_eval.cli.dashboard_cmd", None)  # import fails
    assert main(["demo", "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert f"densecap-eval report {tmp_path / 'r'}" in captured.err
    assert "builtin:tiny" in captured.out


def test_demo_opens_the_dashboard(
    tmp_path: Path, fake_backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    opened: list[tuple[Path, int | None]] = []
    module = types.ModuleType("densecap_eval.cli.dashboard_cmd")
    module.launch_dashboard = lambda results_dir, *, port=None: opened.append((results_dir, port))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "densecap_eval.cli.dashboard_cmd", module)
    assert main(["demo", "--out", str(tmp_path / "r"), "--port", "8599"]) == 0
    assert opened == [(tmp_path / "r", 8599)]


def test_run_request_command_line_reproduces_the_request(tmp_path: Path) -> None:
    config = RunConfig(data_root=tmp_path, split="test", use_cache=False, strict=True)
    request = runner.RunRequest(
        models=("m:a",), tasks=("dci",), results_dir=tmp_path / "r", config=config
    )
    # the config's options in RunConfig's field order (what `run --help` lists)
    assert request.command_line() == [
        "densecap-eval", "run", "--model", "m:a", "--task", "dci", "--out", str(tmp_path / "r"),
        "--data-root", str(tmp_path), "--precision", "fp32", "--text-policy", "truncate",
        "--split", "test", "--seed", "0", "--no-cache", "--strict", "--bootstrap", "1000",
        "--ties", "pessimistic",
    ]  # fmt: skip


def test_every_config_option_round_trips_through_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run`'s options are generated from RunConfig's fields: a config with every option off
    its default, written as a command line and parsed back by the CLI, is the same config."""
    config = RunConfig(
        data_root=tmp_path / "dci", data_roots={"urban1k": tmp_path / "u"},
        dataset_options={"caption_column": "text", "image_column": None}, batch_size=3,
        device="cpu", precision="bf16", text_policy="chunk-mean", split="valid", seed=5,
        blind=True, use_cache=False, cache_dir=tmp_path / "c", strict=True, n_boot=7,
        rerank_from="open_clip:x", ties="first", protocol="elevater-dci", rerank_k=4,
        num_workers=2, worker_timeout=9.5,
    )  # fmt: skip
    flagged = {f.name for f in fields(RunConfig) if flag_of(f) is not None}
    assert {f.name for f in fields(RunConfig)} - flagged == {"progress", "world_size"}
    defaults = RunConfig()
    assert all(getattr(config, name) != getattr(defaults, name) for name in flagged)
    request = runner.RunRequest(
        models=("m:a",), tasks=("dci",), results_dir=tmp_path / "r", config=config
    )
    seen: list[runner.RunRequest] = []
    monkeypatch.setattr(runner, "run_and_store", lambda req, events=None: seen.append(req) or [])
    assert main(request.command_line()[1:]) == 0
    assert seen[0].config == config
    assert seen[0].command_line() == request.command_line()


def test_data_root_that_is_not_a_dci_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "check_task", lambda name: object())
    monkeypatch.setattr(runner, "check_model_spec", lambda spec: None)
    monkeypatch.setattr(runner, "load_scorer", lambda spec, **kw: pytest.fail("model loaded"))
    (tmp_path / "not-dci").mkdir()
    argv = [
        "run",
        "--model",
        "m:a",
        "--data-root",
        str(tmp_path / "not-dci"),
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 1  # DatasetError: the data is unusable (2 is for usage errors)
    err = capsys.readouterr().err
    assert err == (
        f"error: {tmp_path / 'not-dci' / 'densely_captioned_images'} not found: "
        "the DCI root must contain densely_captioned_images/; get the release with "
        f"`densecap-eval download dci --root {tmp_path / 'not-dci'}`, set $DENSECAP_EVAL_DATA "
        "to a root that has it, or use the bundled sample with --sample\n"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("env_root", ["unset", "empty", "missing"])
def test_missing_data_root_says_how_to_get_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env_root: str,
) -> None:
    """No release anywhere: one line naming `densecap-eval download dci` and `--sample`."""
    import platformdirs

    monkeypatch.setattr(runner, "load_scorer", lambda spec, **kw: pytest.fail("model loaded"))
    # the per-user default root, pointed into tmp_path so a real download cannot interfere
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda name: str(tmp_path / "user"))
    monkeypatch.delenv("DENSECAP_EVAL_DATA", raising=False)
    if env_root == "empty":
        (tmp_path / "empty").mkdir()
        monkeypatch.setenv("DENSECAP_EVAL_DATA", str(tmp_path / "empty"))
    elif env_root == "missing":
        monkeypatch.setenv("DENSECAP_EVAL_DATA", str(tmp_path / "nowhere"))
    argv = ["run", "--model", "builtin:tiny", "--task", "dci", "--out", str(tmp_path / "r")]
    assert main(argv) == 1  # DatasetError
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    # the root is the default one, so the plain command (no --root) downloads into it
    assert "`densecap-eval download dci`" in err and "--sample" in err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- real registries


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--task", "dci/all_swapz"], "error: unknown task 'dci/all_swapz'; did you mean 'dci/all_swaps'? (known: "),
        (["--model", "opn_clip:x"], "error: model spec 'opn_clip:x': unknown model spec prefix 'opn_clip'; did you mean 'open_clip'? (known: "),
        (["--model", "ViT-B-32"], "error: model spec 'ViT-B-32' has no PREFIX: (known prefixes: "),
    ],
)  # fmt: skip
def test_unknown_task_or_model_fails_before_loading(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    error: str,
) -> None:
    monkeypatch.setattr(runner, "load_scorer", lambda spec, **kw: pytest.fail("model loaded"))
    assert main(["run", "--sample", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(error) and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- end to end

GOLDEN = Path(__file__).parent / "golden" / "report_tiny_open_clip.json"
UPDATE_GOLDEN = "DENSECAP_UPDATE_GOLDEN"


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The tiny open_clip model and a 4-photo synthetic DCI release (3 in test)."""
    from tiny_models import make_tiny_open_clip

    from densecap_eval.synth import generate_dci

    base = tmp_path_factory.mktemp("e2e")
    spec = make_tiny_open_clip(base / "model")
    generate_dci(base / "data", images=4, seed=0, split_sizes=(1, 0, 3))
    return spec, base / "data"


def _rounded(value: Any) -> Any:
    """Floats to 9 decimals, so the golden comparison ignores last-bit noise only."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 9) if isinstance(value, float) else value


@pytest.mark.slow
def test_end_to_end_store_cache_and_golden(
    tiny_release: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import os

    from densecap_eval.engine.cache import EmbeddingCache
    from densecap_eval.results.store import load_examples

    spec, data = tiny_release
    out, cache = tmp_path / "results", tmp_path / "cache"
    encoded: list[int] = []
    real_load = runner.load_scorer

    def counting_load(spec: str, **options: Any) -> Any:
        scorer = real_load(spec, **options)
        encoded.append(0)  # encode calls of this run
        for name in ("encode_pixels", "encode_texts", "encode_images"):
            method = getattr(scorer, name)

            def counted(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
                encoded[-1] += 1
                return _method(*args, **kwargs)

            setattr(scorer, name, counted)
        return scorer

    monkeypatch.setattr(runner, "load_scorer", counting_load)
    argv = ["run", "--model", spec, "--task", "dci", "--data-root", str(data), "--out", str(out),
            "--cache-dir", str(cache), "--bootstrap", "50", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    first_info = EmbeddingCache(cache).info()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "dci/all_swaps" in captured.out

    runs = list_runs(out)
    assert [r.status for r in runs] == ["complete", "complete"]
    first, second = runs
    for run in runs:
        assert sorted(p.name for p in run.path.iterdir()) == [
            "examples.parquet",
            "metrics.json",
            "run.json",
        ]
    card = first.card
    assert (card.task, card.split, card.text_policy, card.device, card.blind) == (
        "dci",
        "test",
        "truncate",
        "cpu",
        False,
    )
    assert card.tasks == [
        "dci/all_swaps",
        "dci/all_swaps_pick5",
        "dci/base_swaps",
        "dci/all_hardest",
    ]
    assert (
        card.model["spec"] == spec
        and card.model["fingerprint"]
        and card.model["max_text_tokens"] == 77
    )
    assert (
        card.dataset["name"] == "dci"
        and card.dataset["fingerprint"]
        and card.dataset["root"] == str(data)
    )
    assert card.versions["torch"] and card.command[:3] == ["densecap-eval", "run", "--model"]

    # same command twice: identical metrics, and the second run encoded nothing (cache hits only)
    assert (first.path / "metrics.json").read_bytes() == (second.path / "metrics.json").read_bytes()
    assert load_examples(first).equals(load_examples(second))
    assert encoded[0] > 0 and encoded[1] == 0
    assert EmbeddingCache(cache).info()["entries"] == first_info["entries"] > 0

    # golden: the json report's metrics for this fixed run
    assert main(["report", str(out), "--format", "json"]) == 0
    items = json.loads(capsys.readouterr().out)
    got = {item["task"]: item["metrics"] for item in items if item["run_id"] == first.run_id}
    examples = load_examples(first, columns=["task", "neg_correct"])
    for task, metrics in got.items():  # the stored metrics agree with the stored examples
        flags = examples.loc[examples["task"] == task, "neg_correct"]
        assert metrics["n"] == len(flags)
        if len(flags):
            assert metrics["neg"] == pytest.approx(flags.mean())
    if os.environ.get(UPDATE_GOLDEN):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert _rounded(got) == _rounded(json.loads(GOLDEN.read_text()))


@pytest.mark.slow
def test_a_run_leaves_tmpdir_empty(tmp_path: Path) -> None:
    """A real run (its own process, as a user starts it) writes under --out and the cache only:
    the temporary folder is left as it was found (torch's compiler cache included)."""
    import os
    import subprocess
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "DENSECAP_EVAL_CACHE": str(tmp_path / "cache")}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    code = (
        "import sys; from densecap_eval.cli.app import main; "
        f"sys.exit(main(['run', '--sample', '--task', 'dci/base_swaps', '--out', {str(tmp_path / 'out')!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp.iterdir()) == []
    assert list_runs(tmp_path / "out")


@pytest.mark.parametrize(
    ("root", "shown"),
    [
        ("inside/sample", "inside/sample"),
        ("{cwd}/inside/sample", "inside/sample"),
        ("/elsewhere/x", "/elsewhere/x"),
    ],
)
def test_the_evaluating_line_names_roots_under_the_working_directory_relatively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str, shown: str
) -> None:
    """A pasted session shows no machine's absolute path for data under the working directory."""
    from densecap_eval.cli.run_cmds import _shown

    monkeypatch.chdir(tmp_path)
    assert _shown(root.format(cwd=tmp_path)) == shown
