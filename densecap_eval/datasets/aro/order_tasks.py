"""ARO's COCO-Order and Flickr30k-Order, with the shuffled captions built once and stored.

Each caption of the Karpathy test split (`densecap_eval.datasets.aro.order_loader`) is a test case
with five options: the cleaned caption, then its four shuffles (`densecap_eval.tasks.textshuffle`,
ARO's order); answer 0, decided by numpy's ``argmax`` (rule ``first``: a tie counts as right),
averaged plainly: ``precision_at_1`` (ARO's ``Precision@1``) and ``n``.

Reproducibility: ARO draws the shuffles from the global RNGs after ``seed_all(1)`` and the
DCI reference never seeds, so their options change between runs and tagger versions. Here the
options of every caption are built ONCE per (annotation file fingerprint, seed, tagger name and
version, tokenizer name and version) with ``np.random.RandomState(seed)`` and
``random.Random(seed)`` drawn in ARO's order over every record of the file (so the options do
not depend on which photos are present; ``--seed 1`` draws what ARO's main_aro.py draws when
nothing else touched the global RNGs). They are written atomically to a JSON file under
``<cache dir>/aro-order/`` and every later run with the same key reads that file instead, so
two runs score the same options (``use_cache`` is about embeddings and does not apply). The
metrics record ``seed``, ``tagger``, ``tokenizer`` and ``options_sha256`` (of the scored
examples' ids and options). With no example left, those are None.

The tagger and tokenizer come from the `TEXT_TOOLS` registry entry named by
``DEFAULT_TEXT_TOOLS`` (``spacy+nltk``: spaCy ``en_core_web_sm`` tags, NLTK ``word_tokenize``,
the optional extra ``densecap-eval[aro]``). Without them, preparing these tasks raises a
one-line `DensecapError` saying what to install; they are needed only while options are built,
but their versions are part of the key, so the packages must be installed either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from densecap_eval.core.errors import BadRecordError, DensecapError, TaskUnavailableError
from densecap_eval.core.registry import Registry
from densecap_eval.datasets.records import SkippedImage
from densecap_eval.datasets.regions import Region
from densecap_eval.tasks.choice import ChoiceExample, ChoiceTask
from densecap_eval.tasks.textshuffle import ORDER_MAX_WORDS, Tagger, Tokenizer, order_options

log = logging.getLogger(__name__)

PROTOCOL = "aro-order-seeded"
STORE_DIR = "aro-order"
STORE_SCHEMA = "densecap-eval/aro-order-options/1"
RNG = "numpy.random.RandomState(seed), random.Random(seed); ARO's draw order"
SPACY_MODEL = "en_core_web_sm"
TASK_NAMES = "aro/coco_order and aro/flickr30k_order"
INSTALL_ARO = "pip install 'densecap-eval[aro]'"
INSTALL_SPACY_MODEL = f"python -m spacy download {SPACY_MODEL}"


@dataclass(frozen=True)
class TextTools:
    """A tagger and a word tokenizer, named with their versions (the names are part of the
    stored options' key); ``load`` builds them, and is called only when options are built."""

    tagger_name: str
    tokenizer_name: str
    load: Callable[[], tuple[Tagger, Tokenizer]]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def spacy_nltk_tools() -> TextTools:
    """ARO's tools: spaCy ``en_core_web_sm`` (``token.text``, ``token.tag_``) and NLTK
    ``word_tokenize``; raises a one-line `DensecapError` naming the install command when one is
    missing (the NLTK data is checked when the tools are loaded)."""
    spacy_version, nltk_version = _version("spacy"), _version("nltk")
    if spacy_version is None or nltk_version is None:
        missing = [n for n, v in (("spaCy", spacy_version), ("NLTK", nltk_version)) if v is None]
        verb = "are" if len(missing) > 1 else "is"
        raise TaskUnavailableError(
            f"{TASK_NAMES} need spaCy with {SPACY_MODEL} and NLTK to shuffle captions, and "
            f"{' and '.join(missing)} {verb} not installed: {INSTALL_ARO} && {INSTALL_SPACY_MODEL}"
        )
    model_version = _version(SPACY_MODEL)
    if model_version is None:
        raise TaskUnavailableError(
            f"{TASK_NAMES} need spaCy's {SPACY_MODEL} model to tag captions, and it is not "
            f"installed: {INSTALL_SPACY_MODEL} (spaCy itself comes with {INSTALL_ARO})"
        )

    def load() -> tuple[Tagger, Tokenizer]:
        return _load_spacy(model_version), _load_nltk(nltk_version)

    return TextTools(
        f"spacy/{SPACY_MODEL} {model_version} (spacy {spacy_version})",
        f"nltk word_tokenize {nltk_version}",
        load,
    )


def _load_spacy(model_version: str) -> Tagger:
    try:
        import spacy

        nlp = spacy.load(SPACY_MODEL)
    except ImportError as exc:
        raise TaskUnavailableError(
            f"{TASK_NAMES}: spaCy does not import ({exc}): {INSTALL_ARO} && {INSTALL_SPACY_MODEL}"
        ) from None
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskUnavailableError(
            f"{TASK_NAMES}: spaCy cannot load {SPACY_MODEL} ({first}): {INSTALL_SPACY_MODEL}"
        ) from None
    loaded = str(nlp.meta.get("version", ""))
    if loaded != model_version:
        raise TaskUnavailableError(
            f"{TASK_NAMES}: spaCy loaded {SPACY_MODEL} {loaded or '(no version)'} but the "
            f"installed package is {model_version}; reinstall it: {INSTALL_SPACY_MODEL}"
        )

    def tagger(text: str) -> list[tuple[str, str]]:
        return [(token.text, token.tag_) for token in nlp(text)]

    return tagger


_NLTK_RESOURCE = re.compile(r"Resource\s+(?:\x1b\[[0-9;]*m)?([A-Za-z0-9_]+)")


def nltk_resource(message: str, nltk_version: str) -> str:
    """The NLTK data a `LookupError` message asks for (``punkt_tab`` since NLTK 3.8.2,
    ``punkt`` before), for the download hint."""
    found = _NLTK_RESOURCE.search(message)
    if found:
        return found.group(1)
    parts = tuple(int(p) for p in re.findall(r"\d+", nltk_version)[:3])
    return "punkt_tab" if parts >= (3, 8, 2) else "punkt"


def _load_nltk(nltk_version: str) -> Tokenizer:
    try:
        from nltk.tokenize import word_tokenize
    except ImportError as exc:
        raise TaskUnavailableError(
            f"{TASK_NAMES}: NLTK does not import ({exc}): {INSTALL_ARO}"
        ) from None
    try:
        word_tokenize("A dog runs. A cat sleeps.")
    except LookupError as exc:
        resource = nltk_resource(str(exc), nltk_version)
        raise TaskUnavailableError(
            f"{TASK_NAMES}: NLTK's word_tokenize needs its {resource} data, which is not "
            f"installed: python -m nltk.downloader {resource}"
        ) from None
    tokenizer: Tokenizer = word_tokenize
    return tokenizer


TEXT_TOOLS: Registry[Callable[[], TextTools]] = Registry("ARO order text tools")
TEXT_TOOLS.register("spacy+nltk", spacy_nltk_tools)
DEFAULT_TEXT_TOOLS = "spacy+nltk"  # read at build time (tests point it at a fake)


# --- stored options ---------------------------------------------------------------------------


def case_id(image: str, index: int) -> str:
    """A test case's id: the record's stored image path and the caption's index in it."""
    return f"{image}#{index}"


def options_key(dataset: Any, *, seed: int, tools: TextTools) -> dict[str, Any]:
    """Everything the options depend on; its hash names the stored file."""
    return {
        "schema": STORE_SCHEMA,
        "dataset": dataset.name,
        "annotation_file": dataset.json_name,
        "fingerprint": dataset.fingerprint(dataset.splits()),
        "seed": seed,
        "rng": RNG,
        "tagger": tools.tagger_name,
        "tokenizer": tools.tokenizer_name,
        "max_words": ORDER_MAX_WORDS,
    }


def store_dir() -> Path:
    from densecap_eval.core.paths import default_cache_dir

    return default_cache_dir() / STORE_DIR


def stored_options_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return store_dir() / f"{key['dataset']}-seed{key['seed']}-{digest}.json"


def build_options(
    dataset: Any, *, seed: int, tagger: Tagger, tokenizer: Tokenizer
) -> dict[str, tuple[str, ...]]:
    """Every caption's five options (`order_options`), drawn in file order: ``{case id:
    options}``. Pure given the dataset's annotations, the seed and the tools."""
    if not 0 <= seed < 2**32:
        raise DensecapError(f"the ARO order tasks need a seed in [0, 2**32), got {seed}")
    np_rng, py_rng = np.random.RandomState(seed), random.Random(seed)
    out: dict[str, tuple[str, ...]] = {}
    for rec in dataset.annotations():
        for i, caption in enumerate(rec.captions):
            out[case_id(rec.image, i)] = order_options(
                caption, tagger=tagger, tokenizer=tokenizer, np_rng=np_rng, py_rng=py_rng
            )
    return out


def stored_options(
    dataset: Any, *, seed: int, tools: TextTools
) -> tuple[dict[str, tuple[str, ...]], Path]:
    """The options for (dataset, seed, tools): read from the stored file when it exists and
    matches, else built (loading the tools) and stored. Returns them and the file's path."""
    key = options_key(dataset, seed=seed, tools=tools)
    path = stored_options_path(key)
    expected = [case_id(r.image, i) for r in dataset.annotations() for i in range(len(r.captions))]
    stored = _read_store(path, key, expected)
    if stored is not None:
        log.info("%s: reusing the stored order options %s", dataset.name, path)
        return stored, path
    log.info("%s: building the order options of %d captions (seed %d, %s, %s)", dataset.name,
             len(expected), seed, tools.tagger_name, tools.tokenizer_name)  # fmt: skip
    tagger, tokenizer = tools.load()
    options = build_options(dataset, seed=seed, tagger=tagger, tokenizer=tokenizer)
    cases = [{"id": cid, "options": list(opts)} for cid, opts in options.items()]
    _write_atomic(path, {"key": key, "cases": cases})
    log.info("%s: stored the order options in %s", dataset.name, path)
    return options, path


def _read_store(
    path: Path, key: dict[str, Any], expected: Sequence[str]
) -> dict[str, tuple[str, ...]] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
        if data["key"] != key:
            raise ValueError("its key differs")
        out = {str(c["id"]): tuple(c["options"]) for c in data["cases"]}
        if list(out) != list(expected):
            raise ValueError("its test cases are not the annotation file's")
        if not all(len(o) == 5 and all(isinstance(s, str) for s in o) for o in out.values()):
            raise ValueError("a test case does not have five text options")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the stored order options %s (%s); building them again", path, exc)
        return None
    return out


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DensecapError(f"cannot store the order options in {path.parent}: {exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=0)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: a concurrent build writes the same bytes
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise DensecapError(f"cannot store the order options in {path}: {exc}") from None
        raise


# --- the tasks ----------------------------------------------------------------------------------


def build_order_examples(
    dataset: Any, split: str | None, seed: int
) -> tuple[list[ChoiceExample], list[SkippedImage]]:
    """The test cases whose photo is present and decodes, with their stored options."""
    from densecap_eval.datasets.photos import photo_size

    dataset.check_split(split)
    tools = TEXT_TOOLS.get(DEFAULT_TEXT_TOOLS)()
    options, _ = stored_options(dataset, seed=seed, tools=tools)
    meta = {"seed": seed, "tagger": tools.tagger_name, "tokenizer": tools.tokenizer_name}
    examples: list[ChoiceExample] = []
    skipped: list[SkippedImage] = []
    for record in dataset.records(split):  # a missing photo is skipped by the loader
        try:
            photo_size(record.image, image=record.id)
        except BadRecordError as exc:
            skipped.append(dataset.skip(exc))
            continue
        for i in range(len(record.texts)):
            cid = case_id(record.id, i)
            examples.append(
                ChoiceExample(cid, record.id, Region(str(record.image)), options[cid], 0, meta=meta)
            )
    return examples, skipped


def options_sha256(examples: Sequence[ChoiceExample]) -> str:
    """sha256 over the examples' ids and options, in order: equal digests, equal options."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.id, list(ex.options)], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def order_metrics(correct: np.ndarray, examples: Sequence[ChoiceExample]) -> dict[str, Any]:
    """ARO's ``Precision@1`` (the share of test cases whose true caption wins; a tie counts as
    right) and what identifies the options: seed, tagger, tokenizer, options digest."""
    meta = examples[0].meta if examples else {}
    return {
        "precision_at_1": float(correct.mean()) if len(correct) else None,
        "seed": meta.get("seed"),
        "tagger": meta.get("tagger"),
        "tokenizer": meta.get("tokenizer"),
        "options_sha256": options_sha256(examples) if examples else None,
    }


def _task(name: str, dataset: str, title: str) -> ChoiceTask:
    return ChoiceTask(
        name=name,
        protocol=PROTOCOL,
        description=(
            f"ARO {title}: each Karpathy-test caption against its four word-order shuffles "
            "(built once per seed and tagger, stored), argmax; precision@1"
        ),
        dataset=dataset,
        build=build_order_examples,
        rule="first",
        aggregate=order_metrics,
        flag="precision_at_1",
        default_split="test",
    )


COCO_ORDER = _task("aro/coco_order", "aro-coco", "COCO-Order")
FLICKR30K_ORDER = _task("aro/flickr30k_order", "aro-flickr30k", "Flickr30k-Order")
