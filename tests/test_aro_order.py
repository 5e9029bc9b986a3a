"""ARO COCO-Order / Flickr30k-Order: the shuffles by hand, seeded builds, stored options, the
loaders, the missing-tool errors and an end-to-end run. No spaCy or NLTK: a small dictionary
tagger and a regex tokenizer stand in (registered as text tools ``test-fake``)."""

from __future__ import annotations

import json
import logging
import random
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer, load_region
from PIL import Image
from text_tools import FAKE_TEXT_TOOLS, fake_tagger, fake_tokenizer
from text_tools import fake_tools as _fake_tools

import densecap_eval
from densecap_eval.core.errors import BadRecordError, DatasetError, DensecapError, DownloadError
from densecap_eval.datasets import load_dataset
from densecap_eval.datasets.aro import order_tasks as aro_order
from densecap_eval.datasets.aro.order_loader import COCOOrderDataset, Flickr30kOrderDataset
from densecap_eval.datasets.aro.order_tasks import TextTools
from densecap_eval.tasks.textshuffle import (
    order_options,
    pre_caption,
    shuffle_allbut_nouns_and_adj,
    shuffle_nouns_and_adj,
    shuffle_trigrams,
    shuffle_within_trigrams,
    trigrams,
)

# --- the stand-in tools (tests/text_tools.py) ----------------------------------------------


