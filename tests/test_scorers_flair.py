"""flair: a tiny checkpoint in the released layout against FLAIR written out in plain torch.

The reference below is independent of the scorer: patches by unfold, attention and the pooling
block's ``add_zero_attn`` by hand (one zero key and value per head, appended after the
projections), the CLIP BPE truncation as open_clip's tokenizer does it (77 ids, the end token
kept last). Then the engine: the late-interaction path caches each region's tokens once and
serves every task family, and `densecap-eval run` on the sample and on a retrieval release.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fake_scorers import FakeEmbeddingScorer
from hub_cache import hub_file, use_hub_cache
from PIL import Image
from tiny_flair import EMBED_DIM, IMAGE, PATCH, flair_state, make_tiny_flair, save_flair
from tiny_models import one_thread

from densecap_eval import load_scorer
from densecap_eval.cli.app import main
from densecap_eval.core.errors import ModelLoadError

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, open_clip's default
STD = (0.26862954, 0.26130258, 0.27577711)
WORDS = "red tram bakery sign street market dog cat tree river bridge house".split()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_flair(tmp_path_factory.mktemp("flair"))


def texts_of_lengths(lengths: list[int]) -> list[str]:
    """Texts of about ``n`` CLIP BPE tokens each (one token per word here)."""
    return [" ".join(WORDS[(i * 7 + n) % len(WORDS)] for i in range(n - 2)) for n in lengths]


def images() -> list[Image.Image]:
    """Images already at the model's size (the transform's resize and crop are identities)."""
    rng = np.random.default_rng(3)
    return [
        Image.fromarray((rng.random((IMAGE, IMAGE, 3)) * 255).astype(np.uint8)) for _ in range(3)
    ]


# -- FLAIR in plain torch ---------------------------------------------------------------------


@functools.cache
def clip_bpe() -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def ref_ids(text: str) -> torch.Tensor:
    tok = clip_bpe()
    ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]
    if len(ids) > 77:
        ids = ids[:77]
        ids[-1] = tok.eot_token_id
    return torch.tensor(ids + [0] * (77 - len(ids)))


def ln(x: torch.Tensor, s: dict[str, Any], name: str) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * s[f"{name}.weight"] + s[f"{name}.bias"]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: dict[str, Any],
    name: str,
    heads: int,
    *,
    mask: torch.Tensor | None = None,
    zero_attn: bool = False,
) -> torch.Tensor:
    """nn.MultiheadAttention's forward by hand: (B, Lq, D) x (B, Lk, D) -> (B, Lq, D)."""
    w, b = s[f"{name}.in_proj_weight"], s[f"{name}.in_proj_bias"]
    d = q.shape[-1]
    qp = q @ w[:d].T + b[:d]
    kp = k @ w[d : 2 * d].T + b[d : 2 * d]
    vp = v @ w[2 * d :].T + b[2 * d :]
    hd = d // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], heads, hd).transpose(1, 2)  # (B, H, L, hd)

    qh, kh, vh = split(qp), split(kp), split(vp)
    if zero_attn:  # one more key and value, all zeros, after the projections
        kh = torch.cat([kh, torch.zeros_like(kh[:, :, :1])], dim=2)
        vh = torch.cat([vh, torch.zeros_like(vh[:, :, :1])], dim=2)
    logits = qh @ kh.transpose(-1, -2) / math.sqrt(hd)
    if mask is not None:
        logits = logits + mask
    out = torch.softmax(logits, dim=-1) @ vh
    out = out.transpose(1, 2).reshape(q.shape[0], q.shape[1], d)
    return out @ s[f"{name}.out_proj.weight"].T + s[f"{name}.out_proj.bias"]


def tower(x: torch.Tensor, s: dict[str, Any], prefix: str, heads: int, mask: Any) -> torch.Tensor:
    i = 0
    while f"{prefix}.{i}.ln_1.weight" in s:
        p = f"{prefix}.{i}"
        h = ln(x, s, f"{p}.ln_1")
        x = x + attention(h, h, h, s, f"{p}.attn", heads, mask=mask)
        h = ln(x, s, f"{p}.ln_2")
        h = F.gelu(h @ s[f"{p}.mlp.c_fc.weight"].T + s[f"{p}.mlp.c_fc.bias"])
        x = x + h @ s[f"{p}.mlp.c_proj.weight"].T + s[f"{p}.mlp.c_proj.bias"]
        i += 1
    return x


