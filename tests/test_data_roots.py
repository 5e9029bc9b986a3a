"""One command over several datasets: ``--data-root NAME=DIR`` (repeatable) beside a plain root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from densecap_eval.cli.app import main
from densecap_eval.cli.run_cmds import split_data_roots
from densecap_eval.config import ConfigError, RunConfig
from densecap_eval.errors import DensecapError
from densecap_eval.results import runner


@pytest.mark.parametrize(
    ("values", "root", "roots"),
    [
        ([], None, ()),
        (["/d"], Path("/d"), ()),
        (["urban1k=/u"], None, (("urban1k", Path("/u")),)),
        (
            ["/d", "urban1k=/u", "docci=/o"],
            Path("/d"),
            (("urban1k", Path("/u")), ("docci", Path("/o"))),
        ),
        (["/data/a=b"], Path("/data/a=b"), ()),  # not a dataset name: a path with '='
    ],
)
def test_split_data_roots(values: list[str], root: Path | None, roots: tuple) -> None:
    assert split_data_roots(values) == (root, roots)


@pytest.mark.parametrize(
    ("values", "message"),
    [(["/a", "/b"], "2 plain folders"), (["dci=/a", "dci=/b"], "given twice")],
)
def test_split_data_roots_refuses_ambiguity(values: list[str], message: str) -> None:
    with pytest.raises(DensecapError, match=message):
        split_data_roots(values)


def test_config_root_for_each_dataset(tmp_path: Path) -> None:
    config = RunConfig(data_root=tmp_path / "dci", data_roots={"urban1k": tmp_path / "u"})
    assert config.root_for("urban1k") == tmp_path / "u"
    assert config.root_for("dci") == tmp_path / "dci"  # the plain root for the rest
    assert config.to_dict()["data_roots"] == {"urban1k": str(tmp_path / "u")}
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="more than one data root"):
        RunConfig(data_roots=(("dci", tmp_path), ("dci", tmp_path)))


def test_cli_passes_named_roots_to_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run_and_store(request: runner.RunRequest, **_: Any) -> list[Any]:
        seen["request"] = request
        return []

    monkeypatch.setattr(runner, "run_and_store", run_and_store)
    code = main(["run", "--model", "builtin:tiny", "--task", "dci", "--data-root",
                 str(tmp_path / "d"), "--data-root", f"urban1k={tmp_path / 'u'}",
                 "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 0
    request = seen["request"]
    assert request.config.data_root == tmp_path / "d"
    assert request.config.root_for("urban1k") == tmp_path / "u"
    assert f"urban1k={tmp_path / 'u'}" in request.command_line()
