"""The open vocabulary of the object stages: a :class:`Lexicon` of object names (canonical name
-> synonyms), colours, attribute words, irregular plurals and relation words, and the word
matching the object stages and CHAIR are built on.

``DEFAULT_LEXICON`` holds the built-in words (``stages.lexicon_words``: the sample world's
shapes, the 80 COCO categories with their synonyms and plurals, medical findings). A user
lexicon file merges into it (:func:`load_lexicon`), YAML or JSON::

    objects:                 # canonical name -> synonyms; an existing name gains the synonyms
      traffic cone: [cone, pylon]
      lesion: [opacity, infiltrate]
    colours: [amber, crimson]
    attributes: [dented, faded]
    plurals: {pylon: pylons} # irregular plurals (regular ones are derived)
    relations:               # relation phrase -> left|right|above|below|front|behind
      superior to: above
      anterior to: front

Every word match uses word boundaries, so "bright" is not "right" and "squares" is a plural of
"square". A lexicon is immutable once built and pickles with the stage that holds it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from stages import lexicon_words as words
from stages.spatial_words import RELATIONS, alternation, relative_pattern, relative_relation

_WORD_RE = re.compile(r"[A-Za-z]+")
_WORD_TOKEN_RE = re.compile(r"\w+")


class LexiconError(ValueError):
    """A user lexicon file that cannot be used (the message names the file and the key)."""


class Mention(NamedTuple):
    """One object name in a text: character span, canonical name, plural flag, and the
    colour/attribute words directly before it ("small red")."""

    start: int
    end: int
    canonical: str
    plural: bool
    modifiers: tuple[str, ...]
    negated: bool


class LabelProfile(NamedTuple):
    """What a box label says: canonical object and colour words."""

    canonical: str
    colours: frozenset[str]
    known: bool  # the canonical object is one of the lexicon's objects


def plural_of(word: str, irregular: Mapping[str, str]) -> str:
    """English plural of a one- or two-word name (the last word is inflected)."""
    head, _, last = word.rpartition(" ")
    if last in irregular:
        form = irregular[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        form = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        form = last[:-1] + "ies"
    else:
        form = last + "s"
    return f"{head} {form}" if head else form


class Lexicon:
    """Object names, colours, attributes, plurals and relation words (module docstring)."""

    def __init__(self, objects: Mapping[str, Iterable[str]], colours: Iterable[str], attributes: Iterable[str],
                 plurals: Mapping[str, str], relations: Mapping[str, str] | None = None,
                 plural_only: Iterable[str] = (), collective: Iterable[str] = ()) -> None:
        self.objects: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in objects.items()}
        self.colours = frozenset(colours)
        self.attributes = frozenset(attributes)
        self.plurals = dict(plurals)
        self.relations = dict(relations or {})
        self.plural_only = frozenset(plural_only)
        self.collective = frozenset(collective)
        forms: dict[str, tuple[str, bool]] = {}
        for canonical, synonyms in self.objects.items():
            for name in (canonical, *synonyms):
                forms.setdefault(self.plural(name), (canonical, True))
                if name not in self.plural_only:
                    forms[name] = (canonical, name in self.collective)
        self.forms = forms
        by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for form in sorted(forms, key=lambda w: (-len(w), w)):
            parts = tuple(form.split(" "))
            by_first.setdefault(parts[0], []).append((parts, form))
        self._by_first = by_first
        self._mention_re = re.compile(rf"\b(?:{alternation(forms)})\b", re.IGNORECASE)
        self.relative_re = relative_pattern(self.relations)
        self._profiles: dict[str, LabelProfile] = {}

    # ---- building -----------------------------------------------------------------------
    def merged(self, spec: Mapping[str, Any], where: str = "lexicon") -> Lexicon:
        """A new lexicon: this one plus the words of a user lexicon ``spec`` (module docstring)."""
        unknown = set(spec) - {"objects", "colours", "colors", "attributes", "plurals", "relations"}
        if unknown:
            raise LexiconError(f"{where}: unknown key(s) {sorted(unknown)} (objects, colours, attributes, "
                               "plurals, relations)")
        objects = {k: list(v) for k, v in self.objects.items()}
        for name, synonyms in _mapping(spec.get("objects"), f"{where}: objects").items():
            key = _phrase(name, f"{where}: objects")
            extra = [_phrase(s, f"{where}: objects.{name}") for s in _strings(synonyms, f"{where}: objects.{name}")]
            objects[key] = list(dict.fromkeys([*objects.get(key, []), *extra]))
        relations = dict(self.relations)
        for phrase, rel in _mapping(spec.get("relations"), f"{where}: relations").items():
            if rel not in RELATIONS:
                raise LexiconError(f"{where}: relations.{phrase}: {rel!r} is not one of {sorted(RELATIONS)}")
            relations[_phrase(phrase, f"{where}: relations")] = str(rel)
        plurals = {**self.plurals, **{_phrase(k, f"{where}: plurals"): _phrase(v, f"{where}: plurals.{k}")
                                      for k, v in _mapping(spec.get("plurals"), f"{where}: plurals").items()}}
        colours = [_phrase(c, f"{where}: colours") for c in
                   _strings(spec.get("colours", spec.get("colors")), f"{where}: colours")]
        attributes = [_phrase(a, f"{where}: attributes")
                      for a in _strings(spec.get("attributes"), f"{where}: attributes")]
        return Lexicon(objects, self.colours | set(colours), self.attributes | set(attributes), plurals,
                       relations, self.plural_only, self.collective)

    # ---- words --------------------------------------------------------------------------
    def plural(self, word: str) -> str:
        return plural_of(word, self.plurals)

    def _ascii_spans(self, text: str) -> Iterable[tuple[int, int, str]]:
        """``(start, end, surface form)`` of every match in an ASCII ``text``, by word lookup
        instead of a many-way alternation (about 6x faster, ``benchmarks/bench_lexicon.py``).
        A form starts where a word starts, its words are whole words in order with only
        whitespace between them, and matches do not overlap."""
        tokens = [(m.start(), m.end(), m.group(0).lower()) for m in _WORD_TOKEN_RE.finditer(text)]
        i = 0
        while i < len(tokens):
            for parts, form in self._by_first.get(tokens[i][2], ()):
                n = len(parts)
                if i + n <= len(tokens) and all(
                    tokens[i + k][2] == parts[k] and text[tokens[i + k - 1][1]:tokens[i + k][0]].isspace()
                    for k in range(1, n)
                ):
                    yield tokens[i][0], tokens[i + n - 1][1], form
                    i += n
                    break
            else:
                i += 1

    def _regex_spans(self, text: str) -> Iterable[tuple[int, int, str]]:
        for m in self._mention_re.finditer(text):
            yield m.start(), m.end(), re.sub(r"\s+", " ", m.group(0).lower())

    def find_object_mentions(self, text: str) -> list[Mention]:
        """Object names in ``text`` (longest match first, case-insensitive, word boundaries).
        Non-ASCII text goes through the regex, whose case-insensitive Unicode matching (the
        Kelvin sign is a "k") the word lookup does not reproduce."""
        mentions: list[Mention] = []
        spans = self._ascii_spans(text) if text.isascii() else self._regex_spans(text)
        for start, end, surface in spans:
            canonical, is_plural = self.forms[surface]
            before = [w.lower() for w in _WORD_RE.findall(text[max(0, start - 80):start])][-4:]
            modifiers: list[str] = []
            for word in reversed(before):
                if word in self.colours or word in self.attributes:
                    modifiers.insert(0, word)
                else:
                    break
            rest = before[: len(before) - len(modifiers)]
            negated = bool(rest) and (rest[-1] in words.NEGATIONS or (
                len(rest) > 1 and rest[-2] in words.NEGATIONS and rest[-1] in ("a", "an", "any")))
            mentions.append(Mention(start, end, canonical, is_plural, tuple(modifiers), negated))
        return mentions

    def canonical_object(self, label: str) -> str:
        """Canonical object of a box label: its last object name ("small red circle" -> "circle");
        a label without a known object name is its own canonical name (lower case, single spaces)."""
        mentions = self.find_object_mentions(label)
        if mentions:
            return mentions[-1].canonical
        return " ".join(label_words(label))

    def label_profile(self, label: str) -> LabelProfile:
        """Cached: box labels come from a small vocabulary and repeat on every row."""
        found = self._profiles.get(label)
        if found is None:
            canonical = self.canonical_object(label)
            colours = frozenset(w for w in label_words(label) if w in self.colours)
            found = LabelProfile(canonical, colours, canonical in self.objects)
            if len(self._profiles) < 4096:
                self._profiles[label] = found
        return found

    def find_sample_mentions(self, text: str, profiles: list[LabelProfile]) -> list[Mention]:
        """Lexicon mentions plus literal mentions of the sample's labels that the lexicon lacks."""
        mentions = self.find_object_mentions(text)
        extra = sorted({p.canonical for p in profiles if not p.known and p.canonical}, key=len, reverse=True)
        if extra:
            taken = [(m.start, m.end) for m in mentions]
            pattern = re.compile(rf"\b(?:{alternation(extra)})\b", re.IGNORECASE)
            for m in pattern.finditer(text):
                if any(a < m.end() and m.start() < b for a, b in taken):
                    continue
                canonical = re.sub(r"\s+", " ", m.group(0).lower())
                mentions.append(Mention(m.start(), m.end(), canonical, False, (), False))
                taken.append((m.start(), m.end()))
            mentions.sort()
        return mentions

    def matching_boxes(self, mention: Mention, profiles: list[LabelProfile]) -> list[int]:
        """Indices of the boxes a mention can name: same canonical object, and every colour the
        mention states is a colour of the label ("red circle" names "red circle", not "blue
        circle"). A label that states no colour ("car", as COCO labels are) says nothing about
        colour, so any colour the caption gives it is taken as true."""
        colours = {w for w in mention.modifiers if w in self.colours}
        return [i for i, p in enumerate(profiles)
                if p.canonical == mention.canonical and (not p.colours or colours <= p.colours)]

    def relative_relation(self, match: re.Match[str]) -> str:
        return relative_relation(match, self.relations)


