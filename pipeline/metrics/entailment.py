"""Entailment conflicts between the captions of one image: rule-based, on canonical objects.

Two captions of the same image conflict when they say incompatible things about the same
canonical object (``stages.lexicon``: "kitten" is "cat", "disc" is "circle"; a user lexicon adds words):

- ``colour``: exclusive colours of a single object ("a red circle" / "the circle is blue");
- ``count``: different explicit counts with the same modifiers ("two circles" / "three circles");
- ``relation``: opposite relations between two objects (left/right, above/below, on/under,
  in front of/behind), stated either way round ("X left of Y" / "Y left of X");
- ``position``: opposite absolute positions of a single object ("on the left" / "on the right");
- ``presence``: "no X" in one caption, "X" in the other.

Embeddings cannot see these: two captions that differ by one colour word embed almost alike.
Claims about an object that the boxes show more than once (two circles) are ambiguous (each
caption may describe another instance) and are not compared, except counts. Pure functions.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from stages.lexicon import DEFAULT_LEXICON, Lexicon, Mention
from stages.spatial_words import ABSOLUTE_RE, ABSOLUTE_WORDS

CONFLICT_TYPES = ("colour", "count", "relation", "position", "presence")
# Spelling variants that name the same colour; anything else is a different colour.
_COLOUR_ALIASES = {"gray": "grey", "violet": "purple", "golden": "gold"}
_NUMBERS = {
    "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
_WORD_RE = re.compile(r"[A-Za-z]+|\d+")
_SENTENCE_END = re.compile(r"[.;!?\n]")
_NEGATION_BEFORE = re.compile(r"\b(?:not|isn't|aren't|never)\s*$", re.IGNORECASE)
_PREDICATE_COLOUR = re.compile(
    r"\s+(?:is|was|looks|appears|seems)\s+(?:(?:all|entirely|completely|bright|dark|light|pale)\s+)?"
    r"(?P<colour>[A-Za-z]+)\b", re.IGNORECASE)
# "X on (the) Y" (support): not "on the left/right/top", which the spatial patterns own.
_ON_RE = re.compile(r"\b(?:on|onto|upon)\s+(?:the|a|an)\s+(?!left|right|top|bottom|upper|lower)",
                    re.IGNORECASE)
# Canonical relations: (a, r, b) with r in this set; the opposite is stored as (b, r, a).
_FLIP = {"right": "left", "below": "above", "behind": "front"}


def _colour(word: str) -> str:
    word = word.lower()
    return _COLOUR_ALIASES.get(word, word)


@dataclass(frozen=True)
class Claims:
    """What one caption states, keyed by canonical object."""

    colours: dict[str, frozenset[str]] = field(default_factory=dict)  # single-mention objects only
    counts: dict[tuple[str, frozenset[str]], int] = field(default_factory=dict)
    relations: dict[tuple[str, str, str], str] = field(default_factory=dict)  # -> as stated
    positions: dict[tuple[str, str], str] = field(default_factory=dict)  # (object, axis) -> side
    present: frozenset[str] = frozenset()
    absent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Conflict:
    type: str
    subject: str
    detail: str


def _count_before(text: str, mention: Mention) -> int | None:
    """Explicit number directly before a mention's modifiers ("two red circles" -> 2)."""
    words = [w.lower() for w in _WORD_RE.findall(text[max(0, mention.start - 60):mention.start])]
    words = words[: len(words) - len(mention.modifiers)] if mention.modifiers else words
    if not words:
        return None
    last = words[-1]
    if last.isdigit():
        return int(last)
    return _NUMBERS.get(last)


def _same_sentence(text: str, start: int, end: int) -> bool:
    return not _SENTENCE_END.search(text, start, end)


def _nearest_before(mentions: Sequence[Mention], text: str, pos: int) -> Mention | None:
    before = [m for m in mentions if m.end <= pos]
    if not before or not _same_sentence(text, before[-1].end, pos):
        return None
    return before[-1]


def _first_after(mentions: Sequence[Mention], text: str, pos: int) -> Mention | None:
    after = [m for m in mentions if m.start >= pos]
    if not after or not _same_sentence(text, pos, after[0].start):
        return None
    return after[0]


def _add_relation(out: dict[tuple[str, str, str], str], a: Mention, rel: str, b: Mention,
                  words: str) -> None:
    if a.negated or b.negated or a.canonical == b.canonical:
        return
    said = f"{a.canonical} {words.lower()} {b.canonical}"
    if rel in _FLIP:
        out[(b.canonical, _FLIP[rel], a.canonical)] = said
    else:
        out[(a.canonical, rel, b.canonical)] = said


