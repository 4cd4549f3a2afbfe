"""Placeholder grammar v1 (DESIGN.md) and its linter.

Two implementations of the same rules:

* :func:`lint_content` walks the markers of one row and names the first violation precisely
  (rule + sentence). It is the reference and produces every rejection message.
* :class:`PlaceholderLinter` checks whole batches fast: one compiled, possessive regular
  expression per row decides "valid" at C speed (no Python loop over characters or tokens),
  plus one regex search for escaped sentinels. Only rows it flags go to the reference for their
  message. ``tests/schemas/test_placeholders.py`` holds the two equal with hypothesis.

Decisions beyond DESIGN.md: span bodies hold tokens only (no whitespace); token ids are written
without leading zeros; an unknown ``<|name|>`` marker is a violation; a ``<box>`` label is
non-empty; a document whose ``content`` is still empty (not yet interleaved) skips the
span-count rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
_ESCAPED_RE = re.compile(ESCAPED_PATTERN)
_LITERAL_RE = re.compile(rf"<\|{_NAMES}\|>")

# Reference tokenizer: known markers, malformed tokens and unknown <|...|> markers.
_MARKER_RE = re.compile(r"<\|(?P<name>[A-Za-z0-9_]*)\|>|<(?P<prefix>[A-Z]{3})_TK_(?P<num>[^<>]*)>|<(?P<box>/?box)>")
_CANONICAL_INT = re.compile(r"0|[1-9][0-9]*")
_ASCII_SPACE = " \t\n\f\r\v"  # one definition of "blank" for Python re, RE2 and str.strip
_RE2_MARKER = r"<\|[A-Za-z0-9_]*\|>|<[A-Z]{3}_TK_[^<>]*>|</?box>"


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
    escaped = _ESCAPED_RE.search(content)
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
            if int(num) >= vocab.get(modality, DEFAULT_VOCAB):
                return Violation("vocab", f"token id {num} >= {modality} vocab {vocab.get(modality, DEFAULT_VOCAB)}")
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


def _below_regex(limit: int) -> str:
    """Regex matching canonical decimal integers 0 <= n < limit (limit >= 1)."""
    top = str(limit)
    alternatives = ["0"] if limit > 0 else []
    if len(top) > 1:
        alternatives.append(f"[1-9][0-9]{{0,{len(top) - 2}}}" if len(top) > 2 else "[1-9]")
    for i, digit in enumerate(top):
        d = int(digit)
        low = 1 if i == 0 else 0
        if d - 1 >= low:
            rest = len(top) - i - 1
            cls = f"[{low}-{d - 1}]"
            alternatives.append(top[:i] + cls + (f"[0-9]{{{rest}}}" if rest else ""))
    # "0" counted twice when limit has one digit; harmless in an alternation
    return "(?:" + "|".join(alternatives) + ")"


@dataclass
class PlaceholderLinter:
    """Batch linter for one vocabulary configuration (compiled once, reused for every row)."""

    vocab: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, DEFAULT_VOCAB))

    def __post_init__(self) -> None:
        self.vocab = {m: int(self.vocab.get(m, DEFAULT_VOCAB)) for m in MODALITIES}
        marker_start = r"<(?:\|[A-Za-z0-9_]*\|>|[A-Z]{3}_TK_[^<>]*>|/?box>)"
        text = rf"(?:[^<]++|(?!{marker_start})<)++"
        spans = []
        for m in MODALITIES:
            tok = rf"<{TOKEN_PREFIX[m]}_TK_{_below_regex(self.vocab[m])}>"
            spans.append(rf"<\|{m}_start\|>(?:(?:{tok})++|(?:<\|{m}_pad\|>)++)<\|{m}_end\|>")
        box = rf"<box>(?=[\t\n\f\r \v]*+[^<\t\n\f\r \v])(?:[^<]++|(?!{marker_start})<)++</box>"
        self._valid = re.compile(rf"(?:{text}|{'|'.join(spans)}|{box})*+", re.DOTALL)
        re2_spans = []
        for m in MODALITIES:
            tok = rf"<{TOKEN_PREFIX[m]}_TK_{_below_regex(self.vocab[m])}>"
            re2_spans.append(rf"<\|{m}_start\|>(?:(?:{tok})+|(?:<\|{m}_pad\|>)+)<\|{m}_end\|>")
        # RE2 has no lookahead: valid spans and boxes are cut out, then nothing marker-like may remain
        self._re2_valid_parts = "|".join(re2_spans) + r"|<box>[^<]*[^<\t\n\f\r \v][^<]*</box>"
        self._bodies = re.compile(r"<\|(image|audio|video)_start\|>(.*?)<\|\1_end\|>", re.DOTALL)

    def check(
        self,
        content: str,
        media: Sequence[tuple[str, int | None]],
        *,
        check_span_count: bool = True,
    ) -> Violation | None:
        """Fast verdict for one row; equal to :func:`lint_content` on every input."""
        if self._fast_ok(content, media, check_span_count):
            return None
        return lint_content(content, media, self.vocab, check_span_count=check_span_count) or Violation(
            "internal", "fast and reference linters disagree"
        )

    def _fast_ok(
        self, content: str, media: Sequence[tuple[str, int | None]], check_count: bool, escaped_checked: bool = False
    ) -> bool:
        if not escaped_checked and _ESCAPED_RE.search(content):
            return False
        if not self._valid.fullmatch(content):
            return False
        if not media and "<|" not in content:
            return True
        if check_count:
            for m in MODALITIES:
                if content.count(f"<|{m}_start|>") != sum(1 for mod, _ in media if mod == m):
                    return False
        if any(n is not None for _, n in media):
            per_mod: dict[str, list[int]] = {m: [] for m in MODALITIES}
            for sm in self._bodies.finditer(content):
                per_mod[sm.group(1)].append(sm.group(2).count("<"))
            for m in MODALITIES:
                expected = [n for mod, n in media if mod == m]
                for length, want in zip(per_mod[m], expected, strict=False):
                    if want is not None and want != length:
                        return False
        return True

    def check_many(
        self,
        contents: Sequence[str | None],
        media: Sequence[Sequence[tuple[str, int | None]]],
        kinds: Sequence[str | None] | None = None,
    ) -> list[Violation | None]:
        """Row-by-row verdicts for Python lists (the reference for :meth:`check_columns`)."""
        out: list[Violation | None] = []
        for i, content in enumerate(contents):
            if content is None:
                out.append(Violation("missing_content", "content is null"))
                continue
            kind = kinds[i] if kinds is not None else None
            out.append(self.check(content, media[i], check_span_count=not (kind == "document" and content == "")))
        return out

    def check_columns(
        self, content: pa.Array | pa.ChunkedArray, media: pa.Array | pa.ChunkedArray, kind: pa.Array | pa.ChunkedArray
    ) -> list[Violation | None]:
        """Verdicts for Arrow columns, vectorised with RE2 (pyarrow compute) in two threads.

        A row passes the fast path when it has no escaped form, its span counts match its media
        refs, and nothing marker-like is left once its valid spans and ``<box>`` tags are cut
        out. Every other row goes to :func:`lint_content`, which decides and writes the message,
        so the fast path may only err towards flagging (a property test holds it there)."""
        content, media, kind = (
            c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in (content, media, kind)
        )
        n = len(content)
        half = (n + 1) // 2
        if n >= 4096:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:  # pyarrow kernels release the GIL
                parts = list(
                    pool.map(lambda s: self._flag(content[s], media[s], kind[s]), [slice(0, half), slice(half, n)])
                )
            flagged = np.concatenate([p[0] for p in parts])
            exempt = np.concatenate([p[1] for p in parts])
        else:
            flagged, exempt = self._flag(content, media, kind)
        out: list[Violation | None] = [None] * n
        for i in np.flatnonzero(flagged).tolist():
            text = content[i].as_py()
            if text is None:
                out[i] = Violation("missing_content", "content is null")
                continue
            refs = media[i].as_py() or []
            out[i] = lint_content(
                text, [(r["modality"], r.get("num_tokens")) for r in refs], self.vocab, check_span_count=not exempt[i]
            )
        return out

    def _flag(self, content: pa.Array, media: pa.Array, kind: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """``(rows the reference must see, rows exempt from span counts)`` for one slice."""
        n = len(content)
        flagged = pc.fill_null(pc.match_substring_regex(content, ESCAPED_PATTERN), True).to_numpy(zero_copy_only=False)
        rest = pc.replace_substring_regex(content, self._re2_valid_parts, "")
        flagged |= pc.fill_null(pc.match_substring_regex(rest, _RE2_MARKER), True).to_numpy(zero_copy_only=False)
        refs = pc.list_flatten(media)
        parents = pc.list_parent_indices(media).to_numpy()
        modality = refs.field("modality")
        has_num = pc.is_valid(refs.field("num_tokens")).to_numpy(zero_copy_only=False)
        num = pc.fill_null(refs.field("num_tokens"), 0).to_numpy()
        exempt = pc.fill_null(pc.and_(pc.equal(kind, "document"), pc.equal(content, "")), False).to_numpy(
            zero_copy_only=False
        )
        for m in MODALITIES:
            is_m = pc.fill_null(pc.equal(modality, m), False).to_numpy(zero_copy_only=False)
            spans = pc.fill_null(pc.count_substring_regex(content, re.escape(start_sentinel(m))), 0).to_numpy()
            flagged |= (spans != np.bincount(parents[is_m], minlength=n)) & ~exempt
            with_num = np.bincount(parents[is_m & has_num], minlength=n)
            if not with_num.any():
                continue
            # One ref of the modality: its num_tokens must equal the modality's token total.
            # Several refs with num_tokens: the reference checks span by span.
            flagged |= (np.bincount(parents[is_m], minlength=n) > 1) & (with_num > 0)
            single = (with_num == 1) & ~flagged
            if single.any():
                idx = np.flatnonzero(single)
                body = rf"<{TOKEN_PREFIX[m]}_TK_|{re.escape(pad_token(m))}"
                got = pc.count_substring_regex(content.take(pa.array(idx)), body).to_numpy()
                want = np.bincount(parents[is_m & has_num], weights=num[is_m & has_num], minlength=n)[idx]
                flagged[idx[got != want]] = True
        return flagged, exempt
