"""A Parquet manifest's rows as Python objects, one row group at a time, never raising.

Accounting: the file's footer says how many rows each row group holds, and that is the count
the release reconciles against (:func:`parquet_record_count`). A row group that cannot be read
(a corrupt page, a bad compression block), or that reads back a different number of rows than
its footer entry, yields one error for each row the footer gives it; the other row groups are
read as usual. A row whose values cannot be turned into Python objects (invalid UTF-8 in a
string column, say) is an error for that row only. A file whose footer cannot be read at all is
one error (row 0), and counts as one record.

The schema is checked before any data is read: duplicate column or struct field names (the
Parquet twin of a duplicate JSON key: one value would be dropped) and nesting deeper than the
JSON limit make every row an error.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# (row number, the row as a dict or None, why it is not readable or None)
ParquetRecord = tuple[int, dict[str, Any] | None, str | None]


def _open(data: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(data))


def parquet_record_count(data: bytes) -> int:
    """Rows of a Parquet manifest by its footer (one for a file whose footer is unreadable):
    exactly the number of items :func:`iter_parquet_records` yields."""
    try:
        meta = _open(data).metadata
        return sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    except Exception:  # noqa: BLE001 -- any failure on untrusted bytes: the one-row answer
        return 1


def _type_depth(t: pa.DataType) -> int:
    if pa.types.is_struct(t):
        return 1 + max((_type_depth(t.field(i).type) for i in range(t.num_fields)), default=0)
    if pa.types.is_map(t):
        return 1 + max(_type_depth(t.key_type), _type_depth(t.item_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return 1 + _type_depth(t.value_type)
    return 0


def _duplicate_name(names: list[str], where: str) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return f"{where}{name}" if where else name
        seen.add(name)
    return None


def _schema_problem(schema: pa.Schema, max_depth: int) -> str | None:
    dup = _duplicate_name(schema.names, "")
    if dup is not None:
        return f"{dup}: duplicate column name"
    depth = 1 + max((_type_depth(f.type) for f in schema), default=0)
    if depth > max_depth:
        return f"columns nested {depth} levels deep, over the limit of {max_depth}"
    stack = [(f.name, f.type) for f in schema]
    while stack:
        name, t = stack.pop()
        if pa.types.is_struct(t):
            fields = [t.field(i) for i in range(t.num_fields)]
            dup = _duplicate_name([f.name for f in fields], f"{name}.")
            if dup is not None:
                return f"{dup}: duplicate struct field name"
            stack += [(f"{name}.{f.name}", f.type) for f in fields]
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            stack.append((name, t.value_type))
    return None


def _row_error(table: pa.Table, j: int, err: Exception) -> str:
    for name in table.column_names:
        try:
            table.column(name).slice(j, 1).to_pylist()
        except Exception as col_err:  # noqa: BLE001 -- the first column that fails is named
            return f"{name}: value not readable: {col_err}"
    return f"row not readable: {err}"


def _rows_of(table: pa.Table, start: int) -> Iterator[ParquetRecord]:
    try:
        rows = table.to_pylist()
    except Exception:  # noqa: BLE001 -- fall back to one row at a time to find the bad ones
        for j in range(table.num_rows):
            try:
                (row,) = table.slice(j, 1).to_pylist()
            except Exception as err:  # noqa: BLE001
                yield start + j, None, _row_error(table, j, err)
            else:
                yield start + j, row, None
        return
    for j, row in enumerate(rows):
        yield start + j, row, None


def iter_parquet_records(data: bytes, max_depth: int) -> Iterator[ParquetRecord]:
    """Every row of the manifest as ``(row number, row, None)`` or ``(row number, None, why)``;
    as many items as :func:`parquet_record_count` says, whatever the bytes hold."""
    # Decoding untrusted bytes: pyarrow raises several exception types (ArrowInvalid, OSError,
    # ArrowNotImplementedError, UnicodeDecodeError, ...); each means "this part is unreadable".
    try:
        pf = _open(data)
        meta = pf.metadata
        counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        problem = _schema_problem(pf.schema_arrow, max_depth)
    except Exception as err:  # noqa: BLE001
        yield 0, None, f"not a readable Parquet file: {err}"
        return
    start = 0
    for i, n in enumerate(counts):
        if problem is not None:
            for j in range(n):
                yield start + j, None, problem
            start += n
            continue
        try:
            table = pf.read_row_group(i)
            if table.num_rows != n:
                raise ValueError(f"it holds {table.num_rows} rows, the footer says {n}")
        except Exception as err:  # noqa: BLE001
            why = f"row group {i} (rows {start}-{start + n - 1}) is unreadable: {err}"
            for j in range(n):
                yield start + j, None, why
        else:
            yield from _rows_of(table, start)
        start += n
