"""The bundled tiny CLIP (`builtin:tiny`) as a fixture that behaves like a real model.

Random weights score every text alike; these tests need a model that has learned something:
negatives of each kind score below their positives, subcrop-caption matching beats chance, and
truncating a caption whose distinguishing words come after token 77 makes positive and negative
indistinguishable while `chunk-mean` recovers the difference.

The data is a small synthetic set generated with a seed that training never used.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

HELDOUT_SEED = 31_337  # not the training seed (0) nor the card's held-out seed (9001)
HELDOUT_IMAGES = 16
SIX_METRICS = ("All SCM", "All Neg", "Pick5 SCM", "Pick5 Neg", "Base Neg", "Hardest Neg")

# Neutral sentences (no colour, object or layout word) that fill the first 77 tokens.
FILLER = (
    "This picture was made by a computer program for a test. "
    "It is a flat drawing with clean edges and even light. "
    "There are no people, words or logos in it. "
    "Nothing in it is blurred on purpose. "
    "The drawing was saved as a compressed photo file. "
    "It is one of many drawings made the same way. "
    "Please look at it closely. "
    "It was checked by hand before it was kept."
)


@pytest.fixture(scope="module")
def scorer():
    from densecap_eval import load_scorer

    return load_scorer("builtin:tiny")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from densecap_eval.synth import generate_dci

    root = tmp_path_factory.mktemp("tiny-heldout")
    generate_dci(root, images=HELDOUT_IMAGES, seed=HELDOUT_SEED, split_sizes=(0, 0, HELDOUT_IMAGES))
    return root


@pytest.fixture(scope="module")
def entries(heldout: Path, scorer):
    """(image embedding, first summary, negatives by kind) for every entry of the held-out set."""
    from fake_scorers import load_region

    from densecap_eval import load_dataset
    from densecap_eval.datasets.dci.entries import iter_entries

    dataset = load_dataset("dci", root=str(heldout))
    rows = list(iter_entries(dataset, "test", include_subcrops=True, use_summaries=True))
    assert len(rows) >= 3 * HELDOUT_IMAGES  # photos plus their large subcrops
    images = scorer.encode_images([load_region(e.region) for e in rows])
    return [(images[i], e.caption, dict(e.negatives)) for i, e in enumerate(rows)]


def _accuracy(scorer, images, positives, negatives, *, policy: str) -> tuple[float, int]:
    """Share of (image, positive, negative) triples with positive > negative; and the ties."""
    import torch

    img = torch.stack(images)
    pos = scorer.encode_texts(positives, policy=policy).embeddings
    neg = scorer.encode_texts(negatives, policy=policy).embeddings
    s_pos = (img * pos).sum(dim=1)
    s_neg = (img * neg).sum(dim=1)
    return float((s_pos > s_neg).float().mean()), int((s_pos == s_neg).sum())


@pytest.mark.parametrize(
    ("kind", "at_least"),
    [("swaps", 0.8), ("layout", 0.65), ("basic", 0.8)],  # chance is 0.5
)
def test_negatives_of_each_kind_score_below_their_positives(scorer, entries, kind, at_least):
    rows = [(img, cap, negs[kind][0]) for img, cap, negs in entries if negs.get(kind)]
    assert len(rows) >= 20
    acc, _ = _accuracy(
        scorer, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], policy="truncate"
    )
    assert acc >= at_least, f"{kind}: {acc:.3f}"


def test_dci_suite_through_evaluate_beats_chance(heldout):
    """The real evaluate path: Neg far above 0.5, SCM far above its groups' chance level."""
    from densecap_eval import evaluate

    result = evaluate(
        "builtin:tiny", "dci", data_root=str(heldout), split="test", n_boot=0, use_cache=False
    )
    for task in ("dci/all_swaps", "dci/base_swaps", "dci/all_hardest"):
        assert result.metrics[task]["neg"] >= 0.75, (task, result.metrics[task])
    swaps = result.metrics["dci/all_swaps"]
    n = int(swaps["n"])
    # Groups of 8 in order, the last one shorter: chance is the mean over entries of 1/group size.
    chance = len(range(0, n, 8)) / n
    assert n >= 3 * HELDOUT_IMAGES
    assert swaps["scm"] >= chance + 0.3, (swaps["scm"], chance)


def test_truncation_hides_late_words_and_chunk_mean_recovers_them(scorer, entries):
    """Positive and negative differ only after token 77: equal under truncate, told apart by chunk-mean."""
    rows = [(img, cap, negs["swaps"][0]) for img, cap, negs in entries if negs.get("swaps")]
    images = [r[0] for r in rows]
    positives = [f"{FILLER} {r[1]}" for r in rows]
    negatives = [f"{FILLER} {r[2]}" for r in rows]
    assert min(scorer.count_tokens([FILLER])) > scorer.max_text_tokens

    cut = scorer.encode_texts(positives, policy="truncate")
    assert all(cut.cut) and min(cut.n_tokens) > scorer.max_text_tokens
    acc_cut, ties = _accuracy(scorer, images, positives, negatives, policy="truncate")
    assert (acc_cut, ties) == (0.0, len(rows))  # identical kept tokens: every pair ties

    acc_chunks, _ = _accuracy(scorer, images, positives, negatives, policy="chunk-mean")
    acc_short, _ = _accuracy(
        scorer, images, [r[1] for r in rows], [r[2] for r in rows], policy="truncate"
    )
    assert acc_chunks >= 0.7, acc_chunks
    assert acc_chunks <= acc_short + 0.1  # recovers part (or most) of the short-caption accuracy


def test_model_card_reports_the_six_dci_metrics():
    from densecap_eval.core.paths import bundled_models_dir

    card = (bundled_models_dir() / "MODEL_CARD.md").read_text(encoding="utf-8")
    for name in SIX_METRICS:
        match = re.search(rf"\|\s*{re.escape(name)}\s*\|\s*([0-9.]+)\s*\|", card)
        assert match is not None, f"{name} missing from the model card"
        assert 0.0 <= float(match.group(1)) <= 1.0
