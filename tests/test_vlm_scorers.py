"""VLM pair scorers (vqascore:, captionlik:, itm:) on tiny random models built and saved locally.

Every model is loaded only through its spec string. Each scorer must give a pair the same score
alone and inside a batch of mixed-length pairs, and the same score as the model's own forward
pass written out here by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import tiny_vlms
import torch
from pictures import noise_image

from densecap_eval.core.errors import ModelLoadError, TextTooLongError
from densecap_eval.scorers import vlm, vlm_itm

LOADERS = {
    "vqascore": vlm.load_vqascore,
    "captionlik": vlm.load_captionlik,
    "itm": vlm_itm.load_itm,
}


def load(spec: str, **kwargs: Any) -> Any:
    # Through the spec string, as load_scorer will once the prefixes are registered.
    return LOADERS[spec.split(":", 1)[0]](spec, "cpu", "fp32", **kwargs)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {
        "llava": tiny_vlms.build_llava(root / "llava"),
        "qwen2vl": tiny_vlms.build_qwen2vl(root / "qwen2vl"),
        "blip": tiny_vlms.build_blip_itm(root / "blip"),
        "blip2": tiny_vlms.build_blip2_itm(root / "blip2"),
        "blip2q": tiny_vlms.build_blip2_itm(root / "blip2q", query_tokens_in_text=True),
        "textonly": tiny_vlms.build_not_vlm(root / "textonly"),
    }


_SCORERS: dict[str, Any] = {}


@pytest.fixture
def scorer_for(models: dict[str, Path]) -> Any:
    def get(prefix: str, family: str, query: str = "") -> Any:
        spec = f"{prefix}:{models[family]}{query}"
        if spec not in _SCORERS:
            _SCORERS[spec] = load(spec)
        return _SCORERS[spec]

    return get


IMAGES = [noise_image(0), noise_image(1, (24, 48)), noise_image(2, (32, 32))]
TEXTS = [
    "a red cat",
    "two big dogs on the left of a tree. There are people near the house",
    "sky",
    "a man and a woman with a blue car on the street",
]
CASES = [
    ("vqascore", "llava", ""),
    ("vqascore", "qwen2vl", ""),
    ("captionlik", "llava", ""),
    ("captionlik", "qwen2vl", "?reduce=sum"),
    ("itm", "blip", ""),
    ("itm", "blip2", ""),
    ("itm", "blip2q", ""),
]


@pytest.mark.parametrize(("prefix", "family", "query"), CASES)
def test_pair_score_same_alone_and_in_a_mixed_batch(
    scorer_for: Any, prefix: str, family: str, query: str
) -> None:
    scorer = scorer_for(prefix, family, query)
    images = [IMAGES[i % 3] for i in range(8)]
    texts = [TEXTS[(i * 3) % 4] for i in range(8)]
    batched = scorer.score_pairs(images, texts)
    alone = torch.stack(
        [scorer.score_pairs([im], [t])[0] for im, t in zip(images, texts, strict=True)]
    )
    assert batched.dtype == torch.float32 and batched.shape == (8,)
    assert float((batched - alone).abs().max()) <= 1e-4
    # The scores really differ between pairs, so the comparison above can catch a mix-up.
    assert float(batched.max() - batched.min()) > 1e-3


@pytest.mark.parametrize(("prefix", "family", "query"), CASES)
def test_score_matrix_is_every_pair(scorer_for: Any, prefix: str, family: str, query: str) -> None:
    scorer = scorer_for(prefix, family, query)
    matrix = scorer.score(IMAGES[:2], TEXTS[:3])
    assert matrix.shape == (2, 3)
    pairs = scorer.score_pairs([IMAGES[1]], [TEXTS[2]])
    assert abs(float(matrix[1, 2] - pairs[0])) <= 1e-4


def test_score_pairs_is_one_forward_of_the_batch_it_is_given(
    scorer_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine sizes batches (--batch-size) and backs off; the scorer never re-batches.
    scorer = scorer_for("itm", "blip")
    calls: list[int] = []
    real = scorer._score_batch
    monkeypatch.setattr(
        scorer, "_score_batch", lambda im, tx: calls.append(len(tx)) or real(im, tx)
    )
    monkeypatch.setattr(scorer, "batch_size", 2)  # only `score` reads it
    n = 5
    scorer.score_pairs([IMAGES[i % 3] for i in range(n)], [TEXTS[i % 4] for i in range(n)])
    assert calls == [n]


def test_score_matrix_chunks_and_halves_on_out_of_memory(
    scorer_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = scorer_for("itm", "blip")
    expected = scorer.score(IMAGES, TEXTS)  # 12 pairs, one chunk at the CPU default of 32
    calls: list[int] = []
    real = scorer._score_batch

    def small_memory(images: Any, texts: Any) -> torch.Tensor:
        calls.append(len(texts))
        if len(texts) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(images, texts)

    monkeypatch.setattr(scorer, "_score_batch", small_memory)
    monkeypatch.setattr(scorer, "batch_size", 8)
    got = scorer.score(IMAGES, TEXTS)
    assert calls == [8, 4, 4, 4]  # 8 fails, then batches of 4 for all 12 pairs
    assert float((got - expected).abs().max()) <= 1e-5
    assert scorer.score(IMAGES[:0], TEXTS).shape == (0, 4)


def _chat_prompt(processor: Any, user_text: str) -> str:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]}
    ]
    return str(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


@pytest.mark.parametrize("family", ["llava", "qwen2vl"])
def test_vqascore_equals_p_yes_of_the_model(
    models: dict[str, Path], scorer_for: Any, family: str
) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(models[family])
    model = AutoModelForImageTextToText.from_pretrained(models[family]).eval()
    text, image = TEXTS[1], IMAGES[1]
    question = f'Does this figure show "{text}"? Please answer yes or no.'
    inputs = processor(
        text=[_chat_prompt(processor, question)], images=[image], return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    yes_id = processor.tokenizer.convert_tokens_to_ids("Yes")
    expected = torch.softmax(logits.double(), dim=-1)[yes_id]
    got = scorer_for("vqascore", family).score_pairs([image], [text])
    assert abs(float(got[0]) - float(expected)) <= 1e-5


@pytest.mark.parametrize("family", ["llava", "qwen2vl"])
def test_captionlik_equals_mean_and_total_token_logprob(
    models: dict[str, Path], scorer_for: Any, family: str
) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(models[family])
    model = AutoModelForImageTextToText.from_pretrained(models[family]).eval()
    caption, image = TEXTS[3], IMAGES[0]
    inputs = processor(
        text=[_chat_prompt(processor, "Describe this image.")], images=[image], return_tensors="pt"
    )
    cap = processor.tokenizer(caption, add_special_tokens=False, return_tensors="pt")["input_ids"]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], cap], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(cap)], dim=1
        )
    with torch.no_grad():
        logp = torch.log_softmax(model(**inputs).logits[0].double(), dim=-1)
    n = cap.shape[1]
    token_logp = logp[-n - 1 : -1].gather(-1, cap[0].unsqueeze(-1)).squeeze(-1)
    mean = scorer_for("captionlik", family).score_pairs([image], [caption])
    total = scorer_for("captionlik", family, "?reduce=sum").score_pairs([image], [caption])
    assert abs(float(mean[0]) - float(token_logp.mean())) <= 1e-4
    assert abs(float(total[0]) - float(token_logp.sum())) <= 1e-3


def test_itm_equals_blip_match_probability(models: dict[str, Path], scorer_for: Any) -> None:
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    processor = AutoProcessor.from_pretrained(models["blip"])
    model = BlipForImageTextRetrieval.from_pretrained(models["blip"]).eval()
    images, texts = [IMAGES[0], IMAGES[2]], [TEXTS[1], TEXTS[0]]
    expected = []
    for im, t in zip(images, texts, strict=True):
        with torch.no_grad():
            out = model(**processor(images=im, text=t, return_tensors="pt"), use_itm_head=True)
        expected.append(float(torch.softmax(out.itm_score[0].double(), dim=-1)[1]))
    got = scorer_for("itm", "blip").score_pairs(images, texts)
    assert np.allclose(got.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("family", ["blip2", "blip2q"])
def test_itm_equals_blip2_match_probability(
    models: dict[str, Path], scorer_for: Any, family: str
) -> None:
    from transformers import AutoProcessor, Blip2ForImageTextRetrieval

    processor = AutoProcessor.from_pretrained(models[family])
    model = Blip2ForImageTextRetrieval.from_pretrained(models[family]).eval()
    # blip2q: the processor prepends 4 <image> tokens, which the model's forward strips again.
    assert (model.config.image_token_index is not None) == (family == "blip2q")
    images, texts = [IMAGES[0], IMAGES[2], IMAGES[0]], [TEXTS[1], TEXTS[0], TEXTS[3]]
    expected = []
    for im, t in zip(images, texts, strict=True):
        with torch.no_grad():
            out = model(
                **processor(images=im, text=t, return_tensors="pt"),
                use_image_text_matching_head=True,
            )
        expected.append(float(torch.softmax(out.logits_per_image[0].double(), dim=-1)[1]))
    scorer = scorer_for("itm", family)
    assert scorer.config["head"] == "Blip2ForImageTextRetrieval"
    got = scorer.score_pairs(images, texts)
    assert np.allclose(got.numpy(), expected, atol=1e-5)
    # The Q-Former's 48 positions, [CLS] and [SEP] included.
    assert scorer.max_text_tokens == 48 and scorer.count_tokens(["a red cat"]) == [5]


@pytest.mark.parametrize(("prefix", "family"), [("vqascore", "llava"), ("captionlik", "qwen2vl")])
def test_each_distinct_image_is_processed_once_per_batch(
    scorer_for: Any, monkeypatch: pytest.MonkeyPatch, prefix: str, family: str
) -> None:
    # 7 pairs showing 3 distinct images (noise_image(0) is IMAGES[0] by content, a new object).
    images = [IMAGES[0], IMAGES[1], noise_image(0), IMAGES[2], IMAGES[1], IMAGES[0], IMAGES[1]]
    texts = [TEXTS[i % 4] for i in range(7)]
    scores = []
    for query in ("", "?share_prefix=0"):  # with and without a shared KV prefix
        scorer = scorer_for(prefix, family, query)
        image_processor = scorer.processor.image_processor
        preprocess = image_processor.preprocess
        seen: list[int] = []

        def counting(
            images: Any, *args: Any, seen: list[int] = seen, preprocess: Any = preprocess, **kw: Any
        ) -> Any:
            flat = [i for x in images for i in (x if isinstance(x, list) else [x])]
            seen.append(len(flat))
            return preprocess(images, *args, **kw)

        monkeypatch.setattr(image_processor, "preprocess", counting)
        scores.append(scorer.score_pairs(images, texts))
        assert sorted(seen) == [1, 1, 1]  # each distinct image alone, once
        if query:
            # Without the stand-in the processor sees one image per pair: the same scores.
            seen.clear()
            monkeypatch.setattr(scorer.images, "enabled", False)
            slow = scorer.score_pairs(images, texts)
            assert seen == [7]
            assert float((scores[-1] - slow).abs().max()) <= 1e-6
    assert float((scores[0] - scores[1]).abs().max()) <= 1e-5


def test_vqascore_records_template_and_answer(models: dict[str, Path], scorer_for: Any) -> None:
    default = scorer_for("vqascore", "llava")
    template = quote("Is this {text}? Answer yes or no.")  # options come in through the spec only
    custom = load(f"vqascore:{models['llava']}?template={template}")
    assert default.config["template"] == vlm.DEFAULT_TEMPLATE
    assert default.config["answer"] == "Yes"
    assert custom.config["template"] == "Is this {text}? Answer yes or no."
    assert custom.fingerprint != default.fingerprint
    assert custom.prompt("a cat").startswith("USER: <image>\nIs this a cat? Answer yes or no.")
    # The template changes the question, so the score.
    a = default.score_pairs([IMAGES[0]], [TEXTS[0]])
    b = custom.score_pairs([IMAGES[0]], [TEXTS[0]])
    assert float((a - b).abs()[0]) > 0


def test_token_budget_is_context_minus_prompt(models: dict[str, Path], scorer_for: Any) -> None:
    scorer = scorer_for("vqascore", "llava")
    # 128 positions - (prompt with an empty text: 16 image tokens + template words) - 1 answer.
    prompt_tokens = len(scorer.tokenizer(scorer.prompt(""), add_special_tokens=False)["input_ids"])
    assert scorer.max_text_tokens == 128 - (prompt_tokens - 1 + 16) - 1
    assert scorer.count_tokens(["a red cat", ""]) == [3, 0]
    itm = scorer_for("itm", "blip")
    assert itm.max_text_tokens == 64
    assert itm.count_tokens(["a red cat"]) == [5]  # [CLS] a red cat [SEP]


def test_text_policies(scorer_for: Any) -> None:
    scorer = scorer_for("itm", "blip")  # 64-token limit, 2 of them [CLS]/[SEP]
    long_text = " ".join(["cat"] * 80)
    short = "a red cat"
    assert scorer.text_cut([short, long_text], policy="truncate") == [False, True]
    cut = scorer.score_pairs([IMAGES[0]], [long_text], policy="truncate")
    kept = scorer.score_pairs([IMAGES[0]], [" ".join(["cat"] * 62)])
    assert abs(float(cut[0] - kept[0])) <= 1e-5
    with pytest.raises(TextTooLongError, match="82 tokens, over the limit of 64"):
        scorer.score_pairs([IMAGES[0]], [long_text], policy="error")
    with pytest.raises(TextTooLongError):
        scorer.text_cut([long_text], policy="error")
    # chunk-mean: sentence-aligned chunks within the limit, the pair's score the chunks' mean.
    first = " ".join(["dog"] * 40) + "."
    second = " ".join(["tree"] * 30) + "."
    both = f"{first} {second}"
    assert scorer.text_cut([both], policy="chunk-mean") == [False]
    got = scorer.score_pairs([IMAGES[1]], [both], policy="chunk-mean")
    parts = scorer.score_pairs([IMAGES[1], IMAGES[1]], [first, second])
    assert abs(float(got[0]) - float(parts.mean())) <= 1e-5


def test_vlm_truncation_keeps_a_token_prefix(scorer_for: Any) -> None:
    scorer = scorer_for("vqascore", "qwen2vl")
    limit = scorer.max_text_tokens
    long_text = " ".join(["cat", "dog"] * limit)
    assert scorer.text_cut([long_text]) == [True]
    prefix = " ".join(["cat", "dog"] * limit).split()[:limit]
    a = scorer.score_pairs([IMAGES[2]], [long_text])
    b = scorer.score_pairs([IMAGES[2]], [" ".join(prefix)])
    assert abs(float(a[0] - b[0])) <= 1e-6


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("vqascore:{textonly}", "not an image-text-to-text model"),
        ("captionlik:{textonly}", "not an image-text-to-text model"),
        ("vqascore:{llava}?template=Is%20this%20a%20cat%3F", "no '{text}' placeholder"),
        ("vqascore:{llava}?answer=Zebra", "no token for the answer 'Zebra'"),
        ("vqascore:{llava}?colour=red", "unknown option"),
        ("captionlik:{llava}?reduce=max", "reduce must be 'mean' or 'sum'"),
        ("vqascore:{missing}", "does not exist"),
        ("itm:{llava}", "has no image-text matching head"),
        ("itm:{missing}", "does not exist"),
    ],
)
def test_bad_input_is_a_clear_model_load_error(
    models: dict[str, Path], tmp_path: Path, spec: str, message: str
) -> None:
    paths = {k: str(v) for k, v in models.items()} | {"missing": str(tmp_path / "nope")}
    with pytest.raises(ModelLoadError, match=message.replace("{", r"\{").replace("?", r"\?")):
        load(spec.format(**paths))


def test_unique_images_are_found_by_content() -> None:
    from densecap_eval.scorers.vlm_common import unique_images

    a, a_copy, b = noise_image(5), noise_image(5), noise_image(6)
    uniq, inverse = unique_images([a, b, a_copy, a, b])
    assert len(uniq) == 2 and inverse == [0, 1, 0, 0, 1]


# The DCI tasks run end to end with each VLM scorer through `densecap_eval.evaluate` (all four
# subtests, stored scores checked against `score_pairs`) in tests/test_vlm_tasks.py.


# -- the first stage's top-k candidates for re-ranking (no model) -----------------------------

FIRST = np.array(
    [
        [0.9, 0.8, 0.1, 0.7],  # image 0: first stage ranks texts 0, 1, 3, 2
        [0.2, 0.3, 0.9, 0.3],  # image 1: 2, then a tie 1/3 (lower index first), 0
        [0.5, 0.6, 0.7, 0.8],  # image 2: 3, 2, 1, 0
    ]
)


@pytest.mark.parametrize("chunk", [1, 2, 1024])
def test_topk_candidates_both_directions(chunk: int) -> None:
    from densecap_eval.tasks.rerank import topk_candidates

    # image -> text: best first, ties to the lower gallery index.
    assert topk_candidates(FIRST, 2, chunk=chunk).tolist() == [[0, 1], [2, 1], [3, 2]]
    # text -> image on the transpose: text 0 has images 0 (0.9), 2 (0.5).
    assert topk_candidates(FIRST.T, 2, chunk=chunk).tolist() == [[0, 2], [0, 2], [1, 2], [2, 0]]
    # k past the gallery size is the whole gallery.
    assert topk_candidates(FIRST, 9, chunk=chunk).tolist() == [
        [0, 1, 3, 2],
        [2, 1, 3, 0],
        [3, 2, 1, 0],
    ]