@pytest.fixture
def fake_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Use the stand-in tools and a store of this test's own; returns the store folder."""
    monkeypatch.setattr(aro_order, "DEFAULT_TEXT_TOOLS", FAKE_TEXT_TOOLS)
    monkeypatch.setenv("DENSECAP_EVAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "aro-order"


class ReverseNumpy:
    """A numpy-RNG stand-in whose permutation reverses: the expected output is hand-written."""

    def permutation(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[::-1].copy()


class ReverseRandom:
    def shuffle(self, x: list[Any]) -> None:
        x.reverse()


SENTENCE = "The big dog chased a small cat near the red car."

# --- pre_caption ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "max_words", "want"),
    [
        ("A Dog.  Runs!", 30, "a dog runs"),
        ('(Quote) "x" *y*: #z; ~w', 30, "quote x y z w"),
        ("a,b it's a dog's-toy", 30, "a,b it's a dog's-toy"),  # , ' - stay
        ("hello\tworld", 30, "hello\tworld"),  # one whitespace character is not squeezed
        ("x \t y", 30, "x y"),  # two or more become one space
        ("a man\n", 30, "a man"),
        ("  padded  ", 30, "padded"),
        (" ".join(f"w{i}" for i in range(35)), 30, " ".join(f"w{i}" for i in range(30))),
        ("one two three", 2, "one two"),
        ("", 30, ""),
    ],
)
def test_pre_caption_as_aro(caption: str, max_words: int, want: str) -> None:
    assert pre_caption(caption, max_words) == want


def test_pre_caption_default_keeps_50_words() -> None:
    assert len(pre_caption(" ".join(["w"] * 60)).split(" ")) == 50


# --- the four shuffles, by hand ---------------------------------------------------------------


def test_shuffle_nouns_and_adj_by_hand() -> None:
    # nouns dog, cat, car and adjectives big, small, red each reverse among their own
    # positions; the, chased, a, near, the and "." stay where they are.
    got = shuffle_nouns_and_adj(SENTENCE, tagger=fake_tagger, rng=ReverseNumpy())
    assert got == "The red car chased a small cat near the big dog ."


def test_shuffle_allbut_nouns_and_adj_by_hand() -> None:
    # everything but nouns and adjectives (The chased a near the .) reverses among its
    # positions; big dog small cat red car stay.
    got = shuffle_allbut_nouns_and_adj(SENTENCE, tagger=fake_tagger, rng=ReverseNumpy())
    assert got == ". big dog the near small cat a chased red car The"


def test_trigrams_keep_a_short_last_group() -> None:
    assert trigrams(list("abcdefg")) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert trigrams(list("abcdef")) == [["a", "b", "c"], ["d", "e", "f"]]
    assert trigrams([]) == []


def test_shuffle_within_trigrams_by_hand() -> None:
    got = shuffle_within_trigrams("a b c d e f g", tokenizer=fake_tokenizer, rng=ReverseRandom())
    assert got == "c b a f e d g"


def test_shuffle_trigrams_by_hand() -> None:
    got = shuffle_trigrams("a b c d e f g", tokenizer=fake_tokenizer, rng=ReverseRandom())
    assert got == "g d e f a b c"


def test_part_of_speech_shuffles_move_only_their_class() -> None:
    tagged = fake_tagger(SENTENCE)
    rng = np.random.RandomState(3)
    for _ in range(20):
        out = shuffle_nouns_and_adj(SENTENCE, tagger=fake_tagger, rng=rng).split(" ")
        for cls in (("NN",), ("JJ",)):
            idx = [i for i, (_, tag) in enumerate(tagged) if tag in cls]
            assert sorted(out[i] for i in idx) == sorted(tagged[i][0] for i in idx)
        fixed = [i for i, (_, tag) in enumerate(tagged) if tag not in ("NN", "JJ")]
        assert [out[i] for i in fixed] == [tagged[i][0] for i in fixed]
        out = shuffle_allbut_nouns_and_adj(SENTENCE, tagger=fake_tagger, rng=rng).split(" ")
        kept = [i for i, (_, tag) in enumerate(tagged) if tag in ("NN", "JJ")]
        assert [out[i] for i in kept] == [tagged[i][0] for i in kept]


def test_trigram_shuffles_keep_groups() -> None:
    words = "a b c d e f g h".split()
    rng = random.Random(5)
    for _ in range(20):
        out = shuffle_within_trigrams(" ".join(words), tokenizer=fake_tokenizer, rng=rng).split()
        for k in range(0, 8, 3):
            assert sorted(out[k : k + 3]) == words[k : k + 3]
        out = shuffle_trigrams(" ".join(words), tokenizer=fake_tokenizer, rng=rng).split()
        groups = {" ".join(g) for g in trigrams(words)}
        rebuilt, i = [], 0
        while i < len(out):  # the output is the trigrams, whole, in some order
            size = 2 if " ".join(out[i : i + 2]) == "g h" else 3
            rebuilt.append(" ".join(out[i : i + size]))
            i += size
        assert sorted(rebuilt) == sorted(groups)


def test_all_tags_of_aro_count() -> None:
    # NNS / NNP / JJR are nouns / adjectives too (ARO's tag lists)
    got = shuffle_nouns_and_adj("bob dogs bikes bigger", tagger=fake_tagger, rng=ReverseNumpy())
    assert got == "bikes dogs bob bigger"


def test_empty_caption() -> None:
    rngs: dict[str, Any] = {"np_rng": np.random.RandomState(0), "py_rng": random.Random(0)}
    assert order_options("", tagger=fake_tagger, tokenizer=fake_tokenizer, **rngs) == ("",) * 5


def test_order_options_true_caption_first_and_tagged_once() -> None:
    calls: list[str] = []

    def counting(text: str) -> list[tuple[str, str]]:
        calls.append(text)
        return fake_tagger(text)

    rngs: dict[str, Any] = {"np_rng": ReverseNumpy(), "py_rng": ReverseRandom()}
    opts = order_options(SENTENCE, tagger=counting, tokenizer=fake_tokenizer, **rngs)
    assert opts == (
        "the big dog chased a small cat near the red car",
        "the red car chased a small cat near the big dog",
        "big dog the near small cat a chased red car the",
        "dog big the small a chased the near cat car red",
        "red car cat near the chased a small the big dog",
    )
    assert calls == [SENTENCE]


def test_seeded_generators_draw_what_aros_global_state_draws() -> None:
    """`order_options` with RandomState(s) / Random(s) equals the same draws from numpy's and
    Python's global state after seeding both with s (ARO's seed_all)."""
    captions = [SENTENCE, "A man rides a brown horse on the beach.", "Two dogs with a frisbee"]
    mine_np, mine_py = np.random.RandomState(1), random.Random(1)
    tools: dict[str, Any] = {"tagger": fake_tagger, "tokenizer": fake_tokenizer}
    mine = [order_options(c, np_rng=mine_np, py_rng=mine_py, **tools) for c in captions]
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        np.random.seed(1)
        random.seed(1)
        glob = [order_options(c, np_rng=np.random, py_rng=random, **tools) for c in captions]
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    assert mine == glob


# --- the loaders ------------------------------------------------------------------------------

COLOURS = ("red", "green", "blue", "yellow")


def make_root(
    root: Path,
    *,
    flickr: bool = False,
    records: list[Any] | None = None,
    missing: tuple[int, ...] = (),
) -> Path:
    """A data root in the released layout: the JSON and photos at each record's path."""
    folder = "flickr30k-images" if flickr else "val2014"
    name = "flickr30k_test.json" if flickr else "coco_karpathy_test.json"
    if records is None:
        captions = [
            ["A big dog chased a small cat.", "The red car near the park."],
            ["A man rides a brown horse on the beach.", "Two dogs with a white frisbee."],
            ["The small dog catches a red frisbee in the park."],
            ["A white cat near a big red car.", "Bob rides bikes on the beach."],
        ]
        names = [f"{i}.jpg" if flickr else f"{i:03d}.jpg" for i in range(len(captions))]
        records = [
            {"image": f"{folder}/{n}", "caption": caps}
            for n, caps in zip(names, captions, strict=True)
        ]
    (root / folder).mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(records):
        if isinstance(rec, dict) and isinstance(rec.get("image"), str) and i not in missing:
            path = root / rec["image"]
            if path.parent.resolve().is_relative_to(root.resolve()):
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 12), COLOURS[i % len(COLOURS)]).save(path, format="PNG")
    (root / name).write_text(json.dumps(records))
    return root


