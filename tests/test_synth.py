"""The synthetic DCI generator: exact release layout, determinism, texts within 77 tokens,
negatives false by construction, the CLI, and the bundled sample being what the script makes."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densecap_eval.cli.app import main
from densecap_eval.core.paths import bundled_sample_root
from densecap_eval.synth import (
    COLORS,
    OBJECT_KINDS,
    SynthError,
    build_record,
    default_split_sizes,
    generate_dci,
    scene_for,
    vocabulary,
)
from densecap_eval.synth.vocab import ALL_PART_KINDS, BACKGROUNDS, FLIPS, plural

RECORD_KEYS = [
    "image",
    "short_caption",
    "extra_caption",
    "mask_data",
    "mask_keys",
    "summaries",
    "negatives",
    "clip_scores",
]
MASK_KEYS = {
    "idx": int,
    "outer_mask": str,
    "mask_quality": int,
    "label": str,
    "caption": str,
    "parent": int,
    "requirements": list,
    "bounds": dict,
    "area": int,
}


@pytest.fixture(scope="module")
def n_tokens():
    """Untruncated OpenAI-CLIP token count, start and end tokens included."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    return lambda text: len(tok.encode(text)) + 2


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    generate_dci(out, images=10, seed=5)
    return out / "densely_captioned_images"


def _records(release: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((release / "complete").glob("*.json"))]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _decode(mask_b64: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(mask_b64))))


def _is_subcrop(mask: dict) -> bool:
    b = mask["bounds"]
    return (
        b["bottomRight"]["x"] - b["topLeft"]["x"] >= 224
        and b["bottomRight"]["y"] - b["topLeft"]["y"] >= 224
    )


# --- layout and types ------------------------------------------------------------------------


def test_release_layout_and_splits(small_set: Path) -> None:
    splits = json.loads((small_set / "splits.json").read_text())
    assert list(splits) == ["train", "valid", "test"]
    assert [len(v) for v in splits.values()] == [8, 1, 1]
    listed = sorted(name for names in splits.values() for name in names)
    assert listed == sorted(p.name for p in (small_set / "complete").iterdir())
    photos = sorted(p.name for p in (small_set / "photos").iterdir())
    assert photos == sorted(
        json.loads((small_set / "complete" / n).read_text())["image"] for n in listed
    )


def test_record_fields_and_types(small_set: Path) -> None:
    for rec in _records(small_set):
        assert list(rec) == RECORD_KEYS
        assert isinstance(rec["short_caption"], str) and isinstance(rec["extra_caption"], str)
        assert rec["mask_keys"] == list(rec["mask_data"])
        with Image.open(small_set / "photos" / rec["image"]) as photo:
            size = photo.size
        assert size == (640, 480)
        for key, mask in rec["mask_data"].items():
            assert set(mask) == set(MASK_KEYS)
            for field, typ in MASK_KEYS.items():
                assert type(mask[field]) is typ, (key, field)
            assert key == str(mask["idx"])
            assert mask["mask_quality"] in (0, 1, 2)
            if mask["mask_quality"] == 2:
                assert mask["label"] == "" and mask["caption"] == ""
            if mask["mask_quality"] == 1:
                assert mask["caption"] == ""
            pixels = _decode(mask["outer_mask"])
            assert pixels.shape == (size[1], size[0]) and pixels.dtype == bool
            assert int(pixels.sum()) == mask["area"] > 0
            ys, xs = np.nonzero(pixels)
            b = mask["bounds"]
            assert set(b) == {"topLeft", "bottomRight"} and set(b["topLeft"]) == {"x", "y"}
            # Bounds hold the mask; they may overrun the photo, never cut the mask.
            assert b["topLeft"]["x"] <= xs.min() and b["bottomRight"]["x"] >= xs.max() + 1
            assert b["topLeft"]["y"] <= ys.min() and b["bottomRight"]["y"] >= ys.max() + 1
            parent = mask["parent"]
            assert parent == -1 or mask["idx"] in rec["mask_data"][str(parent)]["requirements"]
            for child in mask["requirements"]:
                assert rec["mask_data"][str(child)]["parent"] == mask["idx"]
        subcrops = [f"m-{m['idx']}-sc" for m in rec["mask_data"].values() if _is_subcrop(m)]
        assert list(rec["summaries"]) == ["base", *subcrops]
        assert list(rec["negatives"]) == list(rec["summaries"]) == list(rec["clip_scores"])
        for key, negs in rec["negatives"].items():
            assert list(negs) == ["swaps", "layout", "basic"] and all(negs.values()), key
            expected = {"sum"} | {f"{k}_{i}" for k, v in negs.items() for i in range(len(v))}
            assert set(rec["clip_scores"][key]) == expected
            assert all(isinstance(v, float) for v in rec["clip_scores"][key].values())


