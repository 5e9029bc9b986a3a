"""The dashboard's Zero-shot page (Streamlit AppTest) over real runs: builtin:tiny, a tiny hf
CLIP and a LoRA fine-tune of it, each on two tasks of a tiny synthetic ELEVATER release and on
the bundled DCI sample."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tiny_models import make_tiny_hf_clip, make_tiny_lora, one_thread

from densecap_eval.cli.app import main
from densecap_eval.dashboard import data, zeroshot_view
from densecap_eval.results.store import list_runs

APP = Path(data.__file__).with_name("app.py")
TASKS = ("elevater/cifar10", "elevater/kitti-distance")


@pytest.fixture(scope="module")
def zs_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Results of three models (the third a LoRA of the second); returns (root, base, lora)."""
    base_dir = tmp_path_factory.mktemp("zs")
    release = base_dir / "elevater"
    assert main(["synth", str(release), "--elevater", "--images", "4"]) == 0
    base = make_tiny_hf_clip(base_dir / "base")
    lora = make_tiny_lora(base_dir / "adapter", base)
    root, cache = base_dir / "results", base_dir / "cache"
    common = ["--out", str(root), "--cache-dir", str(cache), "--bootstrap", "0", "--workers", "0"]
    with contextmanager(one_thread)():
        for model in ("builtin:tiny", base, lora):
            tasks = [x for t in TASKS for x in ("--task", t)]
            assert (
                main(["run", "--model", model, "--data-root", str(release), *tasks, *common]) == 0
            )
            assert main(["run", "--model", model, "--sample", *common]) == 0  # dci, bundled sample
    assert all(run.is_complete for run in list_runs(root))
    return root, base, lora


