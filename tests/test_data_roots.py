"""One command over several datasets: ``--data-root NAME=DIR`` (repeatable) beside a plain root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from densecap_eval.cli.app import main
from densecap_eval.cli.run_options import split_data_roots
from densecap_eval.core.config import ConfigError, RunConfig
from densecap_eval.core.errors import DensecapError
from densecap_eval.run import runner


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


def test_dataset_options_reach_the_files_loader(tmp_path: Path) -> None:
    """``--dataset-option caption_column=text`` maps a users' file's column, end to end."""
    import json

    from PIL import Image

    from densecap_eval.cli.run_options import parse_dataset_options

    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
    rows = [{"image": f"{i}.png", "text": f"a {c} square"} for i, c in enumerate(("red", "blue"))]
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    options = parse_dataset_options(["caption_column=text"])
    assert options == (("caption_column", "text"),)
    from fake_scorers import FakeEmbeddingScorer

    import densecap_eval

    result = densecap_eval.evaluate(
        FakeEmbeddingScorer(), "files/retrieval", data_root=data, dataset_options=options,
        n_boot=0, use_cache=False,
    )  # fmt: skip
    assert result.metrics["files/retrieval"]["n"] == 2
    assert result.config["dataset_options"] == {"caption_column": "text"}
    with pytest.raises(ConfigError, match="no dataset of this run"):
        densecap_eval.evaluate(FakeEmbeddingScorer(), "files/retrieval", data_root=data,
                               dataset_options={"caption_colum": "text"}, use_cache=False)  # fmt: skip


@pytest.mark.parametrize("value", ["caption_column", "=text"])
def test_dataset_option_needs_key_and_value(value: str) -> None:
    from densecap_eval.cli.run_options import parse_dataset_options

    with pytest.raises(DensecapError, match="expected KEY=VALUE"):
        parse_dataset_options([value])
