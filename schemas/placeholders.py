"""The batch placeholder linter: grammar v1 (:mod:`schemas.placeholder_grammar`) on whole columns.

:class:`PlaceholderLinter` checks whole batches fast: one compiled, possessive regular
expression per row decides "valid" at C speed (no Python loop over characters or tokens), plus
one regex search for escaped sentinels; on Arrow columns (:meth:`PlaceholderLinter.check_columns`)
RE2 kernels from pyarrow compute do the same in two threads. Only rows it flags go to the
reference, :func:`~schemas.placeholder_grammar.lint_content`, for their verdict and message, so
the fast path may only err towards flagging. ``tests/schemas/test_placeholders.py`` holds the
two equal with hypothesis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.placeholder_grammar import (
    DEFAULT_VOCAB,
    ESCAPED_PATTERN,
    ESCAPED_RE,
    MODALITIES,
    TOKEN_PREFIX,
    Violation,
    lint_content,
    pad_token,
    start_sentinel,
)

# What is marker-like once valid spans and boxes are cut out (RE2 syntax).
_RE2_MARKER = r"<\|[A-Za-z0-9_]*\|>|<[A-Z]{3}_TK_[^<>]*>|</?box>"


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
        if not escaped_checked and ESCAPED_RE.search(content):
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