def _page(root: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(data.ENV_VAR, str(root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["page"] = "zeroshot"
    return at.run()


def _chart_data(at: Any) -> dict[str, list[dict[str, Any]]]:
    """The datasets of the page's one Vega-Lite chart, by the layer's mark."""
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    datasets = {d.name: d for d in chart.proto.datasets}
    out = {}
    for layer in spec["layer"]:
        mark = layer["mark"]["type"]
        frame = _arrow_frame(datasets[layer["data"]["name"]].data.data)
        out[mark] = frame.to_dict("records")
    return out


def _arrow_frame(raw: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(raw).read_pandas()


def test_zeroshot_page_table_and_trade_off(
    zs_store: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base, lora = zs_store
    at = _page(root, monkeypatch)
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error
    assert at.header[0].value == "Zero-shot vs long captions"

    table = at.dataframe[0].value
    assert list(table["model"]) == ["builtin:tiny", base, lora]
    assert list(table["datasets"]) == ["2/20 partial"] * 3
    # the mean over the two datasets' zeroshot metric, as stored by the runs
    stored: dict[str, list[float]] = {}
    for run in list_runs(root):
        metrics = json.loads((run.path / "metrics.json").read_text())
        for task, values in metrics.items():
            if task in TASKS:
                stored.setdefault(run.card.model_spec, []).append(values["zeroshot"])
    for model, mean in zip(table["model"], table["ELEVATER mean"], strict=True):
        assert len(stored[model]) == 2
        assert mean == f"{100 * sum(stored[model]) / 2:.1f}"
    assert list(table[zeroshot_view.BASE_COLUMN]) == ["-", "-", base]
    assert table["DCI SCM"].ne("-").all() and table["DCI Neg"].ne("-").all()

    axes = at.selectbox(key="zs_axis")
    assert axes.options[:2] == ["DCI SCM", "DCI Neg"]
    layers = _chart_data(at)
    assert sorted(p["model"] for p in layers["point"]) == sorted(["builtin:tiny", base, lora])
    assert {p["set"] for p in layers["point"]} == {"partial"}
    assert [(r["link"], r["model"]) for r in layers["line"]] == [
        (f"{base} → {lora}", base), (f"{base} → {lora}", lora),
    ]  # fmt: skip
    neg = _chart_data(axes.set_value("DCI Neg").run())
    by_model = {p["model"]: p["long"] for p in neg["point"]}
    assert by_model["builtin:tiny"] == pytest.approx(float(table["DCI Neg"][0]), abs=0.05)


def test_base_spec_of_a_lora_only() -> None:
    assert zeroshot_view.base_spec("lora:/a/dci_pick1@hf:openai/clip") == "hf:openai/clip"
    assert zeroshot_view.base_spec("lora:/a/dci_pick1") is None  # malformed: no base known
    assert zeroshot_view.base_spec("open_clip:ViT-B-32/openai") is None
    assert zeroshot_view.base_spec(None) is None


def test_every_retrieval_task_is_an_axis() -> None:
    from densecap_eval.results.report import ReportRow
    from densecap_eval.results.zeroshot_summary import summarise

    def row(model: str, task: str, **metrics: Any) -> ReportRow:
        return ReportRow("run", model, task, metrics, "complete", None)  # type: ignore[arg-type]

    summaries = summarise([
        row("A", "elevater/cifar10", zeroshot=0.5),
        row("A", "docci/retrieval", t2i_r1=0.25, i2t_r1=0.5),
        row("A", "urban1k/retrieval", t2i_r1=0.75, i2t_r1=None),
        row("A", "dci/all_swaps", scm=0.4, neg=None),
        row("B", "elevater/cifar10", zeroshot=0.1),
    ])  # fmt: skip
    axes = zeroshot_view.axis_names(summaries)
    assert axes == ["DCI SCM", "docci/retrieval I2T R@1", "docci/retrieval T2I R@1",
                    "urban1k/retrieval T2I R@1"]  # fmt: skip
    shown = zeroshot_view.points(summaries, "urban1k/retrieval T2I R@1")
    assert shown.to_dict("records") == [
        {"model": "A", "zeroshot": 50.0, "long": 75.0, "datasets": "1/20", "set": "partial"}
    ]
    assert zeroshot_view.links(summaries, shown).empty  # no spec: no known base
    assert summaries[0].retrieval_task == "docci/retrieval"  # the report's column: the first


def test_zeroshot_page_without_elevater_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "results"
    common = ["--out", str(root), "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0"]
    assert main(["run", "--sample", *common]) == 0
    at = _page(root, monkeypatch)
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert "No ELEVATER zero-shot runs" in at.info[0].value


def test_screenshot_script_skips_the_page_without_elevater_runs(
    zs_store: tuple[Path, str, str], tmp_path: Path
) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_dashboard.py"
    spec = importlib.util.spec_from_file_location("screenshot_dashboard", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.PAGES["zeroshot"] == "Zero-shot vs long captions"
    assert script.has_content("zeroshot", zs_store[0])
    assert not script.has_content("zeroshot", tmp_path)  # no runs at all


def test_long_caption_fine_tunes_link_only_when_a_base_is_named() -> None:
    """Long-CLIP / FG-CLIP / LoTLIP / TULIP specs name a checkpoint, not its base: linked when
    the run card names the base, else listed as "not named" (never guessed from the name)."""
    from densecap_eval.results.zeroshot_summary import ZeroShotSummary

    def summary(model: str, base: str | None = None) -> ZeroShotSummary:
        s = ZeroShotSummary(model, {"elevater/cifar10": 0.5}, scm=0.5, spec=model, base=base)
        return s

    clip = "open_clip:ViT-B-16/openai"
    summaries = [
        summary(clip),
        summary("longclip:/m/longclip-B.pt", base=clip),  # the run card names its base
        summary("fgclip:/m/fg-clip-base"),
        summary("tulip:/m/tulip.pt"),
        summary("lotlip:/m/lotlip.pt?bert=/m/bert"),
        summary("hf:/m/plain-clip"),
    ]
    assert zeroshot_view.base_spec("longclip:/m/x.pt") is None
    assert zeroshot_view.base_spec("longclip:/m/x.pt", clip) == clip
    assert zeroshot_view.bases(summaries) == {"longclip:/m/longclip-B.pt": [clip]}
    assert zeroshot_view.unknown_bases(summaries) == [
        "fgclip:/m/fg-clip-base", "tulip:/m/tulip.pt", "lotlip:/m/lotlip.pt?bert=/m/bert",
    ]  # fmt: skip
    column = list(zeroshot_view.table(summaries)[zeroshot_view.BASE_COLUMN])
    assert column == ["-", clip, "not named", "not named", "not named", "-"]
    shown = zeroshot_view.points(summaries, "DCI SCM")
    links = zeroshot_view.links(summaries, shown)
    assert sorted(set(links["link"])) == [f"{clip} → longclip:/m/longclip-B.pt"]