def caption_claims(text: str, lexicon: Lexicon = DEFAULT_LEXICON) -> Claims:
    """The colour, count, relation, position and presence claims of one caption."""
    mentions = lexicon.find_object_mentions(text)
    colour_words = lexicon.colours
    colours: dict[str, set[str]] = {}
    times = Counter(m.canonical for m in mentions if not m.negated)
    plural = {m.canonical for m in mentions if m.plural and not m.negated}
    counts: dict[tuple[str, frozenset[str]], int] = {}
    for m in mentions:
        if m.negated:
            continue
        stated = {_colour(w) for w in m.modifiers if w in colour_words}
        predicate = _PREDICATE_COLOUR.match(text, m.end)
        if predicate and predicate.group("colour").lower() in colour_words:
            stated.add(_colour(predicate.group("colour")))
        if stated:
            colours.setdefault(m.canonical, set()).update(stated)
        n = _count_before(text, m)
        if n is not None:
            counts[(m.canonical, frozenset(m.modifiers))] = n
    relations: dict[tuple[str, str, str], str] = {}
    taken: list[tuple[int, int]] = []
    for match in lexicon.relative_re.finditer(text):
        taken.append(match.span())
        if _NEGATION_BEFORE.search(text[:match.start()]):
            continue  # "not left of" says little about where it is
        a = _nearest_before(mentions, text, match.start())
        b = _first_after(mentions, text, match.end())
        if a and b:
            _add_relation(relations, a, lexicon.relative_relation(match), b, match.group(0))
    for match in _ON_RE.finditer(text):
        if any(s <= match.start() < e for s, e in taken):
            continue
        a = _nearest_before(mentions, text, match.start())
        b = _first_after(mentions, text, match.end())
        if a and b and not _NEGATION_BEFORE.search(text[:match.start()]):
            _add_relation(relations, a, "above", b, match.group(0).strip())
    positions: dict[tuple[str, str], str] = {}
    for match in ABSOLUTE_RE.finditer(text):
        if any(s <= match.start() < e for s, e in taken) or text[match.end():].lstrip().startswith("of "):
            continue
        a = _nearest_before(mentions, text, match.start())
        if a is None or a.negated:
            continue
        for group in ("p1", "p2"):
            word = match.group(group)
            if word:
                side = ABSOLUTE_WORDS[word.lower()]
                positions[(a.canonical, "x" if side in ("left", "right") else "y")] = side
    single = {obj: frozenset(c) for obj, c in colours.items() if times[obj] == 1 and obj not in plural}
    return Claims(
        colours=single, counts=counts, relations=relations, positions=positions,
        present=frozenset(m.canonical for m in mentions if not m.negated),
        absent=frozenset(m.canonical for m in mentions if m.negated),
    )


def pair_conflicts(a: Claims, b: Claims, ambiguous: frozenset[str] = frozenset()) -> list[Conflict]:
    """Conflicts between two captions of one image. ``ambiguous`` objects (more than one box)
    are skipped for colour, relation and position claims."""
    found: list[Conflict] = []
    for obj in sorted(a.colours.keys() & b.colours.keys() - ambiguous):
        if not a.colours[obj] & b.colours[obj]:
            found.append(Conflict("colour", obj, f"{'/'.join(sorted(a.colours[obj]))} {obj} vs "
                                  f"{'/'.join(sorted(b.colours[obj]))} {obj}"))
    for key in sorted(a.counts.keys() & b.counts.keys(), key=lambda k: (k[0], sorted(k[1]))):
        if a.counts[key] != b.counts[key]:
            found.append(Conflict("count", key[0], f"{a.counts[key]} vs {b.counts[key]} {key[0]}"))
    for (x, rel, y), said in sorted(a.relations.items()):
        if not {x, y} & ambiguous and (y, rel, x) in b.relations:
            found.append(Conflict("relation", x, f"{said} vs {b.relations[(y, rel, x)]}"))
    for (obj, axis), side in sorted(a.positions.items()):
        other = b.positions.get((obj, axis))
        if obj not in ambiguous and other is not None and other != side:
            found.append(Conflict("position", obj, f"{obj} {side} vs {obj} {other}"))
    for obj in sorted((a.present & b.absent) | (a.absent & b.present)):
        found.append(Conflict("presence", obj, f"{obj} vs no {obj}"))
    return found


@dataclass
class ConflictCounts:
    """Pair- and image-level totals (add them up across batches)."""

    images: int = 0  # images with at least two captions
    pairs: int = 0
    conflicting_images: int = 0
    conflicting_pairs: int = 0
    pairs_by_type: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def pair_rate(self) -> float | None:
        return self.conflicting_pairs / self.pairs if self.pairs else None

    @property
    def image_rate(self) -> float | None:
        return self.conflicting_images / self.images if self.images else None

    def add(self, other: ConflictCounts, max_examples: int = 20) -> None:
        self.images += other.images
        self.pairs += other.pairs
        self.conflicting_images += other.conflicting_images
        self.conflicting_pairs += other.conflicting_pairs
        self.pairs_by_type.update(other.pairs_by_type)
        self.examples.extend(other.examples[: max(0, max_examples - len(self.examples))])


def image_conflicts(sample_id: str, captions: Sequence[str], box_labels: Iterable[str],
                    max_examples: int = 20, lexicon: Lexicon = DEFAULT_LEXICON) -> ConflictCounts:
    """Every caption pair of one image."""
    out = ConflictCounts()
    if len(captions) < 2:
        return out
    instances = Counter(lexicon.canonical_object(label) for label in box_labels if label)
    ambiguous = frozenset(obj for obj, n in instances.items() if n > 1)
    claims = [caption_claims(c, lexicon) for c in captions]
    out.images = 1
    for i, j in itertools.combinations(range(len(captions)), 2):
        out.pairs += 1
        found = pair_conflicts(claims[i], claims[j], ambiguous)  # symmetric: once per pair
        if not found:
            continue
        out.conflicting_pairs += 1
        out.pairs_by_type.update({c.type for c in found})
        if len(out.examples) < max_examples:
            out.examples.append({"id": sample_id, "type": found[0].type, "detail": found[0].detail,
                                 "caption_a": captions[i], "caption_b": captions[j]})
    out.conflicting_images = int(out.conflicting_pairs > 0)
    return out
