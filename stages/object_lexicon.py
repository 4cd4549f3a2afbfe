"""Words for the object-level stages: object names and their synonyms and plurals, colours,
spatial relation phrases, caption markup stripping and the left/right (up/down) rewrite.

Pure functions only; nothing here reads a row. Every word match uses word boundaries, so
"bright" is not "right" and "squares" is a plural of "square", not "square" plus noise.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple

COLOURS: frozenset[str] = frozenset(
    "red green blue yellow orange purple violet pink brown black white grey gray cyan magenta"
    " teal gold golden silver beige navy maroon olive".split()
)
# Adjectives that may stand between a determiner and an object name ("the small red circle").
ATTRIBUTES: frozenset[str] = frozenset(
    "small large big tiny huge little bright dark light pale striped dotted solid hollow filled"
    " outlined round".split()
)
# Canonical object -> synonyms (singular). Two-word names are matched before one-word names.
# Colour words (e.g. "orange") are deliberately not object names: "the triangle is orange".
OBJECT_SYNONYMS: dict[str, tuple[str, ...]] = {
    # synthetic shapes
    "circle": ("disc", "disk", "dot"), "square": (), "rectangle": ("oblong",), "triangle": (),
    "star": (), "ellipse": ("oval",), "hexagon": (), "pentagon": (), "diamond": ("rhombus",),
    "cross": (), "heart": (),
    # everyday objects (COCO-like)
    "person": ("man", "woman", "child", "boy", "girl", "people", "pedestrian", "kid"),
    "bicycle": ("bike",), "car": ("automobile",), "motorcycle": ("motorbike",),
    "airplane": ("plane", "aeroplane", "jet"), "bus": (), "train": (), "truck": ("lorry",),
    "boat": ("ship",), "traffic light": ("traffic signal",), "fire hydrant": ("hydrant",),
    "stop sign": (), "bench": (), "bird": (), "cat": ("kitten",), "dog": ("puppy",),
    "horse": ("pony",), "sheep": ("lamb",), "cow": ("cattle",), "elephant": (), "bear": (),
    "zebra": (), "giraffe": (), "umbrella": (), "suitcase": ("luggage",),
    "sports ball": ("ball", "football", "baseball"), "kite": (), "bottle": (), "cup": ("mug",),
    "bowl": (), "banana": (), "apple": (), "pizza": (), "cake": (), "chair": (),
    "couch": ("sofa",), "bed": (), "dining table": ("table",), "tv": ("television",),
    "laptop": ("notebook computer",), "cell phone": ("phone", "smartphone", "mobile phone"),
    "book": (), "clock": (), "vase": (), "teddy bear": ("teddy",),
    # medical findings
    "lesion": (), "nodule": (), "fracture": (), "mass": (),
}
IRREGULAR_PLURALS: dict[str, str] = {
    "man": "men", "woman": "women", "child": "children", "person": "persons",
    "sheep": "sheep", "cattle": "cattle", "people": "people", "mouse": "mice", "knife": "knives",
    "luggage": "luggage",
}
NEGATIONS: frozenset[str] = frozenset({"no", "not", "without", "nor", "never"})


def plural(word: str) -> str:
    """English plural of a one- or two-word name (the last word is inflected)."""
    head, _, last = word.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        form = IRREGULAR_PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        form = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        form = last[:-1] + "ies"
    else:
        form = last + "s"
    return f"{head} {form}" if head else form


@functools.lru_cache(maxsize=1)
def surface_forms() -> dict[str, tuple[str, bool]]:
    """Every surface form (lower case) -> (canonical object name, is plural)."""
    forms: dict[str, tuple[str, bool]] = {}
    for canonical, synonyms in OBJECT_SYNONYMS.items():
        for name in (canonical, *synonyms):
            forms.setdefault(plural(name), (canonical, True))
            forms[name] = (canonical, name in ("people", "cattle"))
    return forms


def _alternation(words: Iterable[str]) -> str:
    ordered = sorted(set(words), key=lambda w: (-len(w), w))
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)


@functools.lru_cache(maxsize=1)
def _mention_re() -> re.Pattern[str]:
    return re.compile(rf"\b(?:{_alternation(surface_forms())})\b", re.IGNORECASE)


class Mention(NamedTuple):
    """One object name in a text: character span, canonical name, plural flag, and the
    colour/attribute words directly before it ("small red")."""

    start: int
    end: int
    canonical: str
    plural: bool
    modifiers: tuple[str, ...]
    negated: bool


_WORD_RE = re.compile(r"[A-Za-z]+")


def _preceding_words(text: str, start: int, n: int) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text[max(0, start - 80):start])][-n:]


_WORD_TOKEN_RE = re.compile(r"\w+")


@functools.lru_cache(maxsize=1)
def _forms_by_first_word() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """First word of a surface form -> (its words, the form), longest form first: the order in
    which ``_mention_re``'s alternation tries the forms that can start at one word."""
    by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for form in sorted(surface_forms(), key=lambda w: (-len(w), w)):
        words = tuple(form.split(" "))
        by_first.setdefault(words[0], []).append((words, form))
    return by_first


