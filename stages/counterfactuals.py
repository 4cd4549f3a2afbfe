"""Counterfactual captions: every caption that differs from a given one in exactly one attribute.

``clip_score`` uses them to check a caption against its own alternatives. An absolute score
threshold misses a caption that is mostly right: with three objects in an image, "a small red
circle" where the circle is large still matches two of three objects, and its score stays well
above a threshold that keeps clean captions. The same model nearly always ranks the true
caption above that one, so the check asks: does some single-attribute change of this caption
match the image better (by more than a margin)? If so, the caption is probably wrong in that
attribute, and the alternative that won says how.

The alternatives are enumerated, not sampled, with the words and grammar of the text negatives
(``stages.caption_edits``): each size word to its opposite, each colour word to every other
colour family of ``colours``, each object of a known group to every other object of its group
(no hypernyms: a square is a rectangle), each spatial word to its opposite. Articles follow
(a/an). An alternative whose canonical words equal any caption of the row is dropped (a synonym
or another true caption is not a counterfactual).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple, get_args

from stages.caption_edits import (
    BASIC_COLOURS,
    COLOUR_FAMILY,
    HYPERNYMS,
    OBJECT_SYNONYMS,
    SIZE_OPPOSITE,
    SPATIAL_SWAP,
    canonical_words,
    find_words,
    object_group,
    spatial_words,
    substitute,
)
from stages.object_lexicon import find_object_mentions, plural

Kind = Literal["size", "colour", "object", "spatial"]  # clip_score's ``counterfactuals`` param
KINDS: tuple[str, ...] = get_args(Kind)


class Counterfactual(NamedTuple):
    text: str
    edit: str  # e.g. "size: large -> small"


def _colour(text: str, colours: Sequence[str]) -> Iterable[Counterfactual]:
    for start, end, old in find_words(text, COLOUR_FAMILY):
        for new in colours:
            if COLOUR_FAMILY.get(new, new) != COLOUR_FAMILY[old]:
                yield Counterfactual(substitute(text, start, end, new), f"colour: {old} -> {new}")


def _size(text: str) -> Iterable[Counterfactual]:
    for start, end, old in find_words(text, SIZE_OPPOSITE):
        new = SIZE_OPPOSITE[old]
        yield Counterfactual(substitute(text, start, end, new), f"size: {old} -> {new}")


def _object(text: str) -> Iterable[Counterfactual]:
    for m in find_object_mentions(text):
        surface = re.sub(r"\s+", " ", text[m.start:m.end]).lower()
        for new in sorted(object_group(m.canonical) & frozenset(OBJECT_SYNONYMS)):
            if new == m.canonical or frozenset({new, m.canonical}) in HYPERNYMS:
                continue
            word = plural(new) if m.plural else new
            yield Counterfactual(substitute(text, m.start, m.end, word), f"object: {surface} -> {word}")


def _spatial(text: str) -> Iterable[Counterfactual]:
    for start, end, old in spatial_words(text):
        new = SPATIAL_SWAP[old]
        yield Counterfactual(substitute(text, start, end, new), f"spatial: {old} -> {new}")


def counterfactuals(text: str, kinds: Sequence[str], positives: Sequence[str] = (),
                    colours: Sequence[str] = BASIC_COLOURS) -> list[Counterfactual]:
    """Every single-attribute change of ``text`` of the given ``kinds``, distinct, none equal in
    canonical words to ``text`` or to one of ``positives``."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown counterfactual kinds {sorted(unknown)}; known: {list(KINDS)}")
    made: list[Counterfactual] = []
    for kind in kinds:
        if kind == "size":
            made += _size(text)
        elif kind == "colour":
            made += _colour(text, colours)
        elif kind == "object":
            made += _object(text)
        else:
            made += _spatial(text)
    true = {canonical_words(t) for t in (text, *positives)}
    seen: set[str] = set()
    out = []
    for c in made:
        if c.text not in seen and canonical_words(c.text) not in true:
            seen.add(c.text)
            out.append(c)
    return out