def test_set_has_what_the_subtests_need(small_set: Path) -> None:
    records = _records(small_set)
    summaries = [s for r in records for s in r["summaries"].values()]
    assert any(isinstance(s, str) for s in summaries)
    assert any(isinstance(s, list) and len(s) >= 5 for s in summaries)
    subcrops = [sum(_is_subcrop(m) for m in r["mask_data"].values()) for r in records]
    assert sum(subcrops) >= 2 * len(records)
    small = [m for r in records for m in r["mask_data"].values() if not _is_subcrop(m)]
    assert len(small) > len(records)
    qualities = [m["mask_quality"] for r in records for m in r["mask_data"].values()]
    assert {0, 1, 2} <= set(qualities) and qualities.count(0) > len(qualities) / 2
    overrun = [
        m
        for r in records
        for m in r["mask_data"].values()
        if m["bounds"]["topLeft"]["x"] < 0
        or m["bounds"]["bottomRight"]["x"] > 640
        or m["bounds"]["bottomRight"]["y"] > 480
    ]
    assert overrun, "some bounds should run past the photo's edge"


# --- texts -----------------------------------------------------------------------------------


def test_summaries_and_negatives_fit_77_tokens_and_long_captions_do_not(
    small_set: Path, n_tokens
) -> None:
    longs = []
    for rec in _records(small_set):
        for key, summary in rec["summaries"].items():
            bag = [summary] if isinstance(summary, str) else summary
            assert all(n_tokens(t) <= 77 for t in bag), key
            for negs in rec["negatives"][key].values():
                assert all(n_tokens(t) <= 77 for t in negs)
                assert not set(negs) & set(bag)
        texts = [
            m["label"] if m["mask_quality"] == 1 else f"{m['label']}: {m['caption']}"
            for m in rec["mask_data"].values()
            if m["mask_quality"] != 2
        ]
        long = (
            f"{rec['short_caption']}\n{rec['extra_caption']}\nThe following can also be seen in the image:\n"
            + "\n".join(texts)
        )
        longs.append(n_tokens(long))
    assert min(longs) > 77 and max(longs) > 248


def _pairs(text: str) -> set[tuple[str, str]]:
    """(colour, noun) pairs a text asserts, e.g. "two black wheels" -> ("black", "wheel")."""
    nouns = set(OBJECT_KINDS) | set(ALL_PART_KINDS) | set(BACKGROUNDS) | {"cloud"}
    words = re.findall(r"[a-z]+", text.lower())
    out = set()
    for i, w in enumerate(words):
        if w not in COLORS:
            continue
        for nxt in words[i + 1 : i + 3]:  # colour [texture] noun
            singular = {plural(n): n for n in nouns}.get(nxt, nxt)
            if singular in nouns:
                out.add((w, singular))
                break
    return out


@pytest.mark.parametrize("seed", [0, 7])
def test_negatives_are_false_by_construction(seed: int) -> None:
    from densecap_eval.synth.vocab import DISTRACTOR_PARTS

    for index in range(8):
        scene = scene_for(seed, index)
        rec = build_record(scene, photo="x.jpg", seed=seed, index=index)
        true_pairs = {(n.color, n.noun) for n in scene.nodes if n.noun}
        nouns = {n.noun for n in scene.nodes}
        for key, negs in rec["negatives"].items():
            summary = rec["summaries"][key]
            positive = summary if isinstance(summary, str) else summary[0]
            assert _pairs(positive) <= true_pairs, positive
            for neg in negs["swaps"]:  # a colour now sits on the wrong thing
                assert _pairs(neg) - true_pairs, (positive, neg)
            for neg in negs["layout"]:  # same words, one layout phrase flipped
                assert _pairs(neg) == _pairs(positive)
                flipped = [
                    w
                    for w, v in {**FLIPS, "upright": "upside down"}.items()
                    if v in neg and w in positive
                ]
                assert flipped or "in the middle" in positive, (positive, neg)
            for neg in negs["basic"]:  # a noun absent from the scene
                absent = (
                    set(OBJECT_KINDS)
                    | set(ALL_PART_KINDS)
                    | set(DISTRACTOR_PARTS)
                    | set(BACKGROUNDS)
                )
                absent -= nouns
                words = set(re.findall(r"[a-z]+", neg)) | {
                    w[:-1] for w in re.findall(r"[a-z]+s\b", neg)
                }
                assert words & absent, (positive, neg)


def test_twins_differ_only_late_in_the_long_caption(n_tokens) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    a, b = (build_record(scene_for(3, i), photo="x.jpg", seed=3, index=i) for i in (6, 7))
    long_a, long_b = (f"{r['short_caption']}\n{r['extra_caption']}" for r in (a, b))
    assert long_a != long_b
    assert tok.encode(long_a)[:75] == tok.encode(long_b)[:75]


