"""The Zero-shot page's data: each model's ELEVATER mean beside its long-caption metrics, and the
trade-off chart (zero-shot mean against one long-caption score, fine-tunes linked to their base).

The aggregation is the report's (`densecap_eval.results.zeroshot_summary`); this module only
shapes it for Streamlit and Altair. A fine-tune is linked to its base when its spec names it
(``lora:ADAPTER@BASE``) or its run card does (``model.base``); the long-caption families whose
spec names only the checkpoint (``longclip:``, ``fgclip:``, ``lotlip:``, ``tulip:`` ...) are listed
as "base not named" rather than linked by a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from densecap_eval.results.zeroshot_summary import (
    ELEVATER_TOTAL,
    HEADER,
    ZeroShotSummary,
    compare_protocols,
    protocol_table,
    summarise,
    table_cells,
)

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd

    from densecap_eval.results.store import StoredRun

BASE_COLUMN = "fine-tune of"
POINT_COLUMNS: tuple[str, ...] = ("model", "zeroshot", "long", "datasets", "set")
LINK_COLUMNS: tuple[str, ...] = ("link", "model", "zeroshot", "long")


def summaries_of(runs: Sequence[StoredRun]) -> list[ZeroShotSummary]:
    """The report's zero-shot summaries of the complete runs (the others are left out here:
    the page lists them above)."""
    from densecap_eval.results.report import rows_for_runs

    return summarise(rows_for_runs(runs, on_skip=lambda run: None))


PROTOCOLS_NOTE = (
    "A model that ran a dataset under two protocols or more gets both numbers, each labelled "
    "with its protocol, its metric and the images it is over: elevater (ELEVATER's classes, "
    "templates, softmax and metric, the model's own preprocessing), elevater-dci (DCI's run: "
    "ImageNet mean/std, ELEVATER's prompt cleaning), clip_benchmark (CLIP_benchmark's own wds "
    "copy, class names, templates and metrics). They read different copies and splits of the "
    "data, so they are never averaged into one number."
)


def protocols_frame(runs: Sequence[StoredRun]) -> pd.DataFrame:
    """The report's protocols-side-by-side table of the complete runs (empty when no model ran
    a dataset under two protocols)."""
    import pandas as pd

    from densecap_eval.results.report import rows_for_runs

    header, body = protocol_table(compare_protocols(rows_for_runs(runs, on_skip=lambda r: None)))
    return pd.DataFrame(body, columns=header)


# Long-caption families whose spec names the checkpoint only, not the model it was trained from.
NO_BASE_NAMED: tuple[str, ...] = ("longclip:", "fgclip:", "fgclip2:", "lotlip:", "tulip:")
UNKNOWN_BASE = "not named"


def base_spec(spec: str | None, named: str | None = None) -> str | None:
    """The base model spec of a fine-tune: the one a ``lora:ADAPTER@BASE`` spec names, else the
    one its run card names (``named``), else None: no guess from a checkpoint's name."""
    from densecap_eval.core.errors import ModelLoadError
    from densecap_eval.scorers.lora import parse_spec

    if spec is None or not spec.startswith("lora:"):
        return named
    rest = spec[len("lora:") :]
    try:
        adapter, _ = parse_spec(rest, spec=spec)
    except ModelLoadError:
        return named
    return rest[len(adapter) + 1 :]


def bases(summaries: Sequence[ZeroShotSummary]) -> dict[str, list[str]]:
    """Fine-tune label -> the labels of its base's summaries (same spec, any protocol)."""
    out: dict[str, list[str]] = {}
    for s in summaries:
        wanted = base_spec(s.spec, s.base)
        found = [b.model for b in summaries if wanted is not None and b.spec == wanted]
        if found:
            out[s.model] = found
    return out


def unknown_bases(summaries: Sequence[ZeroShotSummary]) -> list[str]:
    """The long-caption fine-tunes (Long-CLIP, FG-CLIP, LoTLIP, TULIP) whose base neither the
    spec nor the run card names: the page says so instead of guessing a link."""
    return [s.model for s in summaries
            if s.spec is not None and s.spec.startswith(NO_BASE_NAMED)
            and base_spec(s.spec, s.base) is None]  # fmt: skip