def label_words(label: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD_RE.findall(label))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LexiconError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LexiconError(f"{where}: expected a list of words")
    return value


def _phrase(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _WORD_RE.search(value):
        raise LexiconError(f"{where}: {value!r} is not a word or phrase")
    return " ".join(value.lower().split())


DEFAULT_LEXICON = Lexicon(words.OBJECT_SYNONYMS, words.COLOURS, words.ATTRIBUTES, words.IRREGULAR_PLURALS,
                          plural_only=words.PLURAL_ONLY, collective=words.COLLECTIVE)


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> Lexicon:
    import json

    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        spec = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise LexiconError(f"{path}: not {'JSON' if path.endswith('.json') else 'YAML'}: {err}") from None
    if not isinstance(spec, dict):
        raise LexiconError(f"{path}: a lexicon file is a mapping (objects, colours, attributes, plurals, relations)")
    return DEFAULT_LEXICON.merged(spec, path)


def lexicon_field() -> Any:
    """The ``lexicon`` parameter of the stages that match object words."""
    from pydantic import Field

    return Field(default=None, description="YAML/JSON user lexicon file (objects -> synonyms, colours, "
                 "attributes, plurals, relations) merged into the built-in words")


def load_lexicon(path: str | None) -> Lexicon:
    """The built-in lexicon merged with the user lexicon file at ``path`` (None: built-in only)."""
    if path is None:
        return DEFAULT_LEXICON
    p = Path(path)
    if not p.is_file():
        raise LexiconError(f"{path}: lexicon file not found")
    return _load(str(p.resolve()), p.stat().st_mtime_ns)