def _ascii_spans(text: str) -> Iterable[tuple[int, int, str]]:
    """``(start, end, surface form)`` of every lexicon match in an ASCII ``text``: what
    ``_mention_re().finditer`` finds, by word lookup instead of a 200-way alternation (about
    6x faster, ``benchmarks/bench_lexicon.py``). A form can only start where a word starts (it
    begins with a letter after a word boundary), its words must be whole words (runs of word
    characters) in order with only whitespace between them, and matches do not overlap."""
    by_first = _forms_by_first_word()
    tokens = [(m.start(), m.end(), m.group(0).lower()) for m in _WORD_TOKEN_RE.finditer(text)]
    i = 0
    while i < len(tokens):
        for words, form in by_first.get(tokens[i][2], ()):
            n = len(words)
            if i + n <= len(tokens) and all(
                tokens[i + k][2] == words[k] and text[tokens[i + k - 1][1]:tokens[i + k][0]].isspace()
                for k in range(1, n)
            ):
                yield tokens[i][0], tokens[i + n - 1][1], form
                i += n
                break
        else:
            i += 1


def _regex_spans(text: str) -> Iterable[tuple[int, int, str]]:
    for m in _mention_re().finditer(text):
        yield m.start(), m.end(), re.sub(r"\s+", " ", m.group(0).lower())


def find_object_mentions(text: str) -> list[Mention]:
    """Object names in ``text`` (longest match first, case-insensitive, word boundaries).
    Non-ASCII text goes through the regex, whose case-insensitive Unicode matching (the Kelvin
    sign is a "k") the word lookup does not reproduce."""
    forms = surface_forms()
    mentions: list[Mention] = []
    for start, end, surface in _ascii_spans(text) if text.isascii() else _regex_spans(text):
        canonical, is_plural = forms[surface]
        before = _preceding_words(text, start, 4)
        modifiers: list[str] = []
        for word in reversed(before):
            if word in COLOURS or word in ATTRIBUTES:
                modifiers.insert(0, word)
            else:
                break
        rest = before[: len(before) - len(modifiers)]
        negated = bool(rest) and (rest[-1] in NEGATIONS or (
            len(rest) > 1 and rest[-2] in NEGATIONS and rest[-1] in ("a", "an", "any")))
        mentions.append(Mention(start, end, canonical, is_plural, tuple(modifiers), negated))
    return mentions


def label_words(label: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD_RE.findall(label))


def canonical_object(label: str) -> str:
    """Canonical object of a box label: its last object name ("small red circle" -> "circle");
    a label without a known object name is its own canonical name (lower case, single spaces)."""
    mentions = find_object_mentions(label)
    if mentions:
        return mentions[-1].canonical
    return " ".join(label_words(label))


class LabelProfile(NamedTuple):
    """What a box label says: canonical object and colour words."""

    canonical: str
    colours: frozenset[str]
    known: bool  # the canonical object is in OBJECT_SYNONYMS


@functools.lru_cache(maxsize=4096)
def label_profile(label: str) -> LabelProfile:
    """Cached: box labels come from a small vocabulary and repeat on every row."""
    canonical = canonical_object(label)
    colours = frozenset(w for w in label_words(label) if w in COLOURS)
    return LabelProfile(canonical, colours, canonical in OBJECT_SYNONYMS)


