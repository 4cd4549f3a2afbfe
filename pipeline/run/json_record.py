"""One JSON manifest line into a Python object, or a :class:`RecordError` that says why.

The standard parser accepts things a record must not hold, or breaks on them; each is checked
here so that ingest turns it into a rejected row:

- nesting deeper than ``max_depth`` (a thousand levels raise ``RecursionError`` in ``json``):
  counted on the bytes, with the strings cut out, before the parser runs;
- duplicate keys in one object (the parser keeps the last value silently: an id could change);
- lone UTF-16 surrogate escapes (``"\\ud800"``): legal JSON, but no UTF-8 text, so Arrow cannot
  store the string;
- integer literals longer than Python's digit limit (``ValueError``, not ``JSONDecodeError``).

Numbers out of range and non-finite numbers are the record schema's business
(``schemas/records.py``): the parser reads ``NaN`` and ``Infinity`` as floats, as Parquet does.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

DEFAULT_MAX_NESTING_DEPTH = 64  # a valid record nests 4 deep (record > boxes > box > bbox)

# A JSON string, unrolled so that matching is linear: '"' (non-special | escape)* '"'.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class RecordError(ValueError):
    """A line that is not a usable JSON record; ``detail`` names the field where one applies."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def nesting_depth(raw: bytes) -> int:
    """The deepest ``[``/``{`` nesting outside strings (for valid JSON, exactly its depth; for
    broken JSON at least the depth a parser reaches before it fails)."""
    stripped = _STRING.sub(b'""', raw)
    arr = np.frombuffer(stripped, np.uint8)
    step = np.isin(arr, np.frombuffer(b"[{", np.uint8)).astype(np.int64)
    step -= np.isin(arr, np.frombuffer(b"]}", np.uint8))
    return int(np.cumsum(step).max(initial=0))


def exceeds_depth(raw: bytes, max_depth: int) -> int | None:
    """The nesting depth of ``raw`` if it is over ``max_depth``, else ``None`` (cheap when the
    line holds no more brackets than the limit, which is every ordinary record)."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return None
    depth = nesting_depth(raw)
    return depth if depth > max_depth else None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _path(parts: list[str | int]) -> str:
    return ".".join(str(p) for p in parts) or "record"


def shown(text: str, limit: int = 60) -> str:
    """A key or value as it can be printed and stored: ASCII, escapes for the rest, cut short."""
    out = ascii(text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def lone_surrogate_path(obj: Any, parts: list[str | int] | None = None) -> str | None:
    """The path (``media.0.uri``) of the first string or key holding a lone surrogate."""
    parts = parts or []
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return _path(parts)
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            if lone_surrogate_path(key) is not None:
                return f"{_path(parts)} (key {shown(key)})" if parts else f"key {shown(key)}"
            found = lone_surrogate_path(value, [*parts, key])
            if found is not None:
                return found
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found = lone_surrogate_path(value, [*parts, i])
            if found is not None:
                return found
    return None


def parse_json_record(raw: bytes, text: str, max_depth: int = DEFAULT_MAX_NESTING_DEPTH) -> Any:
    """``raw`` (one line, already checked to be UTF-8 as ``text``) parsed; raises
    :class:`RecordError` for anything a record cannot be made of."""
    depth = exceeds_depth(raw, max_depth)
    if depth is not None:
        raise RecordError(f"JSON nested {depth} levels deep, over the limit of {max_depth}")
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as dup:
        raise RecordError(f"{shown(dup.key)}: duplicate key in one JSON object") from None
    except json.JSONDecodeError as err:
        raise RecordError(f"invalid JSON: {err.msg} at column {err.colno}") from None
    except ValueError as err:  # e.g. an integer literal over Python's digit limit
        raise RecordError(f"invalid JSON: {str(err).split(';')[0]}") from None
    except RecursionError:  # the depth check above should make this unreachable
        raise RecordError(f"JSON nested too deep to parse (limit {max_depth})") from None
    if _SURROGATE_ESCAPE.search(text):
        where = lone_surrogate_path(obj)
        if where is not None:
            raise RecordError(f"{where}: lone UTF-16 surrogate escape, not valid Unicode text")
    return obj
