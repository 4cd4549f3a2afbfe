"""Caption edits: one-word changes of a caption's meaning, and the canonical form that tells a
changed caption from a paraphrase.

The rules behind the text negatives (``stages.negatives_text``) and the counterfactual captions
(``stages.counterfactuals``), all from ``stages.object_lexicon``'s words:

- ``replace_colour`` / ``replace_size`` / ``replace_count`` / ``replace_object`` /
  ``replace_spatial``: exactly one word (or count) changes to one of another meaning: another
  colour family, the opposite size, another number, another object of the same group (never a
  synonym nor a hypernym: square -> rectangle is true of a square), the opposite side
  (left/right, above/below). The article before it follows (a/an), a count that leaves one
  inflects its noun and the verb after it.
- ``swap_nouns`` / ``swap_adjectives`` (NegCLIP/ARO word order): two object names, or two
  colour or two size words, trade places; each keeps its position's number and article.

:func:`canonical_words` (articles dropped, synonyms mapped to one word) is how a result is
compared with the positive captions: equal canonical words = the same meaning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np

from stages.object_lexicon import (
    ABSOLUTE_RE,
    COLOURS,
    HORIZONTAL_SWAPS,
    OBJECT_SYNONYMS,
    RELATIVE_RE,
    VERTICAL_SWAPS,
    Mention,
    caption_texts,
    find_object_mentions,
    plural,
    surface_forms,
)

# Colour families: replacing within a family is a synonym ("grey" / "gray"), not a negative.
COLOUR_FAMILY: dict[str, str] = {
    "red": "red", "maroon": "red", "green": "green", "olive": "green", "blue": "blue", "navy": "blue",
    "cyan": "cyan", "teal": "cyan", "yellow": "yellow", "gold": "yellow", "golden": "yellow",
    "orange": "orange", "purple": "purple", "violet": "purple", "pink": "pink", "magenta": "pink",
    "brown": "brown", "beige": "brown", "black": "black", "white": "white", "grey": "grey",
    "gray": "grey", "silver": "grey",
}
BASIC_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown",
                                  "black", "white", "grey")
SIZE_OPPOSITE: dict[str, str] = {"small": "large", "large": "small", "little": "big", "big": "little",
                                 "tiny": "huge", "huge": "tiny"}
SIZE_FAMILY: dict[str, str] = {"small": "small", "little": "small", "tiny": "small", "large": "large",
                               "big": "large", "huge": "large"}
SHAPE_OBJECTS: frozenset[str] = frozenset(
    "circle square rectangle triangle star ellipse hexagon pentagon diamond cross heart".split())
MEDICAL_OBJECTS: frozenset[str] = frozenset({"lesion", "nodule", "fracture", "mass"})
# Replacements that would still be true of the original object (a square is a rectangle).
HYPERNYMS: frozenset[frozenset[str]] = frozenset(
    {frozenset({"square", "rectangle"}), frozenset({"circle", "ellipse"}), frozenset({"square", "diamond"})})
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
GENERIC_NOUNS: frozenset[str] = frozenset({"shape", "object", "item", "thing", "figure"})
SPATIAL_SWAP: dict[str, str] = {a: b for a, b in HORIZONTAL_SWAPS + VERTICAL_SWAPS} | {
    b: a for a, b in HORIZONTAL_SWAPS + VERTICAL_SWAPS}
SPATIAL_CANONICAL: dict[str, str] = {"over": "above", "atop": "above", "under": "below", "beneath": "below",
                                     "upper": "top", "lower": "bottom"}
AGREEMENT: dict[str, str] = {"is": "are", "was": "were", "has": "have"}
Strategy = Literal["replace_colour", "replace_size", "replace_count", "replace_object", "replace_spatial",
                   "swap_nouns", "swap_adjectives"]
_WORD_RE = re.compile(r"[A-Za-z]+|\d+")


class TextNegative(NamedTuple):
    text: str
    strategy: str
    edit: str  # e.g. "colour: red -> blue"


def match_case(model: str, word: str) -> str:
    """``word`` in the case of ``model`` (lower, Capitalised or UPPER)."""
    if model.isupper() and len(model) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if model[:1].isupper() else word


def indefinite_article(word: str) -> str:
    w = word.lower()
    if w.startswith(("hour", "honest", "honour", "heir")):
        return "an"
    if w.startswith(("uni", "use", "usu", "uti", "eu", "one", "once")):
        return "a"
    return "an" if w[:1] in "aeiou8" else "a"


def substitute(text: str, start: int, end: int, new: str) -> str:
    """Replace ``text[start:end]`` with ``new`` (case of the old word) and fix an article right before it."""
    new = match_case(text[start:end], new)
    before = text[:start]
    art = re.search(r"\b([Aa]n?)(\s+)$", before)
    if art:
        fixed = match_case(art.group(1), indefinite_article(new))
        before = before[:art.start(1)] + fixed + art.group(2)
    return before + new + text[end:]


def _swap(text: str, a: tuple[int, int, str], b: tuple[int, int, str]) -> str:
    """Put ``a``'s new word at ``a`` and ``b``'s at ``b`` (spans given as (start, end, new))."""
    first, second = sorted((a, b))
    text = substitute(text, *second)
    return substitute(text, *first)


def find_words(text: str, vocabulary: dict[str, str] | frozenset[str]) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0).lower()) for m in _WORD_RE.finditer(text)
            if m.group(0).lower() in vocabulary]


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _replace_one(text: str, rng: np.random.Generator, found: list[tuple[int, int, str]], strategy: str,
                 what: str, choose: Callable[[str], str]) -> TextNegative | None:
    if not found:
        return None
    start, end, old = _pick(rng, found)
    new = choose(old)
    return TextNegative(substitute(text, start, end, new), strategy, f"{what}: {old} -> {new}")


def replace_colour(text: str, rng: np.random.Generator) -> TextNegative | None:
    return _replace_one(text, rng, find_words(text, COLOUR_FAMILY), "replace_colour", "colour", lambda old: _pick(
        rng, [c for c in BASIC_COLOURS if COLOUR_FAMILY[c] != COLOUR_FAMILY[old]]))


def replace_size(text: str, rng: np.random.Generator) -> TextNegative | None:
    return _replace_one(text, rng, find_words(text, SIZE_OPPOSITE), "replace_size", "size", SIZE_OPPOSITE.__getitem__)


def _singular(surface: str) -> str:
    forms = surface_forms()
    canonical, is_plural = forms.get(surface, (surface, False))
    if not is_plural:
        return surface
    for name in (canonical, *OBJECT_SYNONYMS.get(canonical, ())):
        if plural(name) == surface and not forms[name][1]:  # "people" is its own plural
            return name
    return canonical


def _head_noun(text: str, pos: int, mentions: list[Mention]) -> tuple[int, int, bool] | None:
    """The noun a count word at ``pos`` counts: (start, end, is plural), skipping adjectives."""
    for m in _WORD_RE.finditer(text, pos):
        word = m.group(0).lower()
        if word in COLOURS or word in SIZE_FAMILY:
            continue
        for mention in mentions:
            if mention.start == m.start():
                return mention.start, mention.end, mention.plural
        if word in GENERIC_NOUNS or word.rstrip("s") in GENERIC_NOUNS:
            return m.start(), m.end(), word not in GENERIC_NOUNS
        return None
    return None


def replace_count(text: str, rng: np.random.Generator) -> TextNegative | None:
    mentions = find_object_mentions(text)
    found = []
    for start, end, word in find_words(text, frozenset(NUMBERS[1:]) | frozenset(str(i) for i in range(1, 100))):
        head = _head_noun(text, end, mentions)
        if head is not None:
            found.append((start, end, word, head))
    if not found:
        return None
    start, end, word, (h_start, h_end, head_plural) = _pick(rng, found)
    n = int(word) if word.isdigit() else NUMBERS.index(word)
    if n == 1 and head_plural:
        return None
    new_n = _pick(rng, [c for c in (2, 3, 4, 5) if c != n])
    new_word = str(new_n) if word.isdigit() else NUMBERS[new_n]
    if n == 1:  # one X is -> two Xs are: the noun and the verb right after it follow
        after = text[h_end:]
        verb = re.match(r"(\s+)([A-Za-z]+)\b", after)
        if verb and verb.group(2).lower() in AGREEMENT:
            after = (after[:verb.start(2)] + match_case(verb.group(2), AGREEMENT[verb.group(2).lower()])
                     + after[verb.end(2):])
        noun = re.sub(r"\s+", " ", text[h_start:h_end])
        text = text[:h_start] + match_case(noun, plural(noun.lower())) + after
    return TextNegative(substitute(text, start, end, new_word), "replace_count", f"count: {word} -> {new_word}")


def object_group(canonical: str) -> frozenset[str]:
    if canonical in SHAPE_OBJECTS:
        return SHAPE_OBJECTS
    if canonical in MEDICAL_OBJECTS:
        return MEDICAL_OBJECTS
    return frozenset(OBJECT_SYNONYMS) - SHAPE_OBJECTS - MEDICAL_OBJECTS


def replace_object(text: str, rng: np.random.Generator) -> TextNegative | None:
    mentions = find_object_mentions(text)
    if not mentions:
        return None
    m = _pick(rng, mentions)
    options = sorted(c for c in object_group(m.canonical) & frozenset(OBJECT_SYNONYMS)
                     if c != m.canonical and frozenset({c, m.canonical}) not in HYPERNYMS)
    if not options:
        return None
    new = _pick(rng, options)
    surface = re.sub(r"\s+", " ", text[m.start:m.end])
    new_surface = plural(new) if m.plural else new
    return TextNegative(substitute(text, m.start, m.end, new_surface), "replace_object",
                        f"object: {surface.lower()} -> {new_surface}")


def spatial_words(text: str) -> list[tuple[int, int, str]]:
    spans: dict[int, tuple[int, int, str]] = {}
    for pattern, groups in ((RELATIVE_RE, ("side", "word")), (ABSOLUTE_RE, ("p1", "p2"))):
        for m in pattern.finditer(text):
            for g in groups:
                if m.group(g) is not None:
                    key = re.sub(r"\s+", " ", m.group(g).lower())
                    if key in SPATIAL_SWAP:
                        spans[m.start(g)] = (m.start(g), m.end(g), key)
    return [spans[k] for k in sorted(spans)]


def replace_spatial(text: str, rng: np.random.Generator) -> TextNegative | None:
    return _replace_one(text, rng, spatial_words(text), "replace_spatial", "spatial", SPATIAL_SWAP.__getitem__)


def swap_nouns(text: str, rng: np.random.Generator) -> TextNegative | None:
    mentions = find_object_mentions(text)
    pairs = [(a, b) for i, a in enumerate(mentions) for b in mentions[i + 1:] if a.canonical != b.canonical]
    if not pairs:
        return None
    a, b = _pick(rng, pairs)

    def word_for(slot: Mention, source: Mention) -> str:
        surface = _singular(re.sub(r"\s+", " ", text[source.start:source.end].lower()))
        return plural(surface) if slot.plural else surface

    new = _swap(text, (a.start, a.end, word_for(a, b)), (b.start, b.end, word_for(b, a)))
    return TextNegative(new, "swap_nouns", f"nouns: {a.canonical} <-> {b.canonical}")


def swap_adjectives(text: str, rng: np.random.Generator) -> TextNegative | None:
    pairs = []
    for family in (COLOUR_FAMILY, SIZE_FAMILY):
        found = find_words(text, family)
        pairs += [(x, y) for i, x in enumerate(found) for y in found[i + 1:] if family[x[2]] != family[y[2]]]
    if not pairs:
        return None
    (s1, e1, w1), (s2, e2, w2) = _pick(rng, pairs)
    return TextNegative(_swap(text, (s1, e1, w2), (s2, e2, w1)), "swap_adjectives", f"adjectives: {w1} <-> {w2}")


STRATEGIES: dict[Strategy, Callable[[str, np.random.Generator], TextNegative | None]] = {
    "replace_colour": replace_colour, "replace_size": replace_size, "replace_count": replace_count,
    "replace_object": replace_object, "replace_spatial": replace_spatial, "swap_nouns": swap_nouns,
    "swap_adjectives": swap_adjectives,
}


def canonical_words(text: str) -> tuple[str, ...]:
    """A caption's meaning-bearing words: lower case, no articles or punctuation, object
    synonyms -> canonical name (``+pl`` when plural), colour and size words -> their family,
    spatial synonyms and number words -> one form. Equal tuples = near-duplicate captions."""
    out: list[str] = []
    pos = 0
    for mention in find_object_mentions(text) + [Mention(len(text), len(text), "", False, (), False)]:
        for m in _WORD_RE.finditer(text[pos:mention.start]):
            w = m.group(0).lower()
            if w in ("a", "an", "the"):
                continue
            w = COLOUR_FAMILY.get(w) or SIZE_FAMILY.get(w) or SPATIAL_CANONICAL.get(w, w)
            out.append(str(NUMBERS.index(w)) if w in NUMBERS else w)
        if mention.canonical:
            out.append(mention.canonical + ("+pl" if mention.plural else ""))
        pos = mention.end
    return tuple(out)


def clean_caption(text: str) -> str:
    """One space between words and none before punctuation (stripped markup leaves both)."""
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split()))


def positive_captions(row: dict[str, Any]) -> list[str]:
    """A row's positive captions: its content (markup stripped) and its captions, cleaned."""
    return [clean_caption(c) for c in caption_texts(row.get("content"), row.get("captions"))]


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))