def test_loader_reads_the_released_layout(tmp_path: Path) -> None:
    ds = COCOOrderDataset(make_root(tmp_path))
    assert ds.splits() == ["test"]
    recs = list(ds.records("test"))
    assert [r.id for r in recs] == [f"val2014/{i:03d}.jpg" for i in range(4)]
    assert recs[1].image == tmp_path / "val2014" / "001.jpg"
    assert [t.text for t in recs[1].texts] == [
        "A man rides a brown horse on the beach.",
        "Two dogs with a white frisbee.",
    ]
    assert [a.index for a in ds.annotations()] == [0, 1, 2, 3] and ds.skipped == []
    assert len(ds.fingerprint(["test"])) == 64
    flickr = load_dataset("aro-flickr30k", root=str(make_root(tmp_path / "f", flickr=True)))
    assert isinstance(flickr, Flickr30kOrderDataset)
    assert next(iter(flickr.records())).id == "flickr30k-images/0.jpg"


@pytest.mark.parametrize(
    ("cls", "command", "images"),
    [
        (COCOOrderDataset, "densecap-eval download aro-coco --root", "val2014"),
        (Flickr30kOrderDataset, "densecap-eval download aro-flickr30k --root", "229675"),
    ],
)
def test_missing_json_is_one_line_naming_the_download(
    tmp_path: Path, cls: Any, command: str, images: str
) -> None:
    with pytest.raises(DatasetError) as err:
        cls(tmp_path)
    message = str(err.value)
    assert "\n" not in message and command in message and images in message
    assert cls.json_name in message


def test_missing_photo_is_skipped_loudly_and_strict_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_root(tmp_path, missing=(2,))
    with caplog.at_level(logging.WARNING):
        ds = COCOOrderDataset(root)
        ids = [r.id for r in ds.records()]
    assert ids == ["val2014/000.jpg", "val2014/001.jpg", "val2014/003.jpg"]
    assert [s.image for s in ds.skipped] == ["val2014/002.jpg"]
    assert "not found" in ds.skipped[0].reason and "val2014/002.jpg" in caplog.text
    assert len(ds.annotations()) == 4  # the options are still drawn for every record
    with pytest.raises(BadRecordError, match=r"002\.jpg"):
        list(COCOOrderDataset(root, strict=True).records())


def test_bad_records_are_skipped_and_named(tmp_path: Path) -> None:
    records = [
        {"image": "val2014/a.jpg", "caption": ["A dog."]},
        "not a record",
        {"image": "val2014/b.jpg", "caption": "a string, not a list"},
        {"image": "../outside.jpg", "caption": ["x"]},
        {"image": "val2014/a.jpg", "caption": ["again"]},
        {"caption": ["no image"]},
        {"image": "val2014/c.jpg", "caption": ["ok", 3]},
        {"image": "val2014/d.jpg", "caption": ["A cat."]},
    ]
    ds = COCOOrderDataset(make_root(tmp_path, records=records))
    assert [a.image for a in ds.annotations()] == ["val2014/a.jpg", "val2014/d.jpg"]
    reasons = {s.image: s.reason for s in ds.skipped}
    assert reasons == {
        "record 1": "not an object but str",
        "record 2 (val2014/b.jpg)": "'caption' is not a non-empty list",
        "record 3 (../outside.jpg)": "its image path leaves the data root",
        "record 4 (val2014/a.jpg)": "record 4: image 'val2014/a.jpg' repeats the one at record 0",
        "record 5": "no 'image' path",
        "record 6 (val2014/c.jpg)": "'caption' holds something that is not a string",
    }
    with pytest.raises(BadRecordError, match="record 1"):
        COCOOrderDataset(tmp_path, strict=True)


