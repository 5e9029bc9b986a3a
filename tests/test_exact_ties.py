"""One text, one encoding: texts the model sees identically are encoded once and tie exactly.

Under ``truncate`` a caption and a negative that share their first 77 tokens reach the model
as the same token ids. Encoded separately (other batches, other padding) they can differ in the
last bits on some CPUs, and a tie becomes a "win" by float noise. The engine keys encodings by
the model's input, so they are one encoding; the score table computes each input's cells once,
so even a BLAS whose results depend on the block shape cannot split the tie.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densecap_eval import load_scorer
from densecap_eval.datasets.regions import Region
from densecap_eval.engine.cache import EmbeddingCache
from densecap_eval.engine.engine import score_plan
from densecap_eval.engine.plan import ScoreTable, ScoringPlan

HEAD = " ".join(f"word{i} is red." for i in range(40))  # well past 77 tokens


@pytest.fixture(scope="module")
def tiny():
    return load_scorer("builtin:tiny", device="cpu")


class _Counting:
    """Wraps a scorer and records every text it is asked to encode."""

    def __init__(self, scorer) -> None:
        self._scorer = scorer
        self.encoded: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self._scorer, name)

    def encode_texts(self, texts, *, policy=None):
        self.encoded.extend(texts)
        return self._scorer.encode_texts(texts, policy=policy)


def _plan(photo: Path, texts: list[str]) -> tuple[ScoringPlan, list[int]]:
    plan = ScoringPlan()
    plan.add_region(Region(photo=str(photo)))
    return plan, [plan.add_text(t) for t in texts]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_texts_identical_after_truncation_are_encoded_once_and_tie(
    tiny, tmp_path: Path, batch_size: int
) -> None:
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (20, 120, 200)).save(photo)
    caption, negative = HEAD + " the cat is black.", HEAD + " the cat is white."
    counts = tiny.count_tokens([caption, negative])
    assert min(counts) > tiny.max_text_tokens  # both cut, past the same 77 tokens
    # Short texts between them: with batch size 1 or 3 the two would be in different batches,
    # padded differently, were they encoded apart.
    texts = [caption, "a dog.", "two birds on a long wire.", "x", negative, "A DOG."]
    plan, idx = _plan(photo, texts)
    counting = _Counting(tiny)
    table = score_plan(counting, plan, batch_size=batch_size, cache=None, progress=False)
    # "a dog." and "A DOG." are one input too (the tokenizer lower-cases)
    assert len(counting.encoded) == 4 and negative not in counting.encoded
    assert "A DOG." not in counting.encoded
    emb = table.text_embeddings
    assert emb is not None
    assert np.array_equal(emb[idx[0]], emb[idx[4]]) and np.array_equal(emb[idx[1]], emb[idx[5]])
    s = table.scores(np.array([[0, 0]]), np.array([[idx[0], idx[4]]]))
    assert s[0, 0] == s[0, 1]
    m = table.matrix([0], idx)
    assert m[0, 0] == m[0, 4] and m[0, 1] == m[0, 5]
    # each text keeps its own untruncated count and cut flag
    assert table.text_tokens[idx[0]] == counts[0] and table.text_cut[idx[4]]
    assert table.text_tokens[idx[1]] == tiny.count_tokens(["a dog."])[0]


def test_chunk_mean_sees_past_the_window(tiny, tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(photo)
    caption, negative = HEAD + " the cat is black.", HEAD + " the cat is white."
    plan, idx = _plan(photo, [caption, negative])
    counting = _Counting(tiny)
    table = score_plan(
        counting, plan, batch_size=1, cache=None, progress=False, text_policy="chunk-mean"
    )
    assert len(counting.encoded) == 2  # the last chunks differ: two inputs
    emb = table.text_embeddings
    assert emb is not None and not np.array_equal(emb[idx[0]], emb[idx[1]])


def test_cache_serves_one_input_to_every_text_that_has_it(tiny, tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (20, 200, 20)).save(photo)
    caption, negative = HEAD + " the cat is black.", HEAD + " the cat is white."
    cache = EmbeddingCache(tmp_path / "cache")
    first, _ = _plan(photo, [caption])
    t1 = score_plan(tiny, first, batch_size=2, cache=cache, progress=False)
    plan, idx = _plan(photo, ["a boat.", negative])
    counting = _Counting(tiny)
    t2 = score_plan(counting, plan, batch_size=2, cache=cache, progress=False)
    assert counting.encoded == ["a boat."]  # the negative is the caption's cached input
    assert t1.text_embeddings is not None and t2.text_embeddings is not None
    assert np.array_equal(t1.text_embeddings[0], t2.text_embeddings[idx[1]])
    assert t2.text_tokens[idx[1]] == tiny.count_tokens([negative])[0]


def _shape_dependent(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """Logits as a BLAS might give them: the last bits depend on the block's shape."""
    return img @ txt.T + 1e-4 * (img.shape[0] * 7 + txt.shape[0])


