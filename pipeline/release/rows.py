"""What the release does to one block of staged rows, the same on a Ray worker and in-process.

A release is computed from blocks, never from the whole table: :func:`prepare` marks duplicate
ids (from the small set of losers found beforehand), resolves media URIs of kept rows, and adds
the columns the sort and the shard writer need:

- ``_group``: the shard family a row goes to: ``data/<kind>`` (kept training rows),
  ``negatives/pairs`` (kept rows with ``negative_type``), ``rejects/<stage>/<code>``;
- ``_kind``, ``_id``, ``_ref``: non-null sort keys (kind, id, source_ref), so that the order
  ``(_group, _kind, _id, _ref)`` is total and the same whatever the block layout;
- ``_bytes``: a per-row size estimate (:func:`row_nbytes`) that the writer sums to roll shards
  over at the size target: additive, so shard boundaries do not depend on how rows were batched.

Duplicate ids: the first ``ok`` row of an id wins, "first" meaning the smallest
``(input index, line)`` of its ``source_ref`` (the order of the config's inputs, then the line);
every other ``ok`` row with that id is rejected at ``ingest`` with ``ERR_CROSS_MDL_SCHEMA``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from access.io import MediaPathError, resolve_media_uri
from schemas.reason_codes import ReasonCode
from schemas.records import STATUS_OK, STATUS_REJECTED

INGEST_STAGE = "ingest"
INTERNAL_COLUMNS = ("status", "reject_stage", "reject_code", "reject_detail", "manifest_root")
SORT_COLUMNS = ("_group", "_kind", "_id", "_ref")
HELPER_COLUMNS = (*SORT_COLUMNS, "_bytes")
DUPLICATE_COLUMNS = ("id", "status", "source_ref")

NEGATIVE_COLUMNS = (
    "id", "parent_id", "kind", "negative_type", "negative_text", "negative_media", "negative_edit",
    "positive_text", "negative_similarity", "positive_similarity", "negative_verdict", "negative_shift_us",
    "start_us", "duration_us", "subtitles", "content", "media", "source", "license", "source_ref",
)


# ---- duplicate ids ------------------------------------------------------------------------
def source_order(ref: str | None, inputs: Sequence[str]) -> tuple[int, int, str]:
    """Sort key of a ``source_ref`` ("<manifest>:<line>"): input index, line, then the text."""
    text = ref or ""
    uri, _, line = text.rpartition(":")
    try:
        index = list(inputs).index(uri)
    except ValueError:
        index = len(inputs)
    return (index, int(line) if line.isdigit() else -1, text)


def duplicate_losers(candidates: Iterable[pa.Table], inputs: Sequence[str]) -> dict[tuple[str, str], str]:
    """``(id, source_ref) -> winner's source_ref`` of every ``ok`` row that loses its id to an
    earlier one. ``candidates`` are the ``ok`` rows (``DUPLICATE_COLUMNS``) whose id occurs more
    than once; the driver holds those only, never the dataset."""
    by_id: dict[str, list[str]] = {}
    for table in candidates:
        for rid, ref in zip(table["id"].to_pylist(), table["source_ref"].to_pylist(), strict=True):
            by_id.setdefault(rid, []).append(ref or "")
    losers: dict[tuple[str, str], str] = {}
    for rid, refs in by_id.items():
        if len(refs) < 2:
            continue
        ordered = sorted(refs, key=lambda r: source_order(r, inputs))
        for ref in ordered[1:]:
            losers[(rid, ref)] = ordered[0]
    return losers


def _set_column(table: pa.Table, name: str, values: Any, type_: pa.DataType) -> pa.Table:
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, type_)
    if name in table.schema.names:
        idx = table.schema.get_field_index(name)
        return table.set_column(idx, pa.field(name, type_), array)
    return table.append_column(pa.field(name, type_), array)


def mark_losers(table: pa.Table, losers: Mapping[tuple[str, str], str]) -> pa.Table:
    if not losers or table.num_rows == 0:
        return table
    ids, refs = table["id"].to_pylist(), table["source_ref"].to_pylist()
    status, stage = table["status"].to_pylist(), table["reject_stage"].to_pylist()
    code, detail = table["reject_code"].to_pylist(), table["reject_detail"].to_pylist()
    hit = False
    for i, (rid, ref) in enumerate(zip(ids, refs, strict=True)):
        first = losers.get((rid, ref or "")) if status[i] == STATUS_OK else None
        if first is not None:
            hit = True
            status[i], stage[i], code[i] = STATUS_REJECTED, INGEST_STAGE, str(ReasonCode.SCHEMA)
            detail[i] = f"{ref}: duplicate id {rid!r} (first at {first})"
    if not hit:
        return table
    for name, values in (("status", status), ("reject_stage", stage), ("reject_code", code),
                         ("reject_detail", detail)):
        table = _set_column(table, name, values, pa.string())
    return table


# ---- per-row size --------------------------------------------------------------------------
def _array_nbytes(arr: pa.Array) -> np.ndarray:
    """Bytes each element of ``arr`` holds (children included); additive over rows."""
    n = len(arr)
    t = arr.type
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64) + 4
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        child = arr.flatten() if not pa.types.is_fixed_size_list(t) else pc.list_flatten(arr)
        parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
        sizes = np.bincount(parents, weights=_array_nbytes(child), minlength=n).astype(np.int64)
        return sizes + 4
    if pa.types.is_struct(t):
        total = np.zeros(n, dtype=np.int64)
        for i in range(t.num_fields):
            total += _array_nbytes(pc.struct_field(arr, [i]))
        return total
    if pa.types.is_dictionary(t):
        return _array_nbytes(arr.dictionary_decode())
    try:
        width = max(1, t.bit_width // 8)
    except ValueError:
        width = 8
    return np.full(n, width, dtype=np.int64)


def row_nbytes(table: pa.Table) -> np.ndarray:
    """A per-row byte estimate of ``table`` (the Arrow bytes each row's values hold)."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        for chunk, start in _chunks_with_offsets(column):
            total[start:start + len(chunk)] += _array_nbytes(chunk)
    return total


def _chunks_with_offsets(column: pa.ChunkedArray) -> Iterable[tuple[pa.Array, int]]:
    start = 0
    for chunk in column.chunks:
        yield chunk, start
        start += len(chunk)


# ---- prepare ---------------------------------------------------------------------------------
def resolve_media(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """Media URIs of kept rows made absolute (shards do not depend on where the manifest was);
    also the problems: a kept row whose media escapes its manifest's folder (reachable only when
    no media_check stage ran)."""
    if "media" not in table.schema.names or table.num_rows == 0:
        return table, []
    roots, ids = table["manifest_root"].to_pylist(), table["id"].to_pylist()
    status, media = table["status"].to_pylist(), table["media"].to_pylist()
    problems = []
    for i, refs in enumerate(media):
        if status[i] != STATUS_OK:
            continue
        for k, ref in enumerate(refs or []):
            try:
                ref["uri"] = resolve_media_uri(ref["uri"], roots[i])
            except MediaPathError as err:
                problems.append(f"kept row {ids[i]}: media[{k}] ({ref['uri']}): {err}; "
                                "add the media_check stage before releasing")
    field = table.schema.field("media")
    return _set_column(table, "media", pa.array(media, field.type), field.type), problems


def group_of(table: pa.Table) -> pa.Array:
    ok = pc.fill_null(pc.equal(table["status"], STATUS_OK), False)
    kind = pc.fill_null(table["kind"], "unknown")
    data = pc.binary_join_element_wise("data", kind, "/")
    if "negative_type" in table.schema.names:
        data = pc.if_else(pc.is_valid(table["negative_type"]), "negatives/pairs", data)
    stage = pc.fill_null(table["reject_stage"], "unknown")
    code = pc.fill_null(table["reject_code"], "unknown")
    rejects = pc.binary_join_element_wise("rejects", stage, code, "/")
    return pc.if_else(ok, data, rejects)


def prepare(table: pa.Table, losers: Mapping[tuple[str, str], str]) -> pa.Table:
    """One block, ready to sort and write: duplicates marked, media resolved, the sort keys and
    ``_bytes`` added (see the module docstring)."""
    table = mark_losers(table, losers)
    table, _ = resolve_media(table)
    table = _set_column(table, "_group", group_of(table), pa.string())
    table = _set_column(table, "_kind", pc.fill_null(table["kind"], ""), pa.string())
    table = _set_column(table, "_id", pc.fill_null(table["id"], ""), pa.string())
    table = _set_column(table, "_ref", pc.fill_null(table["source_ref"], ""), pa.string())
    payload = table.drop_columns([c for c in (*INTERNAL_COLUMNS, *SORT_COLUMNS) if c in table.schema.names])
    return _set_column(table, "_bytes", pa.array(row_nbytes(payload), pa.int64()), pa.int64())


def written_columns(group: str, table: pa.Table) -> pa.Table:
    """The columns a shard of ``group`` holds: kept rows without the pipeline's internal
    columns; negative pairs with the pair's columns only; rejects with everything."""
    table = table.drop_columns([c for c in HELPER_COLUMNS if c in table.schema.names])
    if group.startswith("rejects/"):
        return table
    table = table.drop_columns([c for c in INTERNAL_COLUMNS if c in table.schema.names])
    if group == "negatives/pairs":
        return table.select([c for c in NEGATIVE_COLUMNS if c in table.schema.names])
    return table