def test_unreadable_json_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "coco_karpathy_test.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not readable JSON"):
        COCOOrderDataset(tmp_path)
    (tmp_path / "coco_karpathy_test.json").write_text("{}")
    with pytest.raises(DatasetError, match="list of records"):
        COCOOrderDataset(tmp_path)


def test_download_needs_a_sha256(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="--sha256") as err:
        aro_order_download("coco", tmp_path)
    assert "3ff34b0ef2db02d01c37399f6a2a6cd1" in str(err.value)  # LAVIS's md5 to check against
    with pytest.raises(DownloadError, match="--sha256"):
        aro_order_download("flickr", tmp_path)


def aro_order_download(which: str, root: Path, **kw: Any) -> str:
    from densecap_eval.datasets.aro import order_loader as loader

    fn = loader.download_coco if which == "coco" else loader.download_flickr30k
    return fn(root, progress=False, **kw)


def test_download_fetches_checks_and_says_what_is_left(
    tmp_path: Path, server: tuple[Path, str]
) -> None:
    import hashlib

    served, base = server
    body = json.dumps([{"image": "val2014/x.jpg", "caption": ["a"]}]).encode()
    (served / "coco_karpathy_test.json").write_bytes(body)
    root = tmp_path / "data"
    url = f"{base}/coco_karpathy_test.json"
    message = aro_order_download("coco", root, url=url, sha256=hashlib.sha256(body).hexdigest())
    assert (root / "coco_karpathy_test.json").read_bytes() == body
    assert "val2014.zip" in message and "1 photos listed" in message
    with pytest.raises(DownloadError, match="checksum mismatch"):
        aro_order_download("flickr", root, url=f"{base}/coco_karpathy_test.json", sha256="0" * 64)


# --- seeded builds and the stored options ---------------------------------------------------


def test_build_is_deterministic_per_seed(tmp_path: Path) -> None:
    ds = COCOOrderDataset(make_root(tmp_path))
    a = aro_order.build_options(ds, seed=0, tagger=fake_tagger, tokenizer=fake_tokenizer)
    b = aro_order.build_options(ds, seed=0, tagger=fake_tagger, tokenizer=fake_tokenizer)
    c = aro_order.build_options(ds, seed=1, tagger=fake_tagger, tokenizer=fake_tokenizer)
    assert a == b and a != c
    ids = [aro_order.case_id(r.image, i) for r in ds.annotations() for i in range(len(r.captions))]
    assert list(a) == ids
    captions = [c for r in ds.annotations() for c in r.captions]
    assert [a[i][0] for i in ids] == [pre_caption(c, 30) for c in captions]
    with pytest.raises(DensecapError, match="2\\*\\*32"):
        aro_order.build_options(ds, seed=2**32, tagger=fake_tagger, tokenizer=fake_tokenizer)


def test_options_do_not_depend_on_which_photos_are_present(tmp_path: Path) -> None:
    full = COCOOrderDataset(make_root(tmp_path / "a"))
    partial = COCOOrderDataset(make_root(tmp_path / "b", missing=(0, 2)))
    kw: dict[str, Any] = {"seed": 4, "tagger": fake_tagger, "tokenizer": fake_tokenizer}
    assert aro_order.build_options(full, **kw) == aro_order.build_options(partial, **kw)


def test_stored_options_are_written_once_and_reused(tmp_path: Path, fake_tools: Path) -> None:
    ds = COCOOrderDataset(make_root(tmp_path / "data"))
    first, path = aro_order.stored_options(ds, seed=7, tools=_fake_tools())
    assert path.parent == fake_tools and path.is_file()
    assert path.name.startswith("aro-coco-seed7-")
    stored = json.loads(path.read_text())
    assert stored["key"]["tagger"] == "fake-tagger 1.0" and stored["key"]["seed"] == 7
    assert [c["id"] for c in stored["cases"]] == list(first)

    def refuse() -> Any:
        raise AssertionError("the tools were loaded although the options are stored")

    again, path2 = aro_order.stored_options(
        ds, seed=7, tools=TextTools("fake-tagger 1.0", "fake-tokenizer 1.0", refuse)
    )
    assert again == first and path2 == path
    # another seed, tagger version or annotation file is another key, so another build
    other, path3 = aro_order.stored_options(
        ds, seed=7, tools=TextTools("fake-tagger 2.0", "fake-tokenizer 1.0", _fake_tools().load)
    )
    assert path3 != path and other == first  # same tools in fact, so same draws
    assert not list(fake_tools.glob(".*"))  # no temporary file left behind


