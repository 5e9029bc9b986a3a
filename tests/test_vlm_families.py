"""`vqascore:` on a tiny random model of every decoder-only VLM family, against P(Yes) by hand.

Each family's model is built from its own transformers config class and processor
(tests/tiny_vlm_families.py). The reference here is the processor's own
``apply_chat_template(..., tokenize=True)`` path (PaliGemma: its processor on the text), one
forward pass, the softmax at the last position, read at the token covering the answer's first
character in the assistant turn rendered with the answer. The scorer must equal it to 1e-5 with
prefix sharing on and off, one pair at a time and seven pairs in a batch, with the tokenizer
padding left and right.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import tiny_vlm_families as tiny
import torch
from pictures import noise_image
from PIL import Image

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers import vlm, vlm_common, vlm_families

FAMILIES = list(tiny.FAMILIES)
SHARED = [f for f in FAMILIES if f != "paligemma"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads cost more than they give on shared CPUs
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm_families")
    return {name: build(root / name) for name, build in tiny.FAMILIES.items()}


_SCORERS: dict[str, Any] = {}


def scorer(folders: dict[str, Path], family: str, query: str = "") -> Any:
    spec = f"vqascore:{folders[family]}{query}"
    if spec not in _SCORERS:
        _SCORERS[spec] = vlm.load_vqascore(spec, "cpu", "fp32")
    return _SCORERS[spec]


IMAGES = [noise_image(0, (40, 32)), noise_image(1, (24, 48)), noise_image(2, (32, 32))]
TEXTS = ["a red cat", "two big dogs on the left", "sky", "a man and a woman with a blue car"]
PAIRS = [(0, 0), (0, 1), (1, 2), (0, 3), (2, 0), (1, 1), (2, 3)]  # 7 pairs, 3 images


def batch() -> tuple[list[Image.Image], list[str]]:
    return [IMAGES[i] for i, _ in PAIRS], [TEXTS[t] for _, t in PAIRS]


def question(text: str) -> str:
    return vlm.DEFAULT_TEMPLATE.replace("{text}", text)


def messages(image: Any, text: str, reply: str | None = None) -> list[dict[str, Any]]:
    user = {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text"}]}
    user["content"][1]["text"] = question(text)  # type: ignore[index]
    if reply is None:
        return [user]
    return [user, {"role": "assistant", "content": [{"type": "text", "text": reply}]}]


def covering_token(tokenizer: Any, rendered: str, at: int) -> int:
    enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    hits = [
        t for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True) if a <= at < b
    ]
    return int(hits[0])


def reference_answer_token(processor: Any, answer: str = "Yes") -> int:
    """The token the model emits first for ``answer``, found from the rendered reply."""
    tok = processor.tokenizer
    if not processor.chat_template:  # PaliGemma: the prompt ends with "\n"
        rendered = question("x") + "\n" + answer
        return covering_token(tok, rendered, len(rendered) - len(answer))
    prompt = processor.apply_chat_template(messages(None, "x"), add_generation_prompt=True)
    replied = processor.apply_chat_template(messages(None, "x", answer))
    common = next(
        (i for i, (a, b) in enumerate(zip(prompt, replied, strict=False)) if a != b),
        min(len(prompt), len(replied)),
    )
    return covering_token(tok, replied, replied.index(answer, common))


_MODELS: dict[str, Any] = {}


def processor_and_model(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    key = str(folder)
    if key not in _MODELS:
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
        _MODELS[key] = (AutoProcessor.from_pretrained(folder), model)
    return _MODELS[key]  # type: ignore[no-any-return]


def direct_p(folder: Path, image: Image.Image, text: str, answer_id: int | None = None) -> float:
    """P(answer) by the processor's own chat-template path and one forward pass."""
    processor, model = processor_and_model(folder)
    if processor.chat_template:
        enc = processor.apply_chat_template(
            messages(image, text),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
    else:
        enc = processor(
            text=[processor.image_token + question(text)], images=[[image]], return_tensors="pt"
        )
    enc.pop("labels", None)
    with torch.no_grad():
        logits = model(**enc).logits[0, -1]
    token = reference_answer_token(processor) if answer_id is None else answer_id
    return float(logits.softmax(-1)[token])


@pytest.mark.parametrize("family", FAMILIES)
def test_p_yes_equals_the_direct_computation(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    images, texts = batch()
    reference = torch.tensor(
        [direct_p(folders[family], im, t) for im, t in zip(images, texts, strict=True)]
    )
    assert float(reference.max() - reference.min()) > 1e-4  # the pairs differ
    shared, plain = scorer(folders, family), scorer(folders, family, "?share_prefix=0")
    # the scorers are shared by the module's tests: count only this test's fallbacks
    fallbacks_before = dict(shared.config.get("share_prefix_fallbacks", {}))
    assert shared.answer_id == reference_answer_token(shared.processor)
    assert plain.config["share_prefix"] is False
    if family in SHARED:
        assert shared.config["share_prefix"] is True
    else:
        assert shared.config["share_prefix_off"] == vlm_families.PREFIX_LM
    for side in ("left", "right"):
        for s in (shared, plain):
            monkeypatch.setattr(s.tokenizer, "padding_side", side)
            got = s.score_pairs(images, texts)
            alone = torch.stack(
                [s.score_pairs([im], [t])[0] for im, t in zip(images, texts, strict=True)]
            )
            assert float((got - reference).abs().max()) <= 1e-5, (family, side, s.config)
            assert float((alone - reference).abs().max()) <= 1e-5, (family, side, s.config)
    assert shared.config.get("share_prefix_fallbacks", {}) == fallbacks_before
    assert shared.images.processed > 0


def _rendered_inputs(folder: Path, image: Image.Image, text: str) -> Any:
    """The old path: the template rendered to text, then the processor with special tokens."""
    processor, _ = processor_and_model(folder)
    rendered = processor.apply_chat_template(messages(None, text), add_generation_prompt=True)
    enc = processor(text=[rendered], images=[[image]], return_tensors="pt")
    enc.pop("labels", None)
    return enc


@pytest.mark.parametrize("family", ["gemma3", "idefics3", "mllama", "mistral3"])
def test_a_template_starting_with_bos_gets_one_bos(folders: dict[str, Path], family: str) -> None:
    processor, model = processor_and_model(folders[family])
    bos = processor.tokenizer.bos_token_id
    image, text = IMAGES[0], TEXTS[0]
    old = _rendered_inputs(folders[family], image, text)
    assert old["input_ids"][0, :2].tolist() == [bos, bos]  # the rule is needed
    with torch.no_grad():
        p_old = float(model(**old).logits[0, -1].softmax(-1)[reference_answer_token(processor)])
    p = direct_p(folders[family], image, text)
    assert abs(p_old - p) > 1e-6
    s = scorer(folders, family)
    enc = s._process([s.prompt(text)], [image])
    assert enc["input_ids"][0, :2].tolist()[0] == bos and enc["input_ids"][0, 1] != bos
    assert abs(float(s.score_pairs([image], [text])[0]) - p) <= 1e-5


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_the_answer_after_assistant_colon_is_space_yes(
    folders: dict[str, Path], family: str
) -> None:
    s = scorer(folders, family)
    tok = s.tokenizer
    old_id = tok("Yes", add_special_tokens=False)["input_ids"][0]  # "Yes" tokenized alone
    assert tok.convert_ids_to_tokens(s.answer_id) == "ĠYes" != tok.convert_ids_to_tokens(old_id)
    image, text = IMAGES[1], TEXTS[2]
    p_old = direct_p(folders[family], image, text, answer_id=old_id)
    p = direct_p(folders[family], image, text)
    got = float(s.score_pairs([image], [text])[0])
    assert abs(got - p) <= 1e-5 and abs(p_old - p) > 1e-6


def test_llava_onevision_reply_header_differs_from_the_generation_prompt(
    folders: dict[str, Path],
) -> None:
    s = scorer(folders, "llava_onevision")
    question_ = s._user_text("x")
    replied = s.processor.apply_chat_template(s._messages(question_, "Yes"))
    assert "assistant \nYes" in replied and s.prompt("x").endswith("assistant\n")
    assert s.tokenizer.convert_ids_to_tokens(s.answer_id) == "Yes"


def test_unknown_model_types_share_no_prefix() -> None:
    assert vlm_families.rule_for("llava").share is None
    assert "not known to attend causally" in str(vlm_families.rule_for("fancy_vlm").share)


def test_a_missing_processor_package_is_one_line(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers.models.smolvlm import processing_smolvlm

    monkeypatch.setattr(processing_smolvlm, "num2words", None)
    with pytest.raises(ModelLoadError) as info:
        vlm.load_vqascore(f"vqascore:{folders['smolvlm']}", "cpu", "fp32")
    message = str(info.value)
    assert "\n" not in message and "'num2words'" in message and "pip install num2words" in message


def test_transformers_floor_is_checked_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    text = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    floor = re.search(r'"transformers>=([0-9.]+)"', text)
    assert floor is not None and floor.group(1) == vlm_common.MIN_TRANSFORMERS
    assert int(transformers.__version__.split(".")[0]) >= int(floor.group(1).split(".")[0])
    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    with pytest.raises(ModelLoadError, match=r"need transformers>=5\.0, found 4\.57\.1") as info:
        vlm.load_vqascore("vqascore:/nowhere", "cpu", "fp32")
    assert "\n" not in str(info.value)


# -- ?parity=t2v_metrics on LLaVA-1.5 ---------------------------------------------------------

T2V_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)


def t2v_vqascore(folder: Path, image: Image.Image, text: str) -> float:
    """t2v_metrics' LLaVA-1.5 VQAScore, step by step from its published recipe."""
    processor, model = processor_and_model(folder)
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    q = f'{T2V_SYSTEM} USER: <image>\nDoes this figure show "{text}"? Please answer yes or no.'
    q += " ASSISTANT: "
    full = q + "Yes</s>"

    def tokenizer_image_token(prompt: str) -> list[int]:
        chunks = [tok(c)["input_ids"] for c in prompt.split("<image>")]
        offset = 1 if chunks[0] and chunks[0][0] == tok.bos_token_id else 0
        ids = [chunks[0][0]] if offset else []
        separated = [x for chunk in chunks for x in (chunk, [image_id] * (offset + 1))][:-1]
        for x in separated:
            ids.extend(x[offset:])
        return ids

    ids = tokenizer_image_token(full)
    start = len(tokenizer_image_token(q)) - (1 if q.endswith(" ") else 0)
    n_image = 16  # (32 / 8) ** 2 patches, CLS dropped
    at = ids.index(image_id)
    ids = ids[:at] + [image_id] * n_image + ids[at + 1 :]
    start += n_image - 1
    mean = tuple(int(x * 255) for x in processor.image_processor.image_mean)
    w, h = image.size
    square = Image.new(image.mode, (max(w, h), max(w, h)), mean)
    square.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    pixels = processor.image_processor([square], return_tensors="pt")["pixel_values"]
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=pixels).logits[0]
    labels = input_ids[0, start:]
    ce = torch.nn.functional.cross_entropy(logits[start - 1 : -1], labels)
    assert tok.convert_ids_to_tokens(labels.tolist())[-1] == "</s>"
    return float((-ce).exp())


def test_parity_t2v_metrics_equals_t2v_metrics_formula(folders: dict[str, Path]) -> None:
    images, texts = batch()
    reference = torch.tensor(
        [t2v_vqascore(folders["llava15"], im, t) for im, t in zip(images, texts, strict=True)]
    )
    default = scorer(folders, "llava15").score_pairs(images, texts)
    for query in ("?parity=t2v_metrics", "?parity=t2v_metrics&share_prefix=0"):
        s = scorer(folders, "llava15", query)
        assert s.config["parity"] == "t2v_metrics"
        assert s.config["score"].startswith("exp(-mean CE)")
        got = s.score_pairs(images, texts)
        alone = torch.stack(
            [s.score_pairs([im], [t])[0] for im, t in zip(images, texts, strict=True)]
        )
        assert float((got - reference).abs().max()) <= 1e-5
        assert float((alone - reference).abs().max()) <= 1e-5
    assert scorer(folders, "llava15").config["score"] == "P(first answer token)"
    assert float((default - reference).abs().max()) > 1e-4  # a different quantity
    assert (
        scorer(folders, "llava15", "?parity=t2v_metrics").fingerprint
        != scorer(folders, "llava15").fingerprint
    )


def test_parity_is_checked(folders: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="unknown parity 'lmms'"):
        vlm.load_vqascore(f"vqascore:{folders['llava15']}?parity=lmms", "cpu", "fp32")
    with pytest.raises(ModelLoadError, match="defined for model types llava, not 'gemma3'"):
        vlm.load_vqascore(f"vqascore:{folders['gemma3']}?parity=t2v_metrics", "cpu", "fp32")


def test_sequences_past_the_sliding_window_do_not_share_a_prefix(
    folders: dict[str, Path],
) -> None:
    # The tiny Gemma 3 has a 64-token sliding window: long captions reach past it, where padding
    # between a shared prefix and its continuation would change what the window holds.
    s = scorer(folders, "gemma3")
    long = " ".join(["two big dogs on the left of a red house"] * 4)
    images = [IMAGES[0], IMAGES[0], IMAGES[1], IMAGES[1]]
    texts = [long, TEXTS[0], long, TEXTS[2]]
    before = dict(s.config.get("share_prefix_fallbacks", {}))
    processed = s.images.processed
    got = s.score_pairs(images, texts)
    assert s.images.processed - processed == 2  # prefixes, then the fallback: each image once
    after = s.config["share_prefix_fallbacks"]
    reason = "longer than the sliding attention window"
    assert after[reason] - before.get(reason, 0) == 4
    reference = torch.tensor(
        [direct_p(folders["gemma3"], im, t) for im, t in zip(images, texts, strict=True)]
    )
    assert float((got - reference).abs().max()) <= 1e-5
