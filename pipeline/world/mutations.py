"""Hostile manifest lines: seeded mutations of valid records, for fuzzing ingest and the checks.

``mutate_records(records, n, seed)`` yields ``n`` lines (bytes, no newline, never blank), each a
record of ``records`` with one to three mutations applied: a field set to a hostile value
(integers at and beyond the int32/int64 edges, NaN and infinities, lone surrogates, control and
bidi characters, placeholder markers, long strings, wrong types), a field deleted or added, a
list emptied or repeated, the kind changed, a duplicate key, nesting thousands of levels deep,
integer literals of thousands of digits, and byte damage (flips, cuts, invalid UTF-8). The same
records, ``n`` and seed give the same lines. Nothing generated points outside the manifest's
folder by an absolute path or names a network scheme, so a fuzz run reads no file it was not
given and waits on no network.

``mutated_parquet(records, n, seed)`` is the Parquet twin: ``n`` rows with the same value
mutations (no byte damage: a Parquet column holds one type, so a value the file cannot hold is
written as null), in row groups of ``row_group_size``, then the bytes of a few column chunks
damaged (``damaged_groups`` row groups, chosen by the seed and returned): a corrupt page.

May import: nothing of ``pipeline``.
"""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.records import RECORD_FIELDS

INTS = [0, -1, 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30]
FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324, 0.5, -3.25]
STRINGS = [
    "", " ", "\ud800", "\udfff", "a\udc00b", "a\x00b", "\u202egnp.x", "\t\r", "é", "\U0001f600",
    "<|image_start|>", "<|image_pad|>", "<|image_end|>", "&lt;|image_start|&gt;", "<box>", "</box>",
    "<box>red circle</box>", "x" * 5000, "media/../../x.png", "media/%2e%2e/x.png", "media/missing.png",
    "NaN", "null", "0", "object", "segment", "document", "text", "pascal_voc", "coco", "yolo", "image",
    "audio", "video", "v1", "v2", "left", "right", "mirrored", "canonical",
]
OTHERS: list[Any] = [None, True, False, [], {}, [1, 2, 3, 4], {"a": 1}, [[1]], ["a"]]
NAMES = ["id", "kind", "content", "media", "boxes", "bbox", "uri", "width", "height", "start_us",
         "duration_us", "page", "extra", "\ud800", "", "Id", "import_reject"]
DEPTHS = [70, 1000, 5000, 50000]


def _hostile(rng: random.Random, like: Any = None) -> Any:
    """A hostile value; most of the time of ``like``'s type, so that the record may still be
    valid and reach the stages (an ``int`` can become a float: JSON does not tell them apart)."""
    pool: list[Any]
    if rng.random() < 0.7 and isinstance(like, bool | int | float | str):
        pools: dict[type, list[Any]] = {bool: [True, False], int: INTS + FLOATS[:3], float: FLOATS + INTS,
                                       str: STRINGS}
        pool = pools[type(like)]
    else:
        pool = rng.choice([INTS, FLOATS, STRINGS, OTHERS])
    return copy.deepcopy(rng.choice(list(pool)))


def _slots(obj: Any, out: list[tuple[Any, Any]]) -> None:
    """Every (container, key or index) of ``obj``, and (container, None) for each container."""
    if isinstance(obj, dict | list):
        out.append((obj, None))
        for k, v in obj.items() if isinstance(obj, dict) else enumerate(obj):
            out.append((obj, k))
            _slots(v, out)


def _mutate_value(rng: random.Random, record: dict[str, Any]) -> None:
    slots: list[tuple[Any, Any]] = []
    _slots(record, slots)
    target, key = rng.choice(slots)  # mostly a leaf value: there are more of them
    op = rng.randrange(8)
    if key is None or op == 0:  # add
        value = _hostile(rng)
        if isinstance(target, dict):
            target[rng.choice(NAMES)] = value
        else:
            target.append(value)
    elif op == 1:  # delete
        del target[key]
    elif op == 2 and isinstance(target[key], list) and target[key]:  # repeat a list
        target[key] = target[key] * rng.choice([2, 5, 20])
    elif op == 3 and isinstance(target[key], list):  # empty it
        target[key] = []
    else:  # set
        target[key] = _hostile(rng, target[key])


