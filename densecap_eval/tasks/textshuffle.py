"""ARO's caption perturbations (COCO-Order, Flickr30k-Order) as pure, seeded functions.

Same semantics as ARO (mertyg/vision-language-models-are-bows): ``pre_caption`` is
``dataset_zoo/retrieval.py``'s, the four shuffles are ``dataset_zoo/perturbations.py``'s
``TextShuffler`` methods. Two things differ, on purpose, so that a build is reproducible:

- randomness comes from generators passed in, never from the global ``random`` / ``numpy``
  state: the part-of-speech shuffles take a numpy generator (ARO: ``np.random.permutation``),
  the trigram shuffles a ``random.Random`` (ARO: ``random.shuffle``). A legacy
  ``np.random.RandomState(s)`` and ``random.Random(s)`` draw exactly what ARO's global state
  draws after ``seed_all(s)``, given the same captions in the same order (`order_options`
  draws in ARO's order). RandomState also keeps numpy's stream-compatibility promise across
  numpy versions, which ``Generator`` methods do not make; either is accepted;
- the NLP tools are inputs: a *tagger* (text -> ``[(token, Penn tag), ...]``; ARO: spaCy
  ``en_core_web_sm``, ``token.text`` and ``token.tag_``) and a *tokenizer* (text -> words;
  ARO: ``nltk.word_tokenize``). Their names and versions belong to the options' identity.

Shuffles are applied to the raw caption and ``pre_caption`` afterwards, as ARO does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

import numpy as np

Tagger = Callable[[str], Sequence[tuple[str, str]]]
Tokenizer = Callable[[str], Sequence[str]]
NumpyRNG = np.random.Generator | np.random.RandomState

NOUN_TAGS: frozenset[str] = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJECTIVE_TAGS: frozenset[str] = frozenset({"JJ", "JJR", "JJS"})
ORDER_MAX_WORDS = 30  # ARO COCO_Order / Flickr30k_Order: max_words=30
PERTURBATIONS: tuple[str, ...] = (
    "shuffle_nouns_and_adj",
    "shuffle_allbut_nouns_and_adj",
    "shuffle_within_trigrams",
    "shuffle_trigrams",
)  # ARO's option order after the true caption

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")  # ARO retrieval.py, verbatim as a pattern
_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int = 50) -> str:
    """ARO's caption cleaning: lowercase; each of ``.!"()*#:;~`` becomes a space; any run of two
    or more whitespace characters becomes one space (a lone tab or newline stays); a trailing
    newline, then leading and trailing spaces, are stripped; the first ``max_words`` words
    (split on single spaces) are kept. The order tasks use ``max_words=30``."""
    caption = _PUNCTUATION.sub(" ", caption.lower())
    caption = _SPACES.sub(" ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


def _tokens(tagged: Sequence[tuple[str, str]]) -> np.ndarray:
    # ARO: np.array([token.text ...]): a fixed-width unicode array (dtype=str keeps an empty
    # caption a string array too, where ARO's would be float; " ".join gives "" either way).
    return np.array([token for token, _ in tagged], dtype=str)


def shuffle_nouns_and_adj(caption: str, *, tagger: Tagger, rng: NumpyRNG) -> str:
    """Permute the nouns (NN, NNS, NNP, NNPS) among their positions, then the adjectives (JJ,
    JJR, JJS) among theirs; every other token stays. Tokens are joined by one space."""
    tagged = list(tagger(caption))
    text = _tokens(tagged)
    nouns = [i for i, (_, tag) in enumerate(tagged) if tag in NOUN_TAGS]
    adjectives = [i for i, (_, tag) in enumerate(tagged) if tag in ADJECTIVE_TAGS]
    text[nouns] = rng.permutation(text[nouns])
    text[adjectives] = rng.permutation(text[adjectives])
    return " ".join(text)


def shuffle_allbut_nouns_and_adj(caption: str, *, tagger: Tagger, rng: NumpyRNG) -> str:
    """Permute every token that is neither a noun nor an adjective among those positions;
    nouns and adjectives stay. Tokens are joined by one space."""
    tagged = list(tagger(caption))
    text = _tokens(tagged)
    others = np.ones(len(text), dtype=bool)
    others[[i for i, (_, tag) in enumerate(tagged) if tag in NOUN_TAGS | ADJECTIVE_TAGS]] = False
    text[others] = rng.permutation(text[others])
    return " ".join(text)


def trigrams(tokens: Sequence[str]) -> list[list[str]]:
    """Consecutive groups of three tokens; the last group holds the one or two left over
    (ARO's ``get_trigrams``, from O'Connor and Andreas's context-ablations)."""
    return [list(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]


def shuffle_within_trigrams(caption: str, *, tokenizer: Tokenizer, rng: random.Random) -> str:
    """Tokenize, cut into trigrams, shuffle the words inside each trigram (in order, the last
    partial one included); trigrams keep their places. Joined by single spaces."""
    groups = trigrams(list(tokenizer(caption)))
    for group in groups:
        rng.shuffle(group)
    return " ".join(" ".join(group) for group in groups)


def shuffle_trigrams(caption: str, *, tokenizer: Tokenizer, rng: random.Random) -> str:
    """Tokenize, cut into trigrams, shuffle the order of the trigrams; each keeps its words in
    order. Joined by single spaces."""
    groups = trigrams(list(tokenizer(caption)))
    rng.shuffle(groups)
    return " ".join(" ".join(group) for group in groups)


def order_options(
    caption: str,
    *,
    tagger: Tagger,
    tokenizer: Tokenizer,
    np_rng: NumpyRNG,
    py_rng: random.Random,
    max_words: int = ORDER_MAX_WORDS,
) -> tuple[str, ...]:
    """ARO's five options for one caption: ``pre_caption(caption)``, then ``pre_caption`` of
    each `PERTURBATIONS` shuffle of the raw caption, drawing in ARO's order (answer: 0).

    The caption is tagged once (ARO tags it twice; the tags are the same)."""
    tagged = list(tagger(caption))

    def tagged_once(text: str) -> Sequence[tuple[str, str]]:
        return tagged if text == caption else tagger(text)

    shuffled = (
        shuffle_nouns_and_adj(caption, tagger=tagged_once, rng=np_rng),
        shuffle_allbut_nouns_and_adj(caption, tagger=tagged_once, rng=np_rng),
        shuffle_within_trigrams(caption, tokenizer=tokenizer, rng=py_rng),
        shuffle_trigrams(caption, tokenizer=tokenizer, rng=py_rng),
    )
    return (pre_caption(caption, max_words), *(pre_caption(s, max_words) for s in shuffled))
