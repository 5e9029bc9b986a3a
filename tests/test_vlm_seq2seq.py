"""Encoder-decoder VLM scorers on tiny random models saved in their real layouts.

CLIP-FlanT5: a tiny release folder (tests/tiny_seq2seq_vlms.py) loaded through
``load_scorer("vqascore:DIR")``; references are written here with plain transformers calls and
sentencepiece, from the facts of t2v_metrics' CLIP-FlanT5 (its system message, prompt layout,
per-chunk ``</s>``, square padding with the CLIP mean colour, hidden state -2 without CLS,
answer "Yes" + ``</s>``, exp(-mean cross-entropy), vocabulary cut to the tokenizer's length).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiny_seq2seq_vlms
import torch
import torch.nn.functional as F
from pictures import noise_image
from PIL import Image
from tiny_models import one_thread

from densecap_eval.core.errors import ModelLoadError
from densecap_eval.scorers import load_scorer

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
QUESTION = 'Does this figure show "{}"? Please answer yes or no.'


IMAGES = [noise_image(0, (40, 32)), noise_image(1, (24, 48)), noise_image(2, (32, 32))]
TEXTS = [
    "a red cat",
    "two big dogs on the left of a tree. There are people near the house",
    "sky",
    "a man and a woman with a blue car on the street",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tiny_seq2seq_vlms.ClipT5Release:
    return tiny_seq2seq_vlms.build_clip_t5(tmp_path_factory.mktemp("clip_t5"))


_LOADED: dict[tuple[str, str | None], Any] = {}


def scorer(spec: str, precision: str | None = "fp32") -> Any:
    if (spec, precision) not in _LOADED:
        _LOADED[spec, precision] = load_scorer(spec, "cpu", precision)
    return _LOADED[spec, precision]


class Reference:
    """t2v_metrics' CLIP-FlanT5 computation, pair by pair, with plain transformers modules."""

    def __init__(
        self, rel: tiny_seq2seq_vlms.ClipT5Release, *, vision: Any = None, dtype: Any = None
    ) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(rel.spiece))
        self.n_tok = self.sp.get_piece_size() + tiny_seq2seq_vlms.N_EXTRA
        self.dtype = dtype or torch.float32
        # Copies in another precision: the release's modules stay fp32 for other tests.
        cast = (
            (lambda m: m)
            if self.dtype == torch.float32
            else (lambda m: copy.deepcopy(m).to(self.dtype))
        )
        self.t5 = cast(rel.t5)
        self.vision = cast(vision or rel.vision)
        self.projector = cast(rel.projector)
        self.processor = rel.processor

    def ids(self, text: str) -> list[int]:
        return [*self.sp.encode(text), 1]  # FlanT5's slow tokenizer appends </s>

    def features(self, image: Image.Image) -> torch.Tensor:
        return self.batch_features([image])[0]

    def batch_features(self, images: list[Image.Image]) -> torch.Tensor:
        mean = tuple(int(x * 255) for x in self.processor.image_mean)
        squares = []
        for image in images:
            w, h = image.size
            side = max(w, h)
            square = Image.new("RGB", (side, side), mean)
            square.paste(image, ((side - w) // 2, (side - h) // 2))
            squares.append(square)
        pixels = self.processor(images=squares, return_tensors="pt")["pixel_values"]
        out = self.vision(pixel_values=pixels.to(self.dtype), output_hidden_states=True)
        return self.projector(out.hidden_states[-2][:, 1:])

    def logits(
        self, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        start = torch.zeros((labels.shape[0], 1), dtype=torch.long)
        decoder_ids = torch.cat([start, labels[:, :-1].clamp(min=0)], dim=1)
        out = self.t5(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids)
        # resize_token_embeddings(len(tokenizer)): only the tokenizer's rows take part.
        return out.logits[..., : self.n_tok].float()

    def embeds(self, image: Image.Image, question: str) -> torch.Tensor:
        shared = self.t5.get_input_embeddings()
        before = shared(torch.tensor(self.ids(SYSTEM + " USER: ")))
        after = shared(torch.tensor(self.ids("\n" + question + " ASSISTANT: ")))
        return torch.cat([before, self.features(image), after])[None]

    @torch.no_grad()
    def vqascore(self, image: Image.Image, text: str) -> float:
        x = self.embeds(image, QUESTION.format(text))
        labels = torch.tensor([self.ids("Yes")])
        logits = self.logits(x, torch.ones(x.shape[:2], dtype=torch.long), labels)
        ce = F.cross_entropy(logits[0], labels[0])  # mean over "Yes" and "</s>"
        return float(torch.exp(-ce))

    @torch.no_grad()
    def captionlik(self, image: Image.Image, caption: str) -> float:
        x = self.embeds(image, "Describe this image.")
        labels = torch.tensor([list(self.sp.encode(caption))])
        logits = self.logits(x, torch.ones(x.shape[:2], dtype=torch.long), labels)
        return float(-F.cross_entropy(logits[0], labels[0]))

    @torch.no_grad()
    def t2v_batch(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """t2v_metrics' batch: ids with -200 for <image>, right-padded with 0, features spliced
        in, the mask extended over the image, labels "Yes" + </s>, exp(-CE mean) per row."""
        shared = self.t5.get_input_embeddings()
        ids = [
            torch.tensor(
                [
                    *self.ids(SYSTEM + " USER: "),
                    -200,
                    *self.ids("\n" + QUESTION.format(t) + " ASSISTANT: "),
                ]
            )
            for t in texts
        ]
        padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=0)
        mask = padded.ne(0)
        features = self.batch_features(images)  # one tower call over every pair's image
        rows, lengths = [], []
        for row, feats in zip(padded, features, strict=True):
            at = int((row == -200).nonzero()[0, 0])
            rows.append(torch.cat([shared(row[:at]), feats, shared(row[at + 1 :])]))
            lengths.append(len(rows[-1]))
        width = max(lengths)
        x = torch.stack([F.pad(r, (0, 0, 0, width - len(r))) for r in rows])
        masks = [
            torch.cat(
                [
                    torch.ones(n - padded.shape[1], dtype=torch.bool),
                    m,
                    torch.zeros(width - n, dtype=torch.bool),
                ]
            )
            for n, m in zip(lengths, mask, strict=True)
        ]
        labels = torch.tensor([self.ids("Yes")] * len(texts))
        logits = self.logits(x, torch.stack(masks).long(), labels)
        return torch.stack(
            [torch.exp(-F.cross_entropy(lg, lb)) for lg, lb in zip(logits, labels, strict=False)]
        )


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal to 1e-5, and to 1e-4 relative (a tiny model's probabilities are small)."""
    diff = (got.double() - want.double()).abs()
    return bool(diff.max() <= 1e-5 and (diff / want.double().abs().clamp(min=1e-30)).max() <= 1e-4)


def pairs(n: int) -> tuple[list[Image.Image], list[str]]:
    return [IMAGES[i % 3] for i in range(n)], [TEXTS[(i * 3) % 4] for i in range(n)]


@pytest.mark.parametrize("n", [1, 7])
def test_clip_t5_vqascore_is_exp_mean_ce_of_yes_and_eos(
    release: tiny_seq2seq_vlms.ClipT5Release, n: int
) -> None:
    s = scorer(f"vqascore:{release.folder}")
    images, texts = pairs(n)
    got = s.score_pairs(images, texts)
    ref = Reference(release)
    want = torch.tensor([ref.vqascore(im, t) for im, t in zip(images, texts, strict=True)])
    assert got.shape == (n,) and got.dtype == torch.float32
    assert close(got, want)
    if n > 1:  # scores really differ (by 10%+), so a mix-up would show
        assert float(want.max() / want.min()) > 1.1


def test_clip_t5_parity_is_t2v_metrics_formula_in_bf16(
    release: tiny_seq2seq_vlms.ClipT5Release,
) -> None:
    images, texts = pairs(7)
    fp32 = scorer(f"vqascore:{release.folder}?parity=t2v_metrics", "fp32")
    want32 = Reference(release).t2v_batch(images, texts)
    assert close(fp32.score_pairs(images, texts), want32)
    bf16 = scorer(f"vqascore:{release.folder}?parity=t2v_metrics", None)
    assert bf16.config["precision"] == "bf16" and bf16.config["parity"] == "t2v_metrics"
    got = bf16.score_pairs(images, texts)
    want = Reference(release, dtype=torch.bfloat16).t2v_batch(images, texts)
    # bf16 kernels round differently with the batch's shape (the scorer runs the tower on the 3
    # distinct images, t2v_metrics on all 7): agreement to bf16 rounding, not to 1e-5.
    assert float(((got - want).abs() / want).max()) <= 3e-2
    assert float((got - want32).abs().max()) > 0  # bf16 really ran


@pytest.mark.parametrize("n", [1, 7])
def test_clip_t5_captionlik_is_mean_caption_logprob(
    release: tiny_seq2seq_vlms.ClipT5Release, n: int
) -> None:
    s = scorer(f"captionlik:{release.folder}")
    images, texts = pairs(n)
    got = s.score_pairs(images, texts)
    ref = Reference(release)
    want = torch.tensor([ref.captionlik(im, t) for im, t in zip(images, texts, strict=True)])
    assert float((got - want).abs().max()) <= 1e-5


@pytest.mark.parametrize(
    ("vision_level", "save_tower", "bin_weights"), [(False, True, True), (True, False, False)]
)
def test_clip_t5_key_layouts(
    tmp_path: Path, vision_level: bool, save_tower: bool, bin_weights: bool
) -> None:
    """Tower keys without ``vision_model.`` in a ``pytorch_model.bin``, or no tower in the
    checkpoint (then the one at ``mm_vision_tower``, whose weights differ, is the one that
    scores)."""
    rel = tiny_seq2seq_vlms.build_clip_t5(
        tmp_path, vision_level=vision_level, save_tower=save_tower, bin_weights=bin_weights
    )
    s = load_scorer(f"vqascore:{rel.folder}", "cpu", "fp32")
    images, texts = pairs(3)
    ref = Reference(rel, vision=None if save_tower else rel.tower_vision)
    want = torch.tensor([ref.vqascore(im, t) for im, t in zip(images, texts, strict=True)])
    assert close(s.score_pairs(images, texts), want)
    assert s.config["loaded_from"]["vision_weights"] == (
        "checkpoint" if save_tower else "mm_vision_tower"
    )


def test_clip_t5_run_card_and_options(release: tiny_seq2seq_vlms.ClipT5Release) -> None:
    s = scorer(f"vqascore:{release.folder}")
    cfg = s.config
    assert cfg["precision"] == "fp32" and cfg["parity"] == "none"
    assert cfg["share_prefix"] is False and "encoder-decoder" in cfg["share_prefix_off"]
    assert cfg["loaded_from"]["vocab_rows"] == Reference(release).n_tok
    assert s.kind == "pair" and 0 < s.max_text_tokens < 2048
    parity = scorer(f"vqascore:{release.folder}?parity=t2v_metrics", "fp32")
    assert parity.fingerprint != s.fingerprint
    with pytest.raises(ModelLoadError, match="parity=t2v_metrics fixes the template"):
        load_scorer(f"vqascore:{release.folder}?parity=t2v_metrics&template=Is%20{{text}}", "cpu")
    with pytest.raises(ModelLoadError, match="parity must be one of"):
        load_scorer(f"vqascore:{release.folder}?parity=lmms", "cpu")


def test_clip_t5_without_tokenizer_is_one_clear_error(
    release: tiny_seq2seq_vlms.ClipT5Release, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).symlink_to(release.folder / name)
    with pytest.raises(ModelLoadError, match=r"no spiece\.model .*\?tokenizer=") as err:
        load_scorer(f"vqascore:{bare}", "cpu")
    assert "\n" not in str(err.value)
    s = load_scorer(f"vqascore:{bare}?tokenizer={release.folder}", "cpu", "fp32")
    images, texts = pairs(2)
    want = scorer(f"vqascore:{release.folder}").score_pairs(images, texts)
    assert float((s.score_pairs(images, texts) - want).abs().max()) <= 1e-6


# -- BLIP-2 / InstructBLIP with T5 ------------------------------------------------------------


@pytest.fixture(scope="module")
def blip_t5(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("blip_t5")
    return {
        "blip-2": tiny_seq2seq_vlms.build_blip_t5(root / "blip2", instruct=False),
        "instructblip": tiny_seq2seq_vlms.build_blip_t5(root / "instructblip", instruct=True),
    }


_DIRECT: dict[Path, tuple[Any, Any]] = {}


def _direct(folder: Path) -> tuple[Any, Any]:
    """The checkpoint through transformers' own auto classes (loaded once per folder)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if folder not in _DIRECT:
        processor = AutoProcessor.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
        _DIRECT[folder] = (processor, model)
    return _DIRECT[folder]


@pytest.mark.parametrize("family", ["blip-2", "instructblip"])
@pytest.mark.parametrize("n", [1, 7])
def test_blip_t5_vqascore_is_p_yes_at_the_first_decoder_step(
    blip_t5: dict[str, Path], family: str, n: int
) -> None:
    s = scorer(f"vqascore:{blip_t5[family]}")
    assert s.config["family"] == family and s.config["share_prefix"] is False
    processor, model = _direct(blip_t5[family])
    yes = processor.tokenizer("yes", add_special_tokens=False)["input_ids"][0]
    images, texts = pairs(n)
    want = []
    with torch.no_grad():
        for image, text in zip(images, texts, strict=True):
            prompt = f'Question: Does this figure show "{text}"? Please answer yes or no.'
            enc = processor(images=[image], text=[prompt], return_tensors="pt")
            logits = model(**enc, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits
            want.append(float(torch.softmax(logits[0, 0], dim=-1)[yes]))
    assert close(s.score_pairs(images, texts), torch.tensor(want))


@pytest.mark.parametrize("family", ["blip-2", "instructblip"])
@pytest.mark.parametrize("n", [1, 7])
def test_blip_t5_captionlik_is_mean_caption_logprob(
    blip_t5: dict[str, Path], family: str, n: int
) -> None:
    s = scorer(f"captionlik:{blip_t5[family]}")
    processor, model = _direct(blip_t5[family])
    images, texts = pairs(n)
    want = []
    with torch.no_grad():
        for image, text in zip(images, texts, strict=True):
            enc = processor(images=[image], text=["Describe this image."], return_tensors="pt")
            labels = processor.tokenizer(text, add_special_tokens=False, return_tensors="pt")
            # T5 shifts the labels right after decoder_start_token_id; loss = mean CE.
            want.append(-float(model(**enc, labels=labels["input_ids"]).loss))
    got = s.score_pairs(images, texts)
    assert close(got, torch.tensor(want))
    if n > 1:
        assert float(got.max() - got.min()) > 1e-2


# -- Florence-2 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def florence2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_seq2seq_vlms.build_florence2(tmp_path_factory.mktemp("florence2"))


@pytest.mark.parametrize("n", [1, 7])
def test_florence2_captionlik_is_mean_caption_logprob(florence2: Path, n: int) -> None:
    s = scorer(f"captionlik:{florence2}")
    assert s.config["prompt"] == "<MORE_DETAILED_CAPTION>" and s.config["share_prefix"] is False
    processor, model = _direct(florence2)
    tok = processor.tokenizer
    images, texts = pairs(n)
    want = []
    with torch.no_grad():
        for image, text in zip(images, texts, strict=True):
            enc = processor(images=[image], text=["<MORE_DETAILED_CAPTION>"], return_tensors="pt")
            caption = tok(text, add_special_tokens=False)["input_ids"]
            # The decoder starts at </s> (decoder_start_token_id), then <s>: context, not scored.
            ids = torch.tensor([[2, tok.bos_token_id, *caption]])
            logits = model(**enc, decoder_input_ids=ids[:, :-1]).logits[0]
            logp = torch.log_softmax(logits[1:], dim=-1)
            want.append(float(logp.gather(-1, torch.tensor(caption)[:, None]).mean()))
    got = s.score_pairs(images, texts)
    assert close(got, torch.tensor(want))
    if n > 1:
        assert float(got.max() - got.min()) > 1e-2


def test_florence2_is_not_a_vqascore_model(florence2: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a yes/no model") as err:
        load_scorer(f"vqascore:{florence2}", "cpu")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("family", ["blip-2", "florence2"])
def test_captionlik_runs_the_encoder_once_per_distinct_image(
    blip_t5: dict[str, Path], florence2: Path, family: str
) -> None:
    s = scorer(f"captionlik:{florence2 if family == 'florence2' else blip_t5[family]}")
    rows: list[int] = []
    hook = s.model.get_encoder().register_forward_hook(
        lambda _m, _a, out: rows.append(int(out.last_hidden_state.shape[0]))
    )
    try:
        images, texts = pairs(7)  # 3 distinct images
        s.score_pairs(images, texts)
    finally:
        hook.remove()
    assert rows == [3]


# -- routing ----------------------------------------------------------------------------------


def test_route_sends_each_config_to_its_scorer(
    release: tiny_seq2seq_vlms.ClipT5Release, blip_t5: dict[str, Path], florence2: Path
) -> None:
    from densecap_eval.scorers import vlm_route

    assert vlm_route.seq2seq_family(str(release.folder)) == "clip_t5"
    assert vlm_route.seq2seq_family(str(blip_t5["instructblip"])) == "hf"
    assert vlm_route.seq2seq_family(str(florence2)) == "hf"
    assert vlm_route.seq2seq_family(str(release.tower_folder)) is None  # not encoder-decoder
    # A released name is recognised without its config (offline, not cached): CLIP-FlanT5's
    # loader answers, in one line.
    assert vlm_route.seq2seq_family("zhiqiulin/clip-flant5-xl") == "clip_t5"
    with pytest.raises(ModelLoadError, match="clip-flant5-xl") as err:
        load_scorer("vqascore:zhiqiulin/clip-flant5-xl", "cpu")
    assert "\n" not in str(err.value)


def test_route_keeps_decoder_vlms_on_the_decoder_scorer(tmp_path: Path) -> None:
    import tiny_vlms

    from densecap_eval.scorers import vlm

    folder = tiny_vlms.build_llava(tmp_path / "llava")
    routed = load_scorer(f"vqascore:{folder}", "cpu", "fp32")
    direct = vlm.load_vqascore(f"vqascore:{folder}", "cpu", "fp32")
    assert type(routed) is type(direct) and isinstance(routed, vlm.VQAScorer)
    images, texts = pairs(3)
    assert torch.equal(routed.score_pairs(images, texts), direct.score_pairs(images, texts))