def _dumps(rng: random.Random, record: dict[str, Any]) -> bytes:
    if rng.random() < 0.5:
        return json.dumps(record, ensure_ascii=True).encode()
    # Raw text: a lone surrogate becomes bytes that are not UTF-8, another path through ingest.
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _damage(rng: random.Random, line: bytes) -> bytes:
    op = rng.randrange(8)
    pos = rng.randrange(len(line) + 1)
    if op == 0:  # duplicate key
        key = rng.choice(["id", "kind", "content", "media"])
        return line.replace(b"{", b'{"' + key.encode() + b'": "dup-x", ', 1)
    if op == 1:  # deep nesting, as a value or around the line
        d = rng.choice(DEPTHS)
        if rng.random() < 0.5:
            return b"[" * d + line + b"]" * d
        return line.replace(b": ", b": " + b"[" * d + b"1" + b"]" * d + b", \"x\": ", 1)
    if op == 2:  # a huge integer literal where a number was
        digits = rng.choice([19, 20, 40, 400, 5000])
        i = next((j for j in range(pos, len(line)) if line[j : j + 1].isdigit()), -1)
        return line if i < 0 else line[:i] + b"9" * digits + line[i:]
    if op == 3:  # a lone surrogate escape inside the next string
        i = line.find(b'"', pos)
        return line if i < 0 else line[: i + 1] + rng.choice([b"\\ud800", b"\\udfff", b"\\ud83d"]) + line[i + 1 :]
    if op == 4:  # flip bytes
        out = bytearray(line)
        for _ in range(rng.randint(1, 4)):
            if out:
                out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if op == 5:  # insert junk (invalid UTF-8 among it)
        junk = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b",", b"}", b'"', b"\\", b"NaN"])
        return line[:pos] + junk + line[pos:]
    if op == 6:  # cut
        return line[:pos]
    return line[:pos] + line[pos + rng.randint(1, 16) :]  # delete a span


def mutate_values(rng: random.Random, record: dict[str, Any], times: int) -> dict[str, Any]:
    """A copy of ``record`` with ``times`` value mutations (``record`` is left unchanged)."""
    out = copy.deepcopy(record)
    for _ in range(times):
        _mutate_value(rng, out)
    return out


def mutate_record(rng: random.Random, record: dict[str, Any]) -> bytes:
    """One hostile line made from ``record`` (left unchanged)."""
    structural = rng.choice([0, 1, 1, 1, 2, 3])
    out = mutate_values(rng, record, structural)
    line = _dumps(rng, out)
    if structural == 0 or rng.random() < 0.15:
        line = _damage(rng, line)
    line = line.replace(b"\n", b" ")  # one record, one line: the count stays exact
    return line if line.strip() else b"x"


def _numbered(rng: random.Random, records: Sequence[dict[str, Any]], i: int) -> dict[str, Any]:
    record = rng.choice(records)
    if isinstance(record.get("id"), str):
        record = {**record, "id": f"{record['id']}-m{i}"}
    return record


def mutate_records(records: Sequence[dict[str, Any]], n: int, seed: int) -> Iterator[bytes]:
    """``n`` hostile lines from ``records``, deterministic for a seed. Each line's id gets the
    suffix ``-m<i>`` first, so that a record left valid is not a duplicate of another."""
    rng = random.Random(seed)
    for i in range(n):
        yield mutate_record(rng, _numbered(rng, records, i))


def _widened(t: pa.DataType) -> pa.DataType:
    """The record type with int32 widened to int64, so that a file can hold 2^31 in ``width``."""
    if pa.types.is_int32(t):
        return pa.int64()
    if pa.types.is_list(t):
        return pa.list_(_widened(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([(t.field(i).name, _widened(t.field(i).type)) for i in range(t.num_fields)])
    return t


PARQUET_SCHEMA = pa.schema([pa.field(f.name, _widened(f.type)) for f in RECORD_FIELDS])
_FIT_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeError)


def _fit(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as :data:`PARQUET_SCHEMA` can hold it: a field it cannot is null (absent). Each
    value is the one Arrow reads back (pyarrow takes ``[]`` for a struct alone, but not among
    dicts; its read-back, a struct of nulls, is a value any column holds)."""
    out: dict[str, Any] = {}
    for field in PARQUET_SCHEMA:
        try:
            out[field.name] = pa.array([row.get(field.name)], type=field.type).to_pylist()[0]
        except _FIT_ERRORS:
            continue
    return out


def _damage_chunks(data: bytes, rng: random.Random, groups: list[int]) -> bytes:
    """Overwrite bytes inside one column chunk of each row group in ``groups``."""
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    out = bytearray(data)
    for g in groups:
        chunk = meta.row_group(g).column(rng.randrange(meta.num_columns))
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        size = chunk.total_compressed_size
        for _ in range(rng.randint(1, 8)):
            out[start + rng.randrange(size)] = rng.randrange(256)
    return bytes(out)


def mutated_parquet(records: Sequence[dict[str, Any]], n: int, seed: int, *, row_group_size: int = 64,
                    damaged_groups: int = 2) -> tuple[bytes, list[int]]:
    """A Parquet manifest of ``n`` mutated rows and the row groups whose bytes were damaged."""
    rng = random.Random(seed)
    rows = [_fit(mutate_values(rng, _numbered(rng, records, i), rng.choice([1, 1, 2, 3]))) for i in range(n)]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), buf, row_group_size=row_group_size,
                   compression="zstd")
    n_groups = -(-n // row_group_size)
    groups = sorted(rng.sample(range(n_groups), min(damaged_groups, n_groups)))
    return _damage_chunks(buf.getvalue(), rng, groups), groups