def test_vocabulary_is_exposed() -> None:
    vocab = vocabulary()
    assert {"colors", "objects", "parts", "relations", "textures"} <= set(vocab)
    assert (
        "red" in vocab["colors"]
        and "car" in vocab["objects"]
        and "to the left of" in vocab["relations"]
    )


# --- determinism and options -----------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_dci(tmp_path / name, images=3, seed=seed)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_photos_can_be_left_out(tmp_path: Path) -> None:
    result = generate_dci(tmp_path, images=2, seed=0, photos=False, split_sizes=(1, 0, 1))
    assert result.splits == {"train": 1, "valid": 0, "test": 1}
    release = tmp_path / "densely_captioned_images"
    assert (release / "photos").is_dir() and not any((release / "photos").iterdir())
    assert len(list((release / "complete").iterdir())) == 2


@pytest.mark.parametrize(
    ("images", "sizes"),
    [
        (1, (0, 0, 1)),
        (2, (1, 0, 1)),
        (5, (3, 1, 1)),
        (10, (8, 1, 1)),
        (24, (20, 2, 2)),
        (10000, (8000, 1000, 1000)),
    ],
)
def test_default_split_sizes(images: int, sizes: tuple[int, int, int]) -> None:
    assert default_split_sizes(images) == sizes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": 0}, "--images must be"),
        ({"images": 3, "split_sizes": (1, 1, 2)}, "add up to 4"),
        ({"images": 3, "width": 10}, "photo size"),
    ],
)
def test_bad_arguments_raise_named_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SynthError, match=message):
        generate_dci(tmp_path, **kwargs)


def test_existing_release_needs_overwrite(tmp_path: Path) -> None:
    generate_dci(tmp_path, images=1, seed=0, photos=False)
    with pytest.raises(SynthError, match="already exists"):
        generate_dci(tmp_path, images=1, seed=0, photos=False)
    generate_dci(tmp_path, images=2, seed=0, photos=False, overwrite=True)
    assert len(list((tmp_path / "densely_captioned_images" / "complete").iterdir())) == 2


# --- CLI -------------------------------------------------------------------------------------


def test_cli_writes_the_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["synth", str(tmp_path / "out"), "--images", "3", "--seed", "2", "--split-sizes", "1,1,1"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 3 images (train 1, valid 1, test 1)" in out and "KB" in out
    release = tmp_path / "out" / "densely_captioned_images"
    assert json.loads((release / "splits.json").read_text())["test"]
    assert len(list((release / "photos").iterdir())) == 3


@pytest.mark.parametrize(
    "args",
    [
        ["--images", "3", "--split-sizes", "1,1"],
        ["--images", "3", "--split-sizes", "a,b,c"],
        ["--images", "2", "--split-sizes", "1,1,1"],
    ],
)
def test_cli_bad_arguments_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code = main(["synth", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_out_of_range_option_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Bounds declared on the option: Typer's usage error names it; nothing is written.
    code = main(["synth", str(tmp_path / "out"), "--images", "0"])
    assert code != 0
    assert "'--images'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_unwritable_out_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["synth", str(blocker / "out"), "--images", "1"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and "cannot write" in err and err.count("\n") == 1


# --- the bundled sample ----------------------------------------------------------------------


def test_bundled_sample_is_what_make_sample_writes(tmp_path: Path) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_sample.py"
    spec = importlib.util.spec_from_file_location("make_sample", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generate_dci(
        tmp_path,
        images=module.IMAGES,
        seed=module.SEED,
        split_sizes=module.SPLIT_SIZES,
        jpeg_quality=module.JPEG_QUALITY,
    )
    sample = _files(bundled_sample_root() / "densely_captioned_images")
    fresh = _files(tmp_path / "densely_captioned_images")
    assert sample.keys() == fresh.keys(), "run scripts/make_sample.py to refresh data/sample"
    # Records must match to the byte. JPEG bytes depend on the libjpeg build inside Pillow, so
    # photos are compared by their decoded pixels (a re-encode moves a few grey levels at most).
    for name, data in fresh.items():
        if not name.endswith(".jpg"):
            assert sample[name] == data, (
                f"{name}: run scripts/make_sample.py to refresh data/sample"
            )
            continue
        ours = np.asarray(Image.open(io.BytesIO(sample[name])), dtype=np.int16)
        theirs = np.asarray(Image.open(io.BytesIO(data)), dtype=np.int16)
        assert ours.shape == theirs.shape and np.abs(ours - theirs).mean() < 1.0, name
    assert sum(len(v) for v in fresh.values()) < 3_000_000
    assert len(json.loads(fresh["splits.json"])["test"]) == 10
