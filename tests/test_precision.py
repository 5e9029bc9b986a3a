"""Precision is keyed, recorded and fp32 by default: a cached bf16 score is never an fp32 one.

The scenario of issue 12: `run --precision bf16`, then a default run with the same cache, must
give the numbers of a `--no-cache` fp32 run under a card that says fp32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from densecap_eval.cli.app import main
from densecap_eval.core.config import ConfigError, RunConfig
from densecap_eval.results.store import list_runs
from densecap_eval.scorers.common import resolve_precision


def _run(out: Path, cache: Path, *extra: str) -> dict[str, Any]:
    """`densecap-eval run --sample` into a fresh results dir; (card, metrics) of its one run."""
    code = main(["run", "--sample", "--bootstrap", "0", "--cache-dir", str(cache),
                 "--out", str(out), *extra])  # fmt: skip
    assert code == 0
    (run,) = list_runs(out)
    assert run.card is not None
    metrics = json.loads((run.path / "metrics.json").read_text())
    return {"card": run.card, "metrics": metrics}


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {task: (m["scm"], m["neg"], m["n"]) for task, m in metrics.items()}


@pytest.mark.slow
def test_bf16_cache_is_not_served_to_an_fp32_run(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bf16 = _run(tmp_path / "bf16", cache, "--precision", "bf16")
    cached_fp32 = _run(tmp_path / "fp32", cache)  # default precision, same cache
    clean_fp32 = _run(tmp_path / "clean", tmp_path / "unused", "--no-cache")

    assert bf16["card"].precision == "bf16"
    assert cached_fp32["card"].precision == "fp32"
    assert cached_fp32["card"].model["cache_key"]["precision"] == "fp32"
    provenance = cached_fp32["card"].model["provenance"]
    assert len(provenance["weights_sha256"]) == 64  # the bundled weights, by content
    assert _headline(cached_fp32["metrics"]) == _headline(clean_fp32["metrics"])
    # and the fp32 run is the exact same computation, example for example
    assert cached_fp32["metrics"] == clean_fp32["metrics"]


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_default_precision_is_fp32_on_every_device(device: str) -> None:
    import torch

    assert resolve_precision(None, torch.device(device)) == "fp32"
    assert RunConfig().precision == "fp32"


def test_vlm_default_precision_is_fp32() -> None:
    from densecap_eval.scorers.vlm_common import resolve_dtype

    assert resolve_dtype(None, "cuda", "vqascore:x")[0] == "fp32"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"ties": "last"}, "unknown tie rule 'last'"),
        ({"text_policy": "cut"}, "unknown text policy 'cut'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"n_boot": -1}, "n_boot must be an integer >= 0"),
        ({"rerank_k": 0}, "rerank_k must be an integer >= 1"),
        ({"precison": "fp32"}, "did you mean 'precision'"),
    ],
)
def test_run_config_refuses_bad_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_options(**options)


def test_run_config_round_trips_through_the_card_dict(tmp_path: Path) -> None:
    config = RunConfig(data_root=tmp_path, precision="bf16", ties="first", blind=True, seed=3)
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON
    assert RunConfig.from_dict(data) == config
    assert not config.reference_exact and RunConfig().reference_exact


def test_cli_choices_are_the_config_values(capsys: pytest.CaptureFixture[str]) -> None:
    from densecap_eval.core.config import TIE_RULES
    from densecap_eval.scorers.base import PRECISIONS, TEXT_POLICIES

    assert main(["run", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for values in (TIE_RULES, PRECISIONS, TEXT_POLICIES):
        assert f"<{'|'.join(values)}>" in shown