def find_sample_mentions(text: str, profiles: list[LabelProfile]) -> list[Mention]:
    """Lexicon mentions plus literal mentions of the sample's labels that the lexicon lacks."""
    mentions = find_object_mentions(text)
    extra = sorted({p.canonical for p in profiles if not p.known and p.canonical}, key=len,
                   reverse=True)
    if extra:
        taken = [(m.start, m.end) for m in mentions]
        pattern = re.compile(rf"\b(?:{_alternation(extra)})\b", re.IGNORECASE)
        for m in pattern.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            canonical = re.sub(r"\s+", " ", m.group(0).lower())
            mentions.append(Mention(m.start(), m.end(), canonical, False, (), False))
            taken.append((m.start(), m.end()))
        mentions.sort()
    return mentions


def matching_boxes(mention: Mention, profiles: list[LabelProfile]) -> list[int]:
    """Indices of the boxes a mention can name: same canonical object, and every colour the
    mention states is a colour of the label ("red circle" names "red circle", not "blue circle")."""
    colours = {w for w in mention.modifiers if w in COLOURS}
    return [i for i, p in enumerate(profiles)
            if p.canonical == mention.canonical and colours <= p.colours]


# ---- caption markup ---------------------------------------------------------------------
_SPAN_RE = re.compile(r"<\|(image|audio|video)_start\|>.*?<\|\1_end\|>", re.DOTALL)
_TOKEN_RE = re.compile(r"<\|[a-z_]+\|>|<(?:IMG|AUD|VID)_TK_\d+>")
BOX_TAG_RE = re.compile(r"<box>(.*?)</box>", re.DOTALL)


def strip_markup(content: str) -> str:
    """Caption text of ``content``: media spans and stray tokens removed, ``<box>x</box>`` -> x.
    Removed characters become spaces so that character offsets of the words are kept."""
    def blank(m: re.Match[str]) -> str:
        return " " * len(m.group(0))

    text = _SPAN_RE.sub(blank, content)
    text = _TOKEN_RE.sub(blank, text)
    return BOX_TAG_RE.sub(lambda m: "     " + m.group(1) + "      ", text)


def caption_texts(content: str | None, captions: Iterable[str | None] | None) -> list[str]:
    """The content (markup stripped) followed by the extra captions, skipping empty ones."""
    texts = [strip_markup(content)] if content else []
    texts.extend(c for c in (captions or ()) if c)
    return [t for t in texts if t.strip()]


# ---- spatial phrases ---------------------------------------------------------------------
_SIDE_NOUN = r"(?:\s+(?:side|half|part|edge|corner|area|region))?"
_PREP = r"(?:(?:on|at|in|to|towards?)\s+)?(?:the\s+)?(?:(?:far|very)\s+)?"
# Relative: "<subject> (on the) left (side) of <object>", "above", "in front of", ...
RELATIVE_RE = re.compile(
    rf"\b(?:{_PREP}(?P<side>left|right)(?:[- ]hand)?{_SIDE_NOUN}\s+of"
    r"|(?:on\s+)?(?P<topbot>top|bottom)\s+of"
    r"|(?P<word>above|over|atop|below|under|beneath|behind|in\s+front\s+of))\b",
    re.IGNORECASE,
)
# Absolute (relative to the frame): "on the right", "in the top left corner", "at the bottom".
ABSOLUTE_RE = re.compile(
    r"\b(?:on|at|in|to|towards?)\s+the\s+(?:(?:far|very)\s+)?"
    r"(?P<p1>left|right|top|bottom|upper|lower)(?:[- ]hand)?"
    r"(?:[\s-]+(?P<p2>left|right))?(?:[- ]hand)?"
    rf"{_SIDE_NOUN}\b",
    re.IGNORECASE,
)
FRAME_WORDS: frozenset[str] = frozenset(
    {"image", "picture", "photo", "photograph", "frame", "scene", "canvas", "film", "view"})
# Normalised relation names: subject is <rel> of object (relative) or in <rel> part (absolute).
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


def relative_relation(match: re.Match[str]) -> str:
    key = match.group("side") or match.group("topbot") or match.group("word")
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
    return re.compile(rf"\b(?:{_alternation(table)})\b", re.IGNORECASE), table


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
