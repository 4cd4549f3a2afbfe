"""Words for the object-level stages, on the built-in lexicon: object names and their synonyms
and plurals, colours, spatial relation phrases, caption markup stripping and the left/right
(up/down) rewrite.

The pieces live by responsibility: ``stages.lexicon`` (the :class:`~stages.lexicon.Lexicon`
and user lexicon files), ``stages.lexicon_words`` (the built-in vocabulary),
``stages.spatial_words`` (relation phrases, mirror rewrite), ``stages.caption_markup``. This
module keeps the names the stages and tests import, bound to ``DEFAULT_LEXICON``; a stage with
a user lexicon calls the same methods on its own :class:`~stages.lexicon.Lexicon`.
"""

from __future__ import annotations

from collections.abc import Iterable

from stages.caption_markup import BOX_TAG_RE, caption_texts, strip_markup
from stages.lexicon import DEFAULT_LEXICON, LabelProfile, Lexicon, Mention, label_words, load_lexicon
from stages.lexicon_words import ATTRIBUTES, COLOURS, IRREGULAR_PLURALS, NEGATIONS, OBJECT_SYNONYMS
from stages.spatial_words import (
    ABSOLUTE_RE,
    ABSOLUTE_WORDS,
    AXIS,
    FRAME_WORDS,
    HORIZONTAL_SWAPS,
    RELATIVE_RE,
    RELATIVE_WORDS,
    VERTICAL_SWAPS,
    relative_relation,
    rewrite_left_right,
    rewrite_up_down,
)

__all__ = [
    "ABSOLUTE_RE", "ABSOLUTE_WORDS", "ATTRIBUTES", "AXIS", "BOX_TAG_RE", "COLOURS", "DEFAULT_LEXICON",
    "FRAME_WORDS", "HORIZONTAL_SWAPS", "IRREGULAR_PLURALS", "NEGATIONS", "OBJECT_SYNONYMS", "RELATIVE_RE",
    "RELATIVE_WORDS", "VERTICAL_SWAPS", "LabelProfile", "Lexicon", "Mention", "canonical_object",
    "caption_texts", "find_object_mentions", "find_sample_mentions", "label_profile", "label_words",
    "load_lexicon", "matching_boxes", "plural", "relative_relation", "rewrite_left_right", "rewrite_up_down",
    "strip_markup", "surface_forms",
]


def plural(word: str) -> str:
    """English plural of a one- or two-word name (the last word is inflected)."""
    return DEFAULT_LEXICON.plural(word)


def surface_forms() -> dict[str, tuple[str, bool]]:
    """Every surface form (lower case) -> (canonical object name, is plural)."""
    return DEFAULT_LEXICON.forms


def _ascii_spans(text: str) -> Iterable[tuple[int, int, str]]:
    return DEFAULT_LEXICON._ascii_spans(text)


def _regex_spans(text: str) -> Iterable[tuple[int, int, str]]:
    return DEFAULT_LEXICON._regex_spans(text)


def find_object_mentions(text: str) -> list[Mention]:
    return DEFAULT_LEXICON.find_object_mentions(text)


def canonical_object(label: str) -> str:
    return DEFAULT_LEXICON.canonical_object(label)


def label_profile(label: str) -> LabelProfile:
    return DEFAULT_LEXICON.label_profile(label)


def find_sample_mentions(text: str, profiles: list[LabelProfile]) -> list[Mention]:
    return DEFAULT_LEXICON.find_sample_mentions(text, profiles)


def matching_boxes(mention: Mention, profiles: list[LabelProfile]) -> list[int]:
    return DEFAULT_LEXICON.matching_boxes(mention, profiles)