def test_a_damaged_store_is_rebuilt(
    tmp_path: Path, fake_tools: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = COCOOrderDataset(make_root(tmp_path / "data"))
    first, path = aro_order.stored_options(ds, seed=0, tools=_fake_tools())
    path.write_text("{broken")
    with caplog.at_level(logging.WARNING):
        again, _ = aro_order.stored_options(ds, seed=0, tools=_fake_tools())
    assert again == first and "building them again" in caplog.text
    assert json.loads(path.read_text())["cases"][0]["options"] == list(first["val2014/000.jpg#0"])


# --- the real tools' errors (no spaCy / NLTK installed, or faked) -----------------------------


def _versions(monkeypatch: pytest.MonkeyPatch, **have: str | None) -> None:
    table = {"spacy": "3.7.4", "nltk": "3.9.1", "en_core_web_sm": "3.7.1", **have}
    monkeypatch.setattr(aro_order, "_version", lambda dist: table.get(dist))


def test_missing_spacy_is_one_line_naming_the_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    _versions(monkeypatch, spacy=None)
    with pytest.raises(DensecapError) as err:
        aro_order.spacy_nltk_tools()
    message = str(err.value)
    assert "\n" not in message and "spaCy is not installed" in message
    assert "pip install 'densecap-eval[aro]'" in message
    assert "python -m spacy download en_core_web_sm" in message


def test_missing_spacy_model_names_its_download(monkeypatch: pytest.MonkeyPatch) -> None:
    _versions(monkeypatch, en_core_web_sm=None)
    with pytest.raises(DensecapError, match="python -m spacy download en_core_web_sm") as err:
        aro_order.spacy_nltk_tools()
    assert "\n" not in str(err.value)


def _fake_nlp_modules(monkeypatch: pytest.MonkeyPatch, *, punkt: bool, model: bool) -> None:
    class Token:
        def __init__(self, text: str, tag: str) -> None:
            self.text, self.tag_ = text, tag

    class NLP:
        def __init__(self) -> None:
            self.meta = {"version": "3.7.1"}

        def __call__(self, text: str) -> list[Token]:
            return [Token(t, tag) for t, tag in fake_tagger(text)]

    def load(name: str) -> NLP:
        if not model:
            raise OSError(f"[E050] Can't find model '{name}'.\nIt doesn't seem to be ...")
        return NLP()

    def word_tokenize(text: str) -> list[str]:
        if not punkt:
            raise LookupError("\n***\n  Resource \x1b[93mpunkt_tab\x1b[0m not found.\n***")
        return fake_tokenizer(text)

    nltk = types.ModuleType("nltk")
    tokenize = types.ModuleType("nltk.tokenize")
    tokenize.word_tokenize = word_tokenize  # type: ignore[attr-defined]
    nltk.tokenize = tokenize  # type: ignore[attr-defined]
    spacy = types.ModuleType("spacy")
    spacy.load = load  # type: ignore[attr-defined]
    for name, module in (("nltk", nltk), ("nltk.tokenize", tokenize), ("spacy", spacy)):
        monkeypatch.setitem(sys.modules, name, module)


def test_real_tools_adapters_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    _versions(monkeypatch)
    _fake_nlp_modules(monkeypatch, punkt=True, model=True)
    tools = aro_order.spacy_nltk_tools()
    assert tools.tagger_name == "spacy/en_core_web_sm 3.7.1 (spacy 3.7.4)"
    assert tools.tokenizer_name == "nltk word_tokenize 3.9.1"
    tagger, tokenizer = tools.load()
    assert tagger("A dog.") == [("A", "DT"), ("dog", "NN"), (".", ".")]
    assert tokenizer("A dog.") == ["A", "dog", "."]


def test_missing_punkt_names_the_nltk_download(monkeypatch: pytest.MonkeyPatch) -> None:
    _versions(monkeypatch)
    _fake_nlp_modules(monkeypatch, punkt=False, model=True)
    with pytest.raises(DensecapError) as err:
        aro_order.spacy_nltk_tools().load()
    assert str(err.value) == (
        "aro/coco_order and aro/flickr30k_order: NLTK's word_tokenize needs its punkt_tab "
        "data, which is not installed: python -m nltk.downloader punkt_tab"
    )
    assert aro_order.nltk_resource("no resource named", "3.8.1") == "punkt"
    assert aro_order.nltk_resource("no resource named", "3.9.1") == "punkt_tab"


def test_unloadable_spacy_model_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _versions(monkeypatch)
    _fake_nlp_modules(monkeypatch, punkt=True, model=False)
    with pytest.raises(DensecapError) as err:
        aro_order.spacy_nltk_tools().load()
    assert "\n" not in str(err.value) and "[E050]" in str(err.value)
    assert "python -m spacy download en_core_web_sm" in str(err.value)


def test_evaluate_without_spacy_stops_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _versions(monkeypatch, spacy=None, nltk=None)
    root = make_root(tmp_path / "data")
    with pytest.raises(DensecapError, match=r"densecap-eval\[aro\]"):
        densecap_eval.evaluate(
            FakeEmbeddingScorer(), "aro/coco_order", data_root=root, n_boot=0, use_cache=False
        )


# --- end to end -------------------------------------------------------------------------------


def _direct(examples: list[Any], scorer: FakeEmbeddingScorer) -> list[bool]:
    from densecap_eval.datasets.regions import Region

    out = []
    for ex in examples:
        s = scorer.score([load_region(Region(ex["photo"]))], list(ex["options"])).numpy()[0]
        out.append(bool(np.argmax(s) == 0))
    return out


@pytest.mark.parametrize(
    ("task", "flickr"), [("aro/coco_order", False), ("aro/flickr30k_order", True)]
)
def test_evaluate_equals_a_direct_computation_and_repeats(
    tmp_path: Path, fake_tools: Path, task: str, flickr: bool
) -> None:
    root = make_root(tmp_path / "data", flickr=flickr, missing=(3,))
    scorer = FakeEmbeddingScorer(max_text_tokens=40)
    runs = [
        densecap_eval.evaluate(scorer, task, data_root=root, n_boot=0, use_cache=False, seed=seed)
        for seed in (0, 0, 1)
    ]
    first, second, other = runs
    metrics = first.metrics[task]
    # the direct computation: options built here, photos decoded here, argmax == 0
    ds = load_dataset("aro-flickr30k" if flickr else "aro-coco", root=str(root))
    options = aro_order.build_options(ds, seed=0, tagger=fake_tagger, tokenizer=fake_tokenizer)
    present = [a for a in ds.annotations() if (root / a.image).is_file()]
    examples = [
        {"photo": str(root / a.image), "options": options[aro_order.case_id(a.image, i)]}
        for a in present
        for i in range(len(a.captions))
    ]
    want = _direct(examples, FakeEmbeddingScorer(max_text_tokens=40))
    assert first.examples["precision_at_1_correct"].tolist() == want
    assert metrics["precision_at_1"] == pytest.approx(np.mean(want))
    assert metrics["n"] == len(examples) == 5 and metrics["rule"] == "first"
    assert metrics["seed"] == 0
    assert (metrics["tagger"], metrics["tokenizer"]) == ("fake-tagger 1.0", "fake-tokenizer 1.0")
    assert [list(o) for o in first.examples["options"]] == [list(e["options"]) for e in examples]
    absent = [a.image for a in ds.annotations() if a not in present]
    assert [s.image for s in first.skipped] == absent and len(absent) == 1
    # the same run again: the same options (read from the store) and the same numbers
    assert len(list(fake_tools.glob("*.json"))) == 2  # seeds 0 and 1
    assert second.metrics[task] == metrics
    assert second.examples["options"].tolist() == first.examples["options"].tolist()
    # another seed: other options, recorded
    assert other.metrics[task]["seed"] == 1
    assert other.metrics[task]["options_sha256"] != metrics["options_sha256"]


def test_registered_names_resolve() -> None:
    from densecap_eval.datasets import DATASETS, DOWNLOADERS
    from densecap_eval.datasets.aro import order_loader as loader
    from densecap_eval.tasks import get_task

    assert DATASETS.get("aro-coco") is COCOOrderDataset
    assert DATASETS.get("aro-flickr30k") is Flickr30kOrderDataset
    assert DOWNLOADERS.get("aro-coco") is loader.download_coco
    assert DOWNLOADERS.get("aro-flickr30k") is loader.download_flickr30k
    assert get_task("aro/coco_order") is aro_order.COCO_ORDER
    assert get_task("aro/flickr30k_order").dataset == "aro-flickr30k"