def table(summaries: Sequence[ZeroShotSummary]) -> pd.DataFrame:
    """The report's table (metrics in percent, ``n/20`` with ``partial``) plus each fine-tune's
    base where the results hold it."""
    import pandas as pd

    frame = pd.DataFrame(table_cells(summaries), columns=list(HEADER))
    linked, unknown = bases(summaries), set(unknown_bases(summaries))
    frame[BASE_COLUMN] = [", ".join(linked.get(s.model, []))
                          or (UNKNOWN_BASE if s.model in unknown else "-") for s in summaries]  # fmt: skip
    return frame


def long_caption_scores(summary: ZeroShotSummary) -> dict[str, float]:
    """The long-caption metrics this model has (fractions), by axis name."""
    scores = {"DCI SCM": summary.scm, "DCI Neg": summary.neg}
    for task, (t2i, i2t) in summary.retrieval.items():
        scores[f"{task} T2I R@1"] = t2i
        scores[f"{task} I2T R@1"] = i2t
    return {name: value for name, value in scores.items() if value is not None}


def axis_names(summaries: Sequence[ZeroShotSummary]) -> list[str]:
    """Every long-caption metric some model has: DCI SCM, DCI Neg, then retrieval by task."""
    names = [name for s in summaries for name in long_caption_scores(s)]
    dci = [n for n in ("DCI SCM", "DCI Neg") if n in names]
    return dci + sorted({n for n in names if n not in dci})


def points(summaries: Sequence[ZeroShotSummary], axis: str) -> pd.DataFrame:
    """One point per model that has both an ELEVATER mean and ``axis``, in percent."""
    import pandas as pd

    rows = []
    for s in summaries:
        long = long_caption_scores(s).get(axis)
        if long is None or s.mean is None:
            continue
        rows.append({"model": s.model, "zeroshot": 100 * s.mean, "long": 100 * long,
                     "datasets": f"{s.count}/{ELEVATER_TOTAL}",
                     "set": "partial" if s.partial else "all 20"})  # fmt: skip
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


def links(summaries: Sequence[ZeroShotSummary], shown: pd.DataFrame) -> pd.DataFrame:
    """Two rows per fine-tune/base pair on the chart (a line from the base to the fine-tune)."""
    import pandas as pd

    at = {row.model: (row.zeroshot, row.long) for row in shown.itertuples()}
    rows = []
    for tuned, found in bases(summaries).items():
        for base in found:
            if tuned in at and base in at:
                link = f"{base} → {tuned}"
                rows.append({"link": link, "model": base, "zeroshot": at[base][0],
                             "long": at[base][1]})  # fmt: skip
                rows.append({"link": link, "model": tuned, "zeroshot": at[tuned][0],
                             "long": at[tuned][1]})  # fmt: skip
    return pd.DataFrame(rows, columns=list(LINK_COLUMNS))


def trade_off_chart(shown: pd.DataFrame, pairs: pd.DataFrame, axis: str) -> alt.LayerChart:
    """Long-caption score (x) against the ELEVATER mean (y): a point per model, hollow when the
    mean is over a partial set, a grey line from each base to its fine-tune."""
    import altair as alt

    # Long model specs (paths) fit below the plot, not beside it.
    legend = alt.Legend(orient="bottom", direction="vertical", labelLimit=900)
    x = alt.X("long:Q", title=f"{axis} (%)", scale=alt.Scale(domain=[0, 100]))
    y = alt.Y("zeroshot:Q", title="ELEVATER zero-shot mean (%)", scale=alt.Scale(domain=[0, 100]))
    lines = (
        alt.Chart(pairs)
        .mark_line(color="gray", strokeDash=[4, 3])
        .encode(x=x, y=y, detail="link:N", tooltip=["link:N"])
    )
    dots = (
        alt.Chart(shown)
        .mark_point(size=140, strokeWidth=2)
        .encode(
            x=x,
            y=y,
            color=alt.Color("model:N", title="model", legend=legend),
            fill=alt.condition(
                alt.datum.set == "partial", alt.value("white"), alt.Color("model:N", legend=None)
            ),
            tooltip=[
                "model:N",
                alt.Tooltip("zeroshot:Q", format=".1f", title="ELEVATER mean (%)"),
                alt.Tooltip("datasets:N", title="ELEVATER datasets"),
                "set:N",
                alt.Tooltip("long:Q", format=".1f", title=f"{axis} (%)"),
            ],
        )
    )
    return alt.layer(lines, dots).properties(height=560)  # the legend below shares it
