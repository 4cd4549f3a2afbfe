"""Spatial phrases of captions and the mirror rewrite: relative relations ("left of", "above",
"in front of"), absolute ones ("on the right", "in the top left corner"), frame words, and the
left/right (up/down) swap of a mirrored caption. Pure functions and patterns; no row is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Normalised relation names: subject is <rel> of object (relative) or in <rel> part (absolute).
RELATIONS: frozenset[str] = frozenset({"left", "right", "above", "below", "front", "behind"})
_SIDE_NOUN = r"(?:\s+(?:side|half|part|edge|corner|area|region))?"
_PREP = r"(?:(?:on|at|in|to|towards?)\s+)?(?:the\s+)?(?:(?:far|very)\s+)?"
_RELATIVE_CORE = (
    rf"{_PREP}(?P<side>left|right)(?:[- ]hand)?{_SIDE_NOUN}\s+of"
    r"|(?:on\s+)?(?P<topbot>top|bottom)\s+of"
    r"|(?P<word>above|over|atop|below|under|beneath|behind|in\s+front\s+of)"
)
# Relative: "<subject> (on the) left (side) of <object>", "above", "in front of", ...
RELATIVE_RE = re.compile(rf"\b(?:{_RELATIVE_CORE})\b", re.IGNORECASE)
# Absolute (relative to the frame): "on the right", "at the bottom", "in the top left corner".
ABSOLUTE_RE = re.compile(
    r"\b(?:on|at|in|to|towards?)\s+the\s+(?:(?:far|very)\s+)?"
    r"(?P<p1>left|right|top|bottom|upper|lower)(?:[- ]hand)?"
    r"(?:[\s-]+(?P<p2>left|right))?(?:[- ]hand)?"
    rf"{_SIDE_NOUN}\b",
    re.IGNORECASE,
)
FRAME_WORDS: frozenset[str] = frozenset(
    {"image", "picture", "photo", "photograph", "frame", "scene", "canvas", "film", "view"})
RELATIVE_WORDS: dict[str, str] = {
    "left": "left", "right": "right", "top": "above", "bottom": "below", "above": "above",
    "over": "above", "atop": "above", "below": "below", "under": "below", "beneath": "below",
    "behind": "behind", "in front of": "front",
}
ABSOLUTE_WORDS: dict[str, str] = {
    "left": "left", "right": "right", "top": "above", "upper": "above", "bottom": "below",
    "lower": "below",
}
AXIS: dict[str, str] = {"left": "x", "right": "x", "above": "y", "below": "y", "front": "depth",
                        "behind": "depth"}


def alternation(items: Iterable[str]) -> str:
    """A regex alternation of words and phrases, longest first, any whitespace inside a phrase."""
    ordered = sorted(set(items), key=lambda w: (-len(w), w))
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)


def relative_pattern(extra: Mapping[str, str]) -> re.Pattern[str]:
    """``RELATIVE_RE`` plus a lexicon's own relation phrases (group ``extra``), longest first."""
    if not extra:
        return RELATIVE_RE
    return re.compile(rf"\b(?:(?P<extra>{alternation(extra)})|{_RELATIVE_CORE})\b", re.IGNORECASE)


def relative_relation(match: re.Match[str], extra: Mapping[str, str] | None = None) -> str:
    groups = match.groupdict()
    if groups.get("extra"):
        return (extra or {})[re.sub(r"\s+", " ", groups["extra"].lower())]
    key = groups["side"] or groups["topbot"] or groups["word"]
    return RELATIVE_WORDS[re.sub(r"\s+", " ", key.lower())]


# ---- mirror rewrite --------------------------------------------------------------------------
HORIZONTAL_SWAPS: tuple[tuple[str, str], ...] = (
    ("left", "right"), ("leftmost", "rightmost"), ("lefthand", "righthand"),
)
VERTICAL_SWAPS: tuple[tuple[str, str], ...] = (
    ("above", "below"), ("over", "under"), ("top", "bottom"), ("upper", "lower"),
    ("topmost", "bottommost"), ("atop", "beneath"), ("in front of", "behind"),
)


def _swap_re(pairs: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    table = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    return re.compile(rf"\b(?:{alternation(table)})\b", re.IGNORECASE), table


_H_RE, _H_TABLE = _swap_re(HORIZONTAL_SWAPS)
_V_RE, _V_TABLE = _swap_re(VERTICAL_SWAPS)


def _case_like(model: str, word: str) -> str:
    if model.isupper() and any(c.isalpha() for c in model):
        return word.upper()
    if model[:1].isupper() and (len(model) == 1 or model[1:] == model[1:].lower()):
        return word[:1].upper() + word[1:]
    return word  # lower case, or mixed case that has no faithful counterpart


def _rewrite(text: str, pattern: re.Pattern[str], table: dict[str, str]) -> str:
    def swap(m: re.Match[str]) -> str:
        found = m.group(0)
        return _case_like(found, table[re.sub(r"\s+", " ", found.lower())])

    return pattern.sub(swap, text)


def rewrite_left_right(text: str) -> str:
    """Swap left/right words (word boundaries, case preserved): the caption of a horizontal
    mirror."""
    return _rewrite(text, _H_RE, _H_TABLE)


def rewrite_up_down(text: str) -> str:
    """Swap above/below, top/bottom, in front of/behind: the caption of a vertical mirror (depth
    follows the ground-plane rule of ``object_spatial``: nearer objects stand lower)."""
    return _rewrite(text, _V_RE, _V_TABLE)
