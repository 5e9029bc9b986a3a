"""The scoring engine: each unique input encoded once, batching invisible in the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fake_scorers import FakeEmbeddingScorer, FakePairScorer, load_region
from PIL import Image

from densecap_eval.core.errors import TextTooLongError
from densecap_eval.datasets import regions as regions_mod
from densecap_eval.datasets.regions import Region, grey_like
from densecap_eval.engine import ScoreTable, ScoringPlan, score_plan
from densecap_eval.engine import engine as engine_mod
from densecap_eval.engine.engine import BatchBackoff, default_batch_size, is_oom

TEXTS = [
    "a red cube",
    "a cat sitting on a blue mat in the sun",
    "one",
    "two words",
    "a very long caption that keeps going well past the fake model limit of twelve tokens",
    "a green ball near a yellow wall",
]


def _photos(tmp_path: Path, n: int, size: tuple[int, int] = (48, 32)) -> list[str]:
    rng = np.random.default_rng(7)
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = tmp_path / f"photo_{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


BOXES = [None, (0, 0, 24, 16), (10, 4, 40, 30)]


def _plan(tmp_path: Path, n_photos: int = 4, texts: list[str] = TEXTS) -> ScoringPlan:
    """Regions added round-robin over photos (so photo grouping is the engine's job)."""
    plan = ScoringPlan()
    photos = _photos(tmp_path, n_photos)
    for box in BOXES:
        for photo in photos:
            plan.add_region(Region(photo, box))
    for text in texts:
        plan.add_text(text)
    plan.need_all(list(range(len(plan.regions))), list(range(len(plan.texts))))
    return plan


def _reference(scorer: FakeEmbeddingScorer, plan: ScoringPlan) -> np.ndarray:
    images = [load_region(r) for r in plan.regions]
    return scorer.score(images, plan.texts).numpy().astype(np.float64)


def test_each_unique_region_and_text_encoded_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    # Duplicates through fresh but equal objects collapse to the existing indices.
    assert plan.add_region(Region(plan.regions[3].photo, plan.regions[3].box)) == 3
    assert plan.add_text(str(TEXTS[1])) == 1
    scorer = FakeEmbeddingScorer()
    table = score_plan(scorer, plan, batch_size=5, num_workers=0)
    assert scorer.encoded_images == 12
    assert sorted(scorer.encoded_texts) == sorted(TEXTS)
    assert table.image_embeddings is not None and table.image_embeddings.shape == (12, 8)
    assert table.text_embeddings is not None and table.text_embeddings.shape == (6, 8)


def test_scores_equal_scorer_score(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    scorer = FakeEmbeddingScorer()
    table = score_plan(scorer, plan, batch_size=4, num_workers=0)
    ref = _reference(FakeEmbeddingScorer(), plan)
    got = table.matrix(list(range(12)), list(range(6)))
    assert np.abs(got - ref).max() <= 1e-5
    r, t = plan.pairs[:, 0], plan.pairs[:, 1]
    assert np.abs(table.scores(r, t) - ref[r, t]).max() <= 1e-5


@pytest.mark.parametrize(
    ("batch_size", "opens"),
    [
        # Photos P0..P3 with 3 regions each, grouped by photo: P0 P0 P0 P1 | P1 P1 P2 P2 | ...
        (4, 6),
        (6, 4),  # two whole photos per batch
        (12, 4),  # one batch, each photo once
        (1, 12),  # every region its own batch
    ],
)
def test_each_photo_decoded_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: int, opens: int
) -> None:
    plan = _plan(tmp_path)
    calls: list[str] = []
    real_open = regions_mod.open_photo

    def counting_open(path: str | Path) -> Image.Image:
        calls.append(str(path))
        return real_open(path)

    monkeypatch.setattr(regions_mod, "open_photo", counting_open)
    score_plan(FakeEmbeddingScorer(), plan, batch_size=batch_size, num_workers=0)
    assert len(calls) == opens


def test_batch_size_one_equals_sixty_four(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    small = score_plan(FakeEmbeddingScorer(), plan, batch_size=1, num_workers=0)
    big = score_plan(FakeEmbeddingScorer(), plan, batch_size=64, num_workers=0)
    r, t = plan.pairs[:, 0], plan.pairs[:, 1]
    assert np.abs(small.scores(r, t) - big.scores(r, t)).max() <= 1e-5
    assert np.array_equal(small.text_tokens, big.text_tokens)


def test_texts_are_encoded_shortest_first_and_order_does_not_matter(tmp_path: Path) -> None:
    scorer = FakeEmbeddingScorer()
    table = score_plan(scorer, _plan(tmp_path / "a"), batch_size=2, num_workers=0)
    counts = scorer.count_tokens(scorer.encoded_texts)
    assert counts == sorted(counts)
    assert scorer.text_calls == [2, 2, 2]
    reordered = score_plan(
        FakeEmbeddingScorer(), _plan(tmp_path / "b", texts=TEXTS[::-1]), batch_size=2, num_workers=0
    )
    assert table.text_embeddings is not None and reordered.text_embeddings is not None
    assert np.array_equal(table.text_embeddings, reordered.text_embeddings[::-1])
    assert np.array_equal(table.text_tokens, reordered.text_tokens[::-1])


def test_text_tokens_and_cut_recorded_in_plan_order(tmp_path: Path) -> None:
    table = score_plan(FakeEmbeddingScorer(max_text_tokens=12), _plan(tmp_path), num_workers=0)
    # whitespace words + 2, by hand
    assert table.text_tokens.tolist() == [5, 12, 3, 4, 18, 9]
    assert table.text_cut.tolist() == [False, False, False, False, True, False]


def test_text_policies(tmp_path: Path) -> None:
    plan = _plan(tmp_path, n_photos=1)
    trunc = score_plan(FakeEmbeddingScorer(), plan, text_policy="truncate", num_workers=0)
    chunk = score_plan(FakeEmbeddingScorer(), plan, text_policy="chunk-mean", num_workers=0)
    assert trunc.text_embeddings is not None and chunk.text_embeddings is not None
    short = [i for i, n in enumerate(trunc.text_tokens) if n <= 12]
    assert np.array_equal(trunc.text_embeddings[short], chunk.text_embeddings[short])
    assert not np.allclose(trunc.text_embeddings[4], chunk.text_embeddings[4])
    assert trunc.text_cut.tolist()[4] and not chunk.text_cut.any()
    with pytest.raises(TextTooLongError, match="18 tokens"):
        score_plan(FakeEmbeddingScorer(), plan, text_policy="error", num_workers=0)


def test_blind_uses_grey_crops_of_the_same_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(tmp_path, n_photos=2)
    seen: list[tuple[int, int]] = []
    scorer = FakeEmbeddingScorer()
    real_preprocess = scorer.preprocess

    def spy(image: Image.Image) -> torch.Tensor:
        assert set(image.getdata()) == {(128, 128, 128)}
        seen.append(image.size)
        return real_preprocess(image)

    monkeypatch.setattr(scorer, "preprocess", spy)
    table = score_plan(scorer, plan, blind=True, num_workers=0)
    assert seen == [load_region(r).size for r in _grouped(plan.regions)]
    grey = FakeEmbeddingScorer().encode_images([grey_like(load_region(plan.regions[0]))])
    assert table.image_embeddings is not None
    assert np.abs(table.image_embeddings - grey.numpy()).max() <= 1e-6


def _grouped(regions: list[Region]) -> list[Region]:
    order: dict[str, int] = {}
    for r in regions:
        order.setdefault(r.photo, len(order))
    return sorted(regions, key=lambda r: order[r.photo])


@pytest.mark.parametrize("style", ["cuda", "runtime"])
def test_out_of_memory_halves_the_batch(tmp_path: Path, style: str) -> None:
    plan = _plan(tmp_path)
    scorer = FakeEmbeddingScorer(oom_above=5, oom_style=style)  # type: ignore[arg-type]
    table = score_plan(scorer, plan, batch_size=16, num_workers=0)
    # The attempted batch halves until it fits and the size is kept for the rest:
    # 12 regions: 12 fails, 6 fails, then 3 3 3 3; 6 texts: 6 fails, then 3 3.
    assert scorer.pixel_calls == [3, 3, 3, 3]
    assert scorer.text_calls == [3, 3]
    ref = _reference(FakeEmbeddingScorer(), plan)
    assert np.abs(table.matrix(list(range(12)), list(range(6))) - ref).max() <= 1e-5


def test_out_of_memory_below_one_reraises(tmp_path: Path) -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        score_plan(FakeEmbeddingScorer(oom_above=0), _plan(tmp_path), batch_size=8, num_workers=0)


def test_other_errors_are_not_retried() -> None:
    backoff = BatchBackoff(8, what="items")
    calls: list[int] = []

    def boom(a: int, b: int) -> None:
        calls.append(b - a)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(backoff.run(10, boom))
    assert calls == [8]
    assert backoff.size == 8


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (torch.cuda.OutOfMemoryError("x"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), True),
        (RuntimeError("expected scalar type Float"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_oom(exc: BaseException, expected: bool) -> None:
    assert is_oom(exc) is expected


@pytest.mark.parametrize(
    ("device", "size"), [("cpu", 32), ("cuda", 256), ("cuda:1", 256), ("mps", 64), (None, 32)]
)
def test_default_batch_size(device: str | None, size: int) -> None:
    assert default_batch_size(device) == size


@pytest.mark.parametrize(("device", "size"), [("cpu", 32), ("cuda:0", 64), ("mps", 16)])
def test_pair_scorers_default_to_fewer_pairs_per_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, size: int
) -> None:
    assert default_batch_size(device, "pair") == size
    plan = _plan(tmp_path, n_photos=12, texts=TEXTS[:3])  # 36 regions x 3 texts = 108 pairs
    scorer = FakePairScorer(device=device)  # the fake runs on CPU whatever it says
    score_plan(scorer, plan, num_workers=0)
    assert max(scorer.pair_calls) == min(size, 108)


def test_no_scorer_imports_the_engine() -> None:
    # Scorers score what they are given; batching and back-off live in densecap_eval.core.batching.
    scorers = Path(__file__).parent.parent / "densecap_eval" / "scorers"
    for path in sorted(scorers.glob("*.py")):
        assert "densecap_eval.engine" not in path.read_text(), path.name


@pytest.mark.parametrize(("device", "pinned"), [("cpu", False), ("cuda:0", True)])
def test_region_batches_are_pinned_for_a_cuda_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, pinned: bool
) -> None:
    seen: list[bool] = []
    real = engine_mod._iter_batches

    def recording(dataset: Any, workers: int, *, pin_memory: bool = False, **_: Any) -> Any:
        seen.append(pin_memory)
        return real(dataset, workers)  # no CUDA here to pin with (tests/test_gpu.py checks that)

    monkeypatch.setattr(engine_mod, "_iter_batches", recording)
    score_plan(FakeEmbeddingScorer(device=device), _plan(tmp_path), batch_size=4, num_workers=0)
    score_plan(FakePairScorer(device=device), _plan(tmp_path), batch_size=4, num_workers=0)
    assert seen == [pinned, False]  # pair scorers get PIL images, nothing to pin


def test_worker_processes_give_the_same_numbers(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    inline = score_plan(FakeEmbeddingScorer(), plan, batch_size=3, num_workers=0)
    scorer = FakeEmbeddingScorer()
    workers = score_plan(scorer, plan, batch_size=3, num_workers=2)
    assert scorer.pixel_calls == [3, 3, 3, 3]
    assert inline.image_embeddings is not None and workers.image_embeddings is not None
    assert np.array_equal(inline.image_embeddings, workers.image_embeddings)


def test_pair_scorer_scores_exactly_the_planned_pairs(tmp_path: Path) -> None:
    plan = ScoringPlan()
    photos = _photos(tmp_path, 2)
    regions = [plan.add_region(Region(p, b)) for p in photos for b in BOXES]
    texts = [plan.add_text(t) for t in TEXTS]
    wanted = {(0, 0), (0, 4), (1, 2), (3, 5), (5, 1), (5, 0)}
    for r, t in wanted:
        plan.need(regions[r], texts[t])
    plan.need(0, 0)  # a duplicate need
    scorer = FakePairScorer()
    table = score_plan(scorer, plan, batch_size=4, num_workers=0)
    assert sum(scorer.pair_calls) == len(wanted)
    assert {tuple(p) for p in table.pairs.tolist()} == wanted
    ref = _reference(FakeEmbeddingScorer(), plan)
    for r, t in wanted:
        assert abs(table.scores(np.array(r), np.array(t)) - ref[r, t]) <= 1e-5
    assert table.text_tokens.tolist() == [5, 12, 3, 4, 18, 9]
    assert table.text_cut.tolist() == [False, False, False, False, True, False]
    with pytest.raises(KeyError, match="region 1, text 1"):
        table.scores(np.array([1]), np.array([1]))


def test_pair_scorer_decodes_each_photo_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(tmp_path, n_photos=2, texts=["a b", "c d"])  # 6 regions x 2 texts, same length
    calls: list[str] = []
    real_open = regions_mod.open_photo
    monkeypatch.setattr(regions_mod, "open_photo", lambda p: calls.append(p) or real_open(p))
    score_plan(FakePairScorer(), plan, batch_size=6, num_workers=0)
    # 12 pairs sorted by (length, photo): P0 x6 | P1 x6 -> one decode per batch.
    assert len(calls) == 2


def test_pair_scorer_out_of_memory(tmp_path: Path) -> None:
    plan = _plan(tmp_path, n_photos=1, texts=TEXTS[:2])
    scorer = FakePairScorer(oom_above=3)
    table = score_plan(scorer, plan, batch_size=8, num_workers=0)
    assert scorer.pair_calls == [3, 3]  # 6 pairs: 6 fails, then 3 3
    ref = _reference(FakeEmbeddingScorer(), plan)
    assert np.abs(table.matrix([0, 1, 2], [0, 1]) - ref).max() <= 1e-5


def test_scores_gather_cells_of_the_block_exactly(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    table = score_plan(FakeEmbeddingScorer(), plan, num_workers=0)
    rs, ts = [0, 3, 7], [1, 2, 5]
    block = table.matrix(rs, ts)
    r = np.array(rs)[:, None].repeat(3, axis=1)
    t = np.array(ts)[None, :].repeat(3, axis=0)
    assert np.array_equal(table.scores(r, t), block)
    assert table.scores(np.zeros((0,), dtype=int), np.zeros((0,), dtype=int)).shape == (0,)


def test_score_table_from_pair_dict() -> None:
    table = ScoreTable(
        text_tokens=np.array([3, 4]),
        text_cut=np.array([False, True]),
        pair_scores={(0, 1): 2.5, (1, 0): -1.0},
    )
    assert table.scores(np.array([0, 1]), np.array([1, 0])).tolist() == [2.5, -1.0]
    with pytest.raises(KeyError):
        table.matrix([0], [0])


def test_empty_plan() -> None:
    table = score_plan(FakeEmbeddingScorer(), ScoringPlan(), num_workers=0)
    assert table.text_tokens.shape == (0,)
    assert table.matrix([], []).shape == (0, 0)


def test_progress_bars_write_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    score_plan(FakeEmbeddingScorer(), _plan(tmp_path, n_photos=1), progress=True, num_workers=0)
    assert "encoding regions" in capsys.readouterr().err
    score_plan(FakeEmbeddingScorer(), _plan(tmp_path, n_photos=1), progress=None, num_workers=0)
    assert capsys.readouterr().err == ""


class _TinyOpenClip:
    """A random-weight open_clip CLIP behind the EmbeddingScorer protocol (engine test only;
    the real backend and its spec strings are tested with the scorers)."""

    kind = "embedding"
    text_policy = "truncate"
    spec = "test:tiny-open-clip"
    fingerprint = "test:tiny-open-clip"
    preprocess_id = "open_clip-32"
    max_text_tokens = 77
    device = "cpu"

    def __init__(self) -> None:
        import open_clip

        torch.manual_seed(0)
        self.model = open_clip.model.CLIP(
            embed_dim=16,
            vision_cfg=open_clip.model.CLIPVisionCfg(
                layers=1, width=32, head_width=16, patch_size=8, image_size=32
            ),
            text_cfg=open_clip.model.CLIPTextCfg(context_length=77, width=32, heads=2, layers=1),
        ).eval()
        self.transform = open_clip.transform.image_transform(32, is_train=False)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(self.tokenizer.encode(t)) + 2 for t in texts]

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, normalize=True)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], *, policy: str | None = None) -> object:
        from densecap_eval.scorers.base import TextEncoding

        emb = self.model.encode_text(self.tokenizer(texts), normalize=True)
        n = self.count_tokens(texts)
        return TextEncoding(embeddings=emb, n_tokens=n, cut=[k > 77 for k in n])

    def logits(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        return self.model.logit_scale.exp().detach() * img @ txt.T


def test_real_open_clip_model_matches_its_own_forward(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    scorer = _TinyOpenClip()
    crops = [load_region(r) for r in plan.regions]
    with torch.inference_mode():
        img = scorer.model.encode_image(torch.stack([scorer.transform(c) for c in crops]))
        txt = scorer.model.encode_text(scorer.tokenizer(plan.texts))
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        direct = (scorer.model.logit_scale.exp() * img @ txt.T).numpy()
    one = score_plan(scorer, plan, batch_size=1, num_workers=0)
    many = score_plan(scorer, plan, batch_size=64, num_workers=2)
    rs, ts = list(range(len(plan.regions))), list(range(len(plan.texts)))
    assert np.abs(one.matrix(rs, ts) - direct).max() <= 1e-5
    assert np.abs(many.matrix(rs, ts) - direct).max() <= 1e-5
    assert one.text_tokens.tolist() == scorer.count_tokens(plan.texts)


def test_engine_through_a_spec_string_matches_scorer_score(tmp_path: Path) -> None:
    """The real open_clip backend, loaded by spec: engine scores equal ``Scorer.score`` on the crops."""
    from tiny_models import make_tiny_open_clip

    from densecap_eval.scorers import load_scorer

    scorer = load_scorer(make_tiny_open_clip(tmp_path / "model"))
    plan = _plan(tmp_path / "photos", n_photos=2)
    table = score_plan(scorer, plan, batch_size=4, num_workers=0)
    expected = scorer.score([load_region(r) for r in plan.regions], plan.texts).numpy()
    got = table.matrix(list(range(len(plan.regions))), list(range(len(plan.texts))))
    assert np.max(np.abs(got - expected)) <= 1e-5