def test_one_input_is_one_float_whatever_the_block() -> None:
    rng = np.random.default_rng(0)
    img = rng.standard_normal((5, 8)).astype(np.float32)
    txt = rng.standard_normal((6, 8)).astype(np.float32)
    txt[4] = txt[1]  # text 4 is text 1's input, region 3 is region 0's
    img[3] = img[0]
    table = ScoreTable(
        text_tokens=np.zeros(6, dtype=np.int64),
        text_cut=np.zeros(6, dtype=bool),
        image_embeddings=img,
        text_embeddings=txt,
        logit_fn=_shape_dependent,
        image_slot=np.array([0, 1, 2, 0, 4]),
        text_slot=np.array([0, 1, 2, 3, 1, 5]),
    )
    r = np.array([[0, 0], [2, 2], [3, 3], [1, 1]])
    both = table.scores(r, np.array([[1, 4], [1, 4], [4, 1], [0, 5]]))
    assert (both[:3, 0] == both[:3, 1]).all()
    m = table.matrix([0, 3, 1], [1, 4, 0])
    assert m[0, 0] == m[0, 1] == m[1, 0] == m[1, 1]
    assert (m[0] == m[1]).all()
    # the element-wise scores of duplicate inputs are equal across rows of one call too
    col = table.scores(np.array([0, 3, 2]), np.array([1, 4, 1]))
    assert col[0] == col[1]


class _CountingPixels(_Counting):
    def __init__(self, scorer) -> None:
        super().__init__(scorer)
        self.pixel_rows = 0

    def encode_pixels(self, pixels):
        self.pixel_rows += len(pixels)
        return self._scorer.encode_pixels(pixels)


def test_identical_pixels_are_one_encoding(tiny, tmp_path: Path) -> None:
    # Two files, one picture: a solid square at two sizes preprocesses to the same pixels.
    Image.new("RGB", (40, 40), (90, 30, 160)).save(tmp_path / "small.png")
    Image.new("RGB", (80, 80), (90, 30, 160)).save(tmp_path / "large.png")
    Image.new("RGB", (40, 40), (10, 200, 60)).save(tmp_path / "other.png")
    photos = [tmp_path / n for n in ("small.png", "other.png", "large.png")]
    plan = ScoringPlan()
    regions = [plan.add_region(Region(photo=str(p))) for p in photos]
    t = plan.add_text("a purple square")
    counting = _CountingPixels(tiny)
    table = score_plan(counting, plan, batch_size=1, cache=None, progress=False, num_workers=0)
    assert counting.pixel_rows == 2  # batches of one: the large square was never encoded
    emb = table.image_embeddings
    assert emb is not None and np.array_equal(emb[regions[0]], emb[regions[2]])
    s = table.scores(np.array([regions[0], regions[2]]), np.array([t, t]))
    assert s[0] == s[1]
