"""Placeholder grammar v1 (DESIGN.md): how markers are written, and the reference linter.

* The markers: sentinels, pad and discrete tokens, :func:`span` for a well-formed span, and
  :data:`ESCAPED_PATTERN`, every escaped form of a sentinel or token (HTML entities, unicode
  escapes, percent-encoding, full-width brackets).
* :func:`lint_content` walks the markers of one row and names the first violation precisely
  (rule + sentence). It is the reference: it decides every rule and writes every rejection
  message; the batch linter (:class:`schemas.placeholders.PlaceholderLinter`) sends it only the
  rows it flags, and ``tests/schemas/test_placeholders.py`` holds the two equal with hypothesis.

Decisions beyond DESIGN.md: span bodies hold tokens only (no whitespace); token ids are written
without leading zeros; an unknown ``<|name|>`` marker is a violation; a ``<box>`` label is
non-empty; a document whose ``content`` is still empty (not yet interleaved) skips the
span-count rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

MODALITIES = ("image", "audio", "video")
TOKEN_PREFIX = {"image": "IMG", "audio": "AUD", "video": "VID"}
PREFIX_MODALITY = {v: k for k, v in TOKEN_PREFIX.items()}
DEFAULT_VOCAB = 8192


def start_sentinel(modality: str) -> str:
    return f"<|{modality}_start|>"


def end_sentinel(modality: str) -> str:
    return f"<|{modality}_end|>"


def pad_token(modality: str) -> str:
    return f"<|{modality}_pad|>"


def discrete_token(modality: str, n: int) -> str:
    return f"<{TOKEN_PREFIX[modality]}_TK_{n}>"


def span(modality: str, num_tokens: int = 1, ids: Sequence[int] | None = None) -> str:
    """A well-formed span: pads by default, discrete tokens when ``ids`` are given."""
    body = "".join(discrete_token(modality, i) for i in ids) if ids else pad_token(modality) * num_tokens
    return start_sentinel(modality) + body + end_sentinel(modality)


# Anything that looks like a sentinel or token in escaped form: HTML entities (also double
# escaped), JSON/Python unicode escapes, percent-encoding, full-width and small-form brackets.
_NAMES = r"(?:image|audio|video)_(?:start|end|pad)"
# ASCII whitespace only: Python's \s also matches NBSP and other Unicode spaces, RE2's does not.
_WS = r"[ \t\n\r\f\v]"
_OPEN_ESC = r"(?:&(?:amp;)*lt;|&(?:amp;)*#0*60;|&(?:amp;)*#x0*3c;|\\+u003c|\\+x3c|%3c|＜|﹤|〈)"
_CLOSE_ESC = r"(?:&(?:amp;)*gt;|&(?:amp;)*#0*62;|&(?:amp;)*#x0*3e;|\\+u003e|\\+x3e|%3e|＞|﹥|〉)"
_PIPE_ESC = r"(?:｜|&(?:amp;)*#124;|&(?:amp;)*vert;|%7c|\\+u007c)"
_PIPE = rf"(?:\||{_PIPE_ESC})"
ESCAPED_PATTERN = (
    rf"(?i)(?:{_OPEN_ESC}{_WS}*{_PIPE}{_WS}*{_NAMES}|<{_WS}*{_PIPE_ESC}{_WS}*{_NAMES}|<{_WS}+\|{_WS}*{_NAMES}"
    rf"|{_NAMES}{_WS}*{_PIPE}{_WS}*{_CLOSE_ESC}|{_NAMES}{_WS}*{_PIPE_ESC}{_WS}*>|{_NAMES}{_WS}*\|{_WS}+>"
    rf"|(?:&(?:amp;)*lt;|\\+u003c|＜)(?:IMG|AUD|VID)_TK_)"
)
ESCAPED_RE = re.compile(ESCAPED_PATTERN)
_LITERAL_RE = re.compile(rf"<\|{_NAMES}\|>")

# Reference tokenizer: known markers, malformed tokens and unknown <|...|> markers.
_MARKER_RE = re.compile(r"<\|(?P<name>[A-Za-z0-9_]*)\|>|<(?P<prefix>[A-Z]{3})_TK_(?P<num>[^<>]*)>|<(?P<box>/?box)>")
_CANONICAL_INT = re.compile(r"0|[1-9][0-9]*")
_ASCII_SPACE = " \t\n\f\r\v"  # one definition of "blank" for Python re, RE2 and str.strip


class Violation(NamedTuple):
    rule: str
    detail: str


def _escape_kind(text: str) -> str:
    low = text.lower()
    if low.startswith("&") or "&" in low:
        return "HTML-escaped"
    if "\\" in low:
        return "unicode-escaped"
    if "%" in low:
        return "percent-encoded"
    return "full-width"


def _escaped_violation(match: re.Match[str]) -> Violation:
    found = match.group(0)
    name = re.search(r"(image|audio|video)_(start|end|pad)|(IMG|AUD|VID)_TK_", found)
    what = f"{name.group(2)} sentinel" if name and name.group(2) else "token"
    return Violation("escaped_sentinel", f"{_escape_kind(found)} {what} {found!r} at offset {match.start()}")


def lint_content(
    content: str,
    media: Sequence[tuple[str, int | None]],
    vocab: Mapping[str, int],
    *,
    check_span_count: bool = True,
) -> Violation | None:
    """Return the first violation of grammar v1 in one row, or None.

    ``media`` lists the row's media refs in order as ``(modality, num_tokens or None)``.
    """
    escaped = ESCAPED_RE.search(content)
    if escaped:
        return _escaped_violation(escaped)
    spans: list[tuple[str, int]] = []
    open_mod: str | None = None
    body_kind: str | None = None
    count = 0
    box_at: int | None = None
    last_end = 0
    for m in _MARKER_RE.finditer(content):
        between = content[last_end : m.start()]
        last_end = m.end()
        tok = m.group(0)
        if open_mod is not None and between:
            return Violation(
                "text_in_span", f"text {between[:20]!r} inside the {open_mod} span at offset {m.start() - len(between)}"
            )
        if m.group("box"):
            if open_mod is not None:
                return Violation("box_in_span", f"{tok} inside the {open_mod} span at offset {m.start()}")
            if tok == "<box>":
                if box_at is not None:
                    return Violation("box_nested", f"<box> inside another <box> at offset {m.start()}")
                box_at = m.end()
            else:
                if box_at is None:
                    return Violation("box_unpaired", f"</box> without <box> at offset {m.start()}")
                if not content[box_at : m.start()].strip(_ASCII_SPACE):
                    return Violation("box_empty", f"empty <box></box> at offset {m.start()}")
                box_at = None
            continue
        if m.group("prefix") is not None:
            modality = PREFIX_MODALITY.get(m.group("prefix"))
            num = m.group("num")
            if modality is None or not _CANONICAL_INT.fullmatch(num):
                return Violation("malformed_token", f"malformed token {tok!r} at offset {m.start()}")
            if open_mod is None:
                return Violation(
                    "token_outside_span", f"missing {start_sentinel(modality)} before {tok} at offset {m.start()}"
                )
            if modality != open_mod:
                return Violation("wrong_modality", f"{tok} inside the {open_mod} span at offset {m.start()}")
            if body_kind == "pad":
                return Violation("mixed_body", f"{tok} mixed with pad tokens in the {open_mod} span")
            size = vocab.get(modality, DEFAULT_VOCAB)
            # By length first: int() refuses a literal of 4,300+ digits (and a long one is over anyway).
            if len(num) > len(str(size)) or int(num) >= size:
                shown = num if len(num) <= 24 else f"{num[:12]}...({len(num)} digits)"
                return Violation("vocab", f"token id {shown} >= {modality} vocab {size}")
            body_kind, count = "token", count + 1
            continue
        name = m.group("name")
        modality, _, role = name.rpartition("_")
        if modality not in MODALITIES or role not in ("start", "end", "pad"):
            return Violation("unknown_sentinel", f"unknown sentinel {tok!r} at offset {m.start()}")
        if box_at is not None:
            return Violation("span_in_box", f"{tok} inside a <box> tag at offset {m.start()}")
        if role == "start":
            if open_mod is not None:
                return Violation("nested_span", f"{tok} inside the open {open_mod} span at offset {m.start()}")
            open_mod, body_kind, count = modality, None, 0
        elif role == "pad":
            if open_mod is None:
                return Violation(
                    "token_outside_span", f"missing {start_sentinel(modality)} before {tok} at offset {m.start()}"
                )
            if modality != open_mod:
                return Violation("wrong_modality", f"{tok} inside the {open_mod} span at offset {m.start()}")
            if body_kind == "token":
                return Violation("mixed_body", f"{tok} mixed with discrete tokens in the {open_mod} span")
            body_kind, count = "pad", count + 1
        else:
            if open_mod is None:
                return Violation(
                    "unpaired_end", f"missing {start_sentinel(modality)} before {tok} at offset {m.start()}"
                )
            if modality != open_mod:
                return Violation("mismatched_end", f"{open_mod} span closed by {tok} at offset {m.start()}")
            if count == 0:
                return Violation("empty_span", f"empty {modality} span at offset {m.start()}")
            spans.append((modality, count))
            open_mod = None
    if open_mod is not None:
        return Violation("unclosed_span", f"missing {end_sentinel(open_mod)}")
    if box_at is not None:
        return Violation("box_unpaired", "<box> without </box>")
    return _check_spans_against_media(spans, media, check_span_count)


def _check_spans_against_media(
    spans: Sequence[tuple[str, int]], media: Sequence[tuple[str, int | None]], check_count: bool
) -> Violation | None:
    for modality in MODALITIES:
        lengths = [n for mod, n in spans if mod == modality]
        refs = [t for mod, t in media if mod == modality]
        if check_count and len(lengths) != len(refs):
            return Violation("span_count", f"{len(lengths)} {modality} span(s) for {len(refs)} {modality} media ref(s)")
        for k, (length, expected) in enumerate(zip(lengths, refs, strict=False)):
            if expected is not None and length != expected:
                return Violation(
                    "num_tokens",
                    f"{modality} span {k + 1} has {length} tokens, its media ref says num_tokens={expected}",
                )
    return None
