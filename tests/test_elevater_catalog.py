"""The ELEVATER table shipped as package data equals ELEVATER's own (counts, order, templates)."""

from __future__ import annotations

import pytest

from densecap_eval.datasets.elevater.catalog import dataset_keys, spec

# key: (ELEVATER name, metric, classes, templates, template[0], test images)
EXPECTED = {
    "cifar100": ("cifar-100", "accuracy", 100, 18, "a photo of a {}.", 10000),
    "caltech101": ("caltech-101", "mean-per-class", 102, 34, "a photo of a {}.", 6084),
    "cifar10": ("cifar-10", "accuracy", 10, 18, "a photo of a {}.", 10000),
    "country211": ("country211", "accuracy", 211, 5, "a photo i took in {}.", 21100),
    "dtd": ("dtd", "accuracy", 47, 8, "a photo of a {} texture.", 1880),
    "eurosat-clip": ("eurosat_clip", "accuracy", 10, 3, "a centered satellite photo of {}.", 5000),
    "fer2013": ("fer-2013", "accuracy", 7, 6, "a photo of a {} looking face.", 3589),
    "fgvc-aircraft-2013b": ("fgvc-aircraft-2013b-variants102", "mean-per-class", 100, 2,
                            "a photo of a {}, a type of aircraft.", 3333),
    "food101": ("food-101", "accuracy", 101, 1, "a photo of {}, a type of food.", 25250),
    "gtsrb": ("gtsrb", "accuracy", 43, 3, 'a zoomed in photo of a "{}" traffic sign.', 12630),
    "hateful-memes": ("hateful-memes", "roc_auc", 2, 1, "a {}.", 500),
    "kitti-distance": ("kitti-distance", "accuracy", 4, 1, "{}", 711),
    "mnist": ("mnist", "accuracy", 10, 1, 'a photo of the number: "{}".', 10000),
    "flower102": ("oxford-flower-102", "mean-per-class", 102, 1,
                  "a photo of a {}, a type of flower.", 6149),
    "oxford-iiit-pets": ("oxford-iiit-pets", "mean-per-class", 37, 1,
                         "a photo of a {}, a type of pet.", 3669),
    "patchcamelyon": ("patch-camelyon", "accuracy", 2, 1, "this is a photo of {}", 32768),
    "rendered-sst2": ("rendered-sst2", "accuracy", 2, 1, "a {} review of a movie.", 1821),
    "resisc45-clip": ("resisc45_clip", "accuracy", 45, 18, "satellite imagery of {}.", 25200),
    "stanfordcar": ("stanford-cars", "accuracy", 196, 8, "a photo of a {}.", 8041),
    "voc2007classification": ("voc-2007-classification", "11point_mAP", 20, 1,
                              "a photo of a {}.", 4952),
}  # fmt: skip


def test_the_twenty_keys() -> None:
    assert sorted(dataset_keys()) == sorted(EXPECTED)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_counts_metric_and_first_template(key: str) -> None:
    name, metric, n_classes, n_templates, first, n_test = EXPECTED[key]
    s = spec(key)
    assert (s.elevater_name, s.metric, len(s.classes), len(s.templates)) == (
        name, metric, n_classes, n_templates,
    )  # fmt: skip
    assert s.templates[0] == first
    assert s.test_images == n_test
    assert all("{}" in t for t in s.templates)


def test_all_prompts_and_known_pitfalls() -> None:
    assert sum(len(spec(k).classes) * len(spec(k).templates) for k in EXPECTED) == 9938
    # ELEVATER's label order, not alphabetical; caltech keeps its double space.
    assert spec("cifar100").classes[:3] == ("chimpanzee", "trout", "skunk")
    caltech = spec("caltech101").classes
    assert (caltech[4], caltech[16], caltech[37]) == (
        "background",
        "side of a car",
        "centered face",
    )
    assert "head of a  crocodile" in caltech
    assert spec("fer2013").classes[0] == "angry"  # the first of its synonyms
    assert spec("cifar10").templates == spec("cifar100").templates
    assert spec("kitti-distance").center_crop is False
    assert all(spec(k).center_crop for k in EXPECTED if k != "kitti-distance")
    assert spec("voc2007classification").multilabel
    assert spec("gtsrb").labelmap == "labelmap.txt"
    assert spec("stanfordcar").classes[0] == "Acura Integra Type R 2001"
    assert spec("cifar10").prompts(0)[0] == "a photo of a airplane."


def test_unknown_key_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="cifar10"):
        spec("imagenet-1k")
