"""Window buckets of first-difference positions and the CLIP BPE length reference.

The window rule is checked against open_clip's own truncating tokenizer: a difference is
``beyond`` exactly when the two truncated token tensors are equal.
"""

from __future__ import annotations

import pytest

from densecap_eval.metrics import length


@pytest.mark.parametrize(
    ("limit", "end_tokens", "policy", "position", "bucket"),
    [
        (77, 1, "truncate", 0, "inside"),
        (77, 1, "truncate", 70, "inside"),
        (77, 1, "truncate", 71, "edge"),
        (77, 1, "truncate", 75, "edge"),  # CLIP's last visible text token
        (77, 1, "truncate", 76, "beyond"),  # the EOT slot: hidden (the old "60-76" held it)
        (77, 1, "truncate", 500, "beyond"),
        (77, 1, "chunk-mean", 76, "later_chunk"),
        (77, 1, "error", 76, "beyond"),
        (77, 0, "truncate", 76, "edge"),  # a VLM's prompt text: no end token in the window
        (77, 0, "truncate", 77, "beyond"),
        (64, 1, "truncate", 57, "inside"),  # SigLIP: 64 tokens, EOS last
        (64, 1, "truncate", 58, "edge"),
        (64, 1, "truncate", 63, "beyond"),
    ],
)
def test_window_buckets(
    limit: int, end_tokens: int, policy: str, position: int, bucket: str
) -> None:
    assert length.PositionWindow(limit, end_tokens, policy).bucket(position) == bucket


@pytest.mark.parametrize(
    ("window", "edges"),
    [
        (length.PositionWindow(77), {"inside": [0, 70], "edge": [71, 75], "beyond": [76, None]}),
        (
            length.PositionWindow(77, 0, "chunk-mean"),
            {"inside": [0, 71], "edge": [72, 76], "later_chunk": [77, None]},
        ),
        (length.PositionWindow(12), {"inside": [0, 5], "edge": [6, 10], "beyond": [11, None]}),
        (length.PositionWindow(4), {"inside": None, "edge": [0, 2], "beyond": [3, None]}),
    ],
)
def test_window_edges(window: length.PositionWindow, edges: dict) -> None:
    assert window.edges() == edges
    assert list(edges) == list(window.labels)
    for label, span in edges.items():  # every edge position lands in its own bucket
        if span is not None:
            assert window.bucket(span[0]) == label
            if span[1] is not None:
                assert window.bucket(span[1]) == label


@pytest.mark.parametrize("limit", [6, 9, 12])
def test_beyond_is_exactly_what_open_clip_truncation_hides(limit: int) -> None:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    pairs = []
    for k in range(len(words) + 1):  # swap word k (k = len: the negative is one word longer)
        neg = [*words[:k], "dog", *words[k + 1 :]] if k < len(words) else [*words, "dog"]
        pairs.append((" ".join(words), " ".join(neg)))

    def ids(texts: list[str]) -> list[list[int]]:
        return [[tok.sot_token_id, *tok.encode(t), tok.eot_token_id] for t in texts]

    fn = length.DiffPositions(lambda p: length.diff_positions_by_ids(p, ids), "token_ids",
                              lambda: length.trailing_special_ids(ids))  # fmt: skip
    assert fn.end_tokens == 1
    window = length.PositionWindow(limit, fn.end_tokens)
    positions = fn(pairs)
    assert positions == list(range(1, len(words) + 2))  # one token per word, after the start
    for (pos, neg), p in zip(pairs, positions, strict=True):
        cut = open_clip.tokenize([pos, neg], context_length=limit)
        hidden = bool((cut[0] == cut[1]).all())
        assert hidden == (window.bucket(p) == "beyond"), (limit, p)


def test_end_tokens_of_each_method() -> None:
    class Clip:  # counts start + end tokens, like CLIP and the fakes
        def count_tokens(self, texts: list[str]) -> list[int]:
            return [len(t.split()) + 2 for t in texts]

    class Vlm:  # a VLM's prompt text: no special tokens of its own
        def count_tokens(self, texts: list[str]) -> list[int]:
            return [len(t.split()) for t in texts]

    class Siglip:  # ids end with EOS only
        def tokenize_ids(self, texts: list[str]) -> list[list[int]]:
            return [[*(hash(w) % 1000 for w in t.split()), 1] for t in texts]

    class NoSpecial:
        def tokenize_ids(self, texts: list[str]) -> list[list[int]]:
            return [[hash(w) % 1000 for w in t.split()] for t in texts]

    for scorer, method, end in [
        (Clip(), "word_prefix", 1),
        (Vlm(), "word_prefix", 0),
        (Siglip(), "token_ids", 1),
        (NoSpecial(), "token_ids", 0),
    ]:
        fn, got_method = length.diff_position_fn(scorer)
        assert (got_method, fn.method, fn.end_tokens) == (method, method, end)
    # a VLM's first difference is the index among its text tokens
    fn, _ = length.diff_position_fn(Vlm())
    assert fn([("a b c", "a x c"), ("a b", "a b")]) == [1, None]


def test_position_labels() -> None:
    window = length.PositionWindow(12)
    labels, order = length.position_labels([1, 7, 11, None], window)
    assert labels == ["inside", "edge", "beyond", "identical"]
    assert order == ["inside", "edge", "beyond", "identical"]
    labels, order = length.position_labels([1, 7], window)
    assert order == ["inside", "edge", "beyond"]  # identical only when some pair is
    labels, order = length.position_labels([1, None], None)  # no limit given
    assert labels == ["unknown", "identical"] and order == ["unknown", "identical"]


def test_reference_counts_are_clip_bpe_and_memoised() -> None:
    from densecap_eval.metrics.tokens import clip_token_counts

    texts = ["a dog", "A photo of a red car parked next to a tree, at dusk.", "a dog"]
    assert length.reference_token_counts(texts) == clip_token_counts(texts) == [4, 17, 4]
    before = length._reference_count.cache_info()
    length.reference_token_counts(texts)
    after = length._reference_count.cache_info()
    assert after.hits - before.hits == 3 and after.misses == before.misses
    assert length.length_reference() == {
        "tokenizer": "openai-clip-bpe",
        "edges": [77, 154, 248],
        "buckets": ["<=77", "78-154", "155-248", ">248"],
    }
    assert [length.length_bucket(n) for n in (77, 78, 248, 249)] == [
        "<=77",
        "78-154",
        "155-248",
        ">248",
    ]