def ref_image(image: Image.Image, s: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(global, local tokens) after image_post.proj, unnormalised."""
    px = torch.tensor(np.asarray(image, dtype=np.float32) / 255.0)
    px = ((px - torch.tensor(MEAN)) / torch.tensor(STD)).permute(2, 0, 1)[None]
    patches = F.unfold(px, PATCH, stride=PATCH).transpose(1, 2)  # (1, n, 3*p*p)
    x = patches @ s["visual.conv1.weight"].reshape(s["visual.conv1.weight"].shape[0], -1).T
    x = torch.cat([s["visual.class_embedding"].reshape(1, 1, -1), x], dim=1)
    x = ln(x + s["visual.positional_embedding"], s, "visual.ln_pre")
    width = x.shape[-1]
    x = ln(tower(x, s, "visual.transformer.resblocks", width // 64, None), s, "visual.ln_post")
    x = x[0] @ s["image_post.proj"]
    return x[0], x[1:]


def ref_text(text: str, s: dict[str, Any]) -> torch.Tensor:
    ids = ref_ids(text)
    x = s["token_embedding.weight"][ids][None] + s["positional_embedding"]
    mask = torch.full((77, 77), float("-inf")).triu(1)
    x = ln(tower(x, s, "transformer.resblocks", 8, mask), s, "ln_final")
    return x[0, int(ids.argmax())] @ s["text_post.proj"]


def ref_late(tokens: torch.Tensor, query: torch.Tensor, s: dict[str, Any]) -> float:
    """exp(logit_scale) x cosine(the block queried by the text over the tokens, the text)."""
    pooled = attention(
        ln(query, s, "visual_proj.ln_q")[None, None],
        ln(tokens, s, "visual_proj.ln_k")[None],
        ln(tokens, s, "visual_proj.ln_v")[None],
        s,
        "visual_proj.attn",
        8,
        zero_attn=True,
    )[0, 0]
    return float(s["logit_scale"].exp() * F.cosine_similarity(pooled, query, dim=0))


# -- the scorer against the reference ---------------------------------------------------------

LENGTHS = [10, 100, 240, 400]


def test_late_scores_equal_flair_written_out(released: Path) -> None:
    state = flair_state()
    scorer = load_scorer(f"flair:{released}", "cpu")
    assert scorer.kind == "late-interaction" and scorer.max_text_tokens == 77
    texts = texts_of_lengths(LENGTHS)
    assert [n // 10 for n in scorer.count_tokens(texts)] == [1, 10, 24, 40]  # untruncated
    assert scorer.text_cut(texts) == [False, True, True, True]
    ims = images()
    got = scorer.score(ims, texts)
    tokens = [ref_image(im, state)[1] for im in ims]
    queries = [ref_text(t, state) for t in texts]
    want = torch.tensor([[ref_late(tok, q, state) for q in queries] for tok in tokens])
    # to 1e-5 in cosine: the scores are exp(logit_scale) = 14.3 times it
    scale = float(state["logit_scale"].exp())
    torch.testing.assert_close(got / scale, want / scale, atol=1e-5, rtol=0)
    # one pair at a time (what element-wise task scores use) gives the same numbers
    tokens = scorer.encode_image_tokens(ims)
    query = scorer.encode_texts(texts).embeddings
    pairs = scorer.score_token_pairs(tokens[[0, 1, 2, 2]], query[[3, 2, 1, 0]])
    cells = want[[0, 1, 2, 2], [3, 2, 1, 0]]
    torch.testing.assert_close(pairs / scale, cells / scale, atol=1e-5, rtol=0)
    # the block path projects each query once; the library's MultiheadAttention agrees
    block = scorer.model.visual_proj
    with torch.inference_mode():
        library = block(query.unsqueeze(0).expand(len(tokens), -1, -1), tokens)
        torch.testing.assert_close(block.forward_shared(query, tokens), library)


def test_global_mode_is_clip_scoring_and_the_pooling_block_matters(released: Path) -> None:
    state = flair_state()
    late = load_scorer(f"flair:{released}", "cpu")
    glob = load_scorer(f"flair:{released}?mode=global", "cpu")
    assert glob.kind == "embedding" and glob.fingerprint != late.fingerprint
    texts, ims = texts_of_lengths(LENGTHS), images()
    img = F.normalize(torch.stack([ref_image(im, state)[0] for im in ims]), dim=-1)
    txt = F.normalize(torch.stack([ref_text(t, state) for t in texts]), dim=-1)
    torch.testing.assert_close(glob.encode_images(ims), img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(glob.encode_texts(texts).embeddings, txt, atol=1e-5, rtol=1e-5)
    scale = state["logit_scale"].exp()
    torch.testing.assert_close(glob.score(ims, texts), scale * img @ txt.T, atol=1e-5, rtol=1e-5)
    # without the pooling block the scores are others (so a stock CLIP reading cannot pass)
    assert (glob.score(ims, texts) - late.score(ims, texts)).abs().max() > 0.1


def test_chunk_mean_queries_with_the_chunks_mean_direction(released: Path) -> None:
    scorer = load_scorer(f"flair:{released}", "cpu")
    short, long = texts_of_lengths([10, 400])
    mean = scorer.encode_texts([short, long], policy="chunk-mean")
    truncated = scorer.encode_texts([short, long])
    assert mean.cut == [False, False] and truncated.cut == [False, True]
    torch.testing.assert_close(mean.embeddings[0], truncated.embeddings[0])  # within the limit
    assert float(mean.embeddings[1].norm()) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(F.normalize(mean.embeddings[1], dim=0),
                              F.normalize(truncated.embeddings[1], dim=0))  # fmt: skip


def test_pooling_weights_change_late_scores_only(released: Path, tmp_path: Path) -> None:
    state = flair_state()
    state["visual_proj.attn.in_proj_weight"] = state["visual_proj.attn.in_proj_weight"].flip(0)
    other = save_flair(tmp_path / "other.pt", state)
    texts, ims = texts_of_lengths([10, 30]), images()
    for mode, changes in (("late", True), ("global", False)):
        a = load_scorer(f"flair:{released}?mode={mode}", "cpu").score(ims, texts)
        b = load_scorer(f"flair:{other}?mode={mode}", "cpu").score(ims, texts)
        assert (not torch.equal(a, b)) is changes, mode


# -- bad files --------------------------------------------------------------------------------


def _variant(tmp_path: Path, name: str, edit: Any) -> Path:
    state = flair_state()
    edit(state)
    return save_flair(tmp_path / name, state)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.update({"visual.proj": torch.zeros(64, EMBED_DIM)}),
            "a plain CLIP checkpoint, not FLAIR's",
        ),
        (
            lambda s: [s.pop(k) for k in list(s) if k.startswith("visual_proj.")],
            "not a FLAIR checkpoint: missing visual_proj.attn.in_proj_weight",
        ),
        (
            lambda s: s.update({"visual.positional_embedding": torch.zeros(20, 64)}),
            "visual.positional_embedding has 20 rows, not 1 + a square grid",
        ),
        (
            lambda s: s.update({"positional_embedding": torch.zeros(70, 32)}),
            "positional_embedding has 70 rows, FLAIR's text context is 77",
        ),
        (lambda s: s.pop("ln_final.bias"), "missing keys: ln_final.bias"),
    ],
    ids=["plain-clip", "no-pooling-block", "non-square-grid", "short-text-table", "missing-key"],
)
def test_bad_checkpoints_fail_in_one_line(tmp_path: Path, edit: Any, message: str) -> None:
    path = _variant(tmp_path, "bad.pt", edit)
    with pytest.raises(ModelLoadError, match=re.escape(message)) as info:
        load_scorer(f"flair:{path}", "cpu")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_missing_and_bad_mode(tmp_path: Path, released: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(released.read_bytes()[:4000])
    with pytest.raises(ModelLoadError, match=f"cannot read checkpoint {cut}"):
        load_scorer(f"flair:{cut}", "cpu")
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        load_scorer(f"flair:{tmp_path}/nope.pt", "cpu")
    with pytest.raises(ModelLoadError, match="unknown mode 'pooled'"):
        load_scorer(f"flair:{released}?mode=pooled", "cpu")


def test_hub_file_resolves_through_the_hub_cache(
    tmp_path: Path, released: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "f" * 40
    hub_file(
        tmp_path / "hub", "xiaorui638/flair", commit, "flair-merged30m.pt", released.read_bytes()
    )
    use_hub_cache(monkeypatch, tmp_path / "hub")
    for name in ("xiaorui638/flair", "xiaorui638/flair/flair-merged30m.pt"):
        hub = load_scorer(f"flair:{name}", "cpu")
        assert hub.provenance["revision"] == commit
        assert (
            hub.provenance["weights_sha256"]
            == load_scorer(f"flair:{released}").provenance["weights_sha256"]
        )
    with pytest.raises(ModelLoadError, match="could not give xiaorui638/flair/flair-cc3m"):
        load_scorer("flair:xiaorui638/flair/flair-cc3m-recap.pt", "cpu")


# -- the engine and the runs ------------------------------------------------------------------


def test_engine_encodes_each_region_once_and_serves_blocks_and_pairs(
    tmp_path: Path, released: Path
) -> None:
    from densecap_eval.datasets.regions import Region
    from densecap_eval.engine.cache import EmbeddingCache
    from densecap_eval.engine.engine import score_plan
    from densecap_eval.engine.plan import ScoringPlan

    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(
        photo
    )
    boxes = [None, (0, 0, 32, 32), (10, 5, 50, 40)]
    texts = texts_of_lengths([10, 100, 40])
    plan = ScoringPlan()
    rs = [plan.add_region(Region(photo=str(photo), box=b)) for b in boxes]
    ts = [plan.add_text(t) for t in texts]
    scorer = load_scorer(f"flair:{released}", "cpu")
    forwards: list[int] = []
    tower = scorer.model.encode_image_tokens
    scorer.model.encode_image_tokens = lambda px: forwards.append(len(px)) or tower(px)
    cache = EmbeddingCache(tmp_path / "cache")
    table = score_plan(scorer, plan, cache=cache, num_workers=0, batch_size=2)
    assert sum(forwards) == 3 and table.kind == "embedding"  # every pair can be asked for
    crops = [Image.open(photo).convert("RGB").crop(b) if b else Image.open(photo) for b in boxes]
    want = scorer.score([im.convert("RGB") for im in crops], texts).numpy()
    block = table.matrix(rs, ts)
    np.testing.assert_allclose(block, want, atol=1e-5, rtol=1e-5)
    cells = table.scores(np.array([0, 1, 2, 2]), np.array([2, 1, 0, 1]))
    np.testing.assert_allclose(cells, block[[0, 1, 2, 2], [2, 1, 0, 1]], atol=1e-5, rtol=1e-5)
    forwards.clear()
    again = score_plan(scorer, plan, cache=cache, num_workers=0, batch_size=2)
    assert not forwards  # the tokens came from the cache
    assert np.array_equal(again.matrix(rs, ts), block)
    (model,) = cache.info()["models"]
    (images_store,) = [s for s in model["stores"] if s["kind"] == "image"]
    assert images_store["variant"].endswith("|tokens|blind=0")  # token rows, their own store


def test_cli_run_dci_sample_and_retrieval(tmp_path: Path, released: Path) -> None:
    from test_datasets_urban1k import CAPTIONS, write_urban1k

    write_urban1k(tmp_path / "data", dict(list(CAPTIONS.items())[:6]))
    out = tmp_path / "runs"
    common = ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
              "--bootstrap", "20"]  # fmt: skip
    assert main(["run", "--model", f"flair:{released}", "--task", "dci", "--sample", *common]) == 0
    argv = ["run", "--model", f"flair:{released}", "--task", "urban1k/retrieval",
            "--data-root", f"urban1k={tmp_path / 'data'}", *common]  # fmt: skip
    assert main(argv) == 0
    runs = {}
    for metrics_file in out.glob("*/metrics.json"):
        card = json.loads((metrics_file.parent / "run.json").read_text())
        runs[card["task"]] = (json.loads(metrics_file.read_text()), card)
    assert set(runs) == {"dci", "urban1k/retrieval"}
    for metrics, card in runs.values():
        assert metrics and all(m["model_max_text_tokens"] == 77 for m in metrics.values())
        assert card["model"]["max_text_tokens"] == 77
    retrieval = runs["urban1k/retrieval"][0]["urban1k/retrieval"]
    assert retrieval["n"] == retrieval["gallery"] == 6


# -- every task family through the late-interaction path --------------------------------------


class LateTwin(FakeEmbeddingScorer):
    """The fake embedding scorer as a late-interaction one: two equal tokens, a mean head.

    Its scores are the embedding scorer's (the mean of two equal rows is the row), so every
    task must give the same results through the late-interaction path as through embeddings.
    """

    kind = "late-interaction"  # type: ignore[assignment]
    head_pairs = 0

    def encode_pixel_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        rows = self.encode_pixels(pixels)
        return torch.stack([rows, rows], dim=1)

    def encode_image_tokens(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.encode_images(images)] * 2, dim=1)

    def score_tokens(self, image_tokens: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        self.head_pairs += image_tokens.shape[0] * texts.shape[0]
        return self.logits(image_tokens.mean(dim=1), texts)

    def score_token_pairs(self, image_tokens: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        self.head_pairs += image_tokens.shape[0]
        pooled = image_tokens.mean(dim=1)
        return torch.stack([self.logits(pooled[i : i + 1], texts[i : i + 1])[0, 0]
                            for i in range(len(pooled))])  # fmt: skip


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 5) if isinstance(value, float) else value


def test_every_task_family_scores_the_same_through_the_late_path(tmp_path: Path) -> None:
    from test_sugarcrepe import _root as sugarcrepe_root
    from test_tasks_regions import _quadrant_box, _quadrants

    import densecap_eval
    from densecap_eval.core.paths import bundled_sample_root

    colours = {"p.png": ["red", "green", "blue", "yellow"], "r.png": ["white", "black", "purple",
               "orange"], "q.png": ["red", "green", "red", "blue"]}  # fmt: skip
    rows = []
    for name, cs in colours.items():
        _quadrants(tmp_path / name, cs)
        rows.append(
            {
                "image": name,
                "caption": f"a photo with a {cs[0]} square left of a "
                f"{cs[1]} square above a {cs[3]} square on a plain background",
                "negative": f"a photo with a {cs[1]} square left of a {cs[0]} square",
            }
        )
        rows += [{"image": name, "caption": f"the {c} square of {name}", "box": _quadrant_box(k),
                  "negative": f"the {cs[k - 1]} square"} for k, c in enumerate(cs)]  # fmt: skip
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = [
        ("dci", bundled_sample_root()),
        ("files/retrieval", jsonl),
        ("files/regions", jsonl),
        ("files/negatives", jsonl),
        ("sugarcrepe/swap_att", sugarcrepe_root(tmp_path)),
    ]
    for task, root in runs:
        twin = LateTwin()
        emb, late = (
            densecap_eval.evaluate(
                scorer, task, data_root=root, n_boot=0, use_cache=False, progress=False
            )
            for scorer in (FakeEmbeddingScorer(), twin)
        )
        assert late.config["scorer_kind"] == "late-interaction" and twin.head_pairs > 0, task
        assert _rounded(late.metrics) == _rounded(emb.metrics), task
        assert late.examples.shape == emb.examples.shape, task


class OomTwin(LateTwin):
    """Runs out of memory (as CUDA would) on head calls above a number of pairs."""

    def score_tokens(self, image_tokens: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        if image_tokens.shape[0] * texts.shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return super().score_tokens(image_tokens, texts)

    def score_token_pairs(self, image_tokens: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        if image_tokens.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return super().score_token_pairs(image_tokens, texts)


def test_the_head_backs_off_on_out_of_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from densecap_eval.datasets.regions import Region
    from densecap_eval.engine.engine import score_plan
    from densecap_eval.engine.plan import ScoringPlan

    plan = ScoringPlan()
    for k, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (12, 12), colour).save(tmp_path / f"{k}.png")
        plan.add_region(Region(photo=str(tmp_path / f"{k}.png"), box=None))
    for text in ["a red square", "green", "a blue one", "nothing at all"]:
        plan.add_text(text)
    r, t = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    want = score_plan(LateTwin(), plan, num_workers=0, batch_size=1)
    got = score_plan(OomTwin(), plan, num_workers=0, batch_size=1)  # blocks of 64 pairs asked
    np.testing.assert_allclose(
        got.matrix([0, 1, 2], [0, 1, 2, 3]), want.matrix([0, 1, 2], [0, 1, 2, 3]), atol=1e-6
    )
    got = score_plan(OomTwin(), plan, num_workers=0, batch_size=8)  # 8 pairs asked per forward
    np.testing.assert_allclose(got.scores(r, t), want.scores(r, t), atol=1e-6)
    backoffs = [m for m in caplog.messages if m.startswith("out of memory")]
    assert any("regions x texts" in m for m in backoffs), backoffs  # the block path
    assert backoffs[-1].endswith("(region, text) pairs; retrying with batches of 2"), backoffs
