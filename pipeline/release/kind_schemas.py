"""One schema per kind for the released shards, with only that kind's columns, a marker column,
and embeddings as fixed-size arrays.

Every kind's shard used to carry the same union schema (40 of 67 columns all null in the object
shard, 58 in the text shard), and nothing told a kept row from a reject once shards were globbed
together. The shard writer calls, per release group:

1. ``counts = NonNullCounts()``; ``counts.add(block)`` over the kept rows, one block at a time (a
   per-block accumulator: ``merge`` two of them), before the first shard of a kind is written;
2. ``columns = kind_columns(kind, schema, counts)``: the columns of that kind's shards, decided
   once, so every shard of a kind has the same schema;
3. ``shard_table(block, kind, columns, part)`` on each slice it writes: those columns in that
   order, the marker ``release_part`` (``data``, ``negatives`` or ``rejects``), embeddings as
   ``fixed_size_list`` (:func:`fixed_size_embeddings`), and the column descriptions in the
   Parquet field metadata (``pipeline.release.card.describe_schema``).

Rules: a kind keeps the envelope and its own record fields always (``boxes``/``captions``/
``laterality`` for objects, times and subtitles for segments, ``items`` for documents), and a
stage column only where at least one kept row of that kind has a value. The build-machine
columns (``status``, ``reject_*``, ``manifest_root``) are not in data shards: the marker says
what a row is. Rejects keep every column (one schema across all reject shards), since the
reason is what they are read for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import RECORD_FIELDS

ENVELOPE: tuple[str, ...] = ("id", "kind", "content", "media", "source", "license", "placeholder_version",
                             "review_status", "parent_id", "source_ref")
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "object": ("boxes", "captions", "laterality"),
    "segment": ("start_us", "duration_us", "subtitles", "words"),
    "document": ("items",),
    "text": (),
}
RECORD_COLUMNS = frozenset(f.name for f in RECORD_FIELDS)
BUILD_COLUMNS = frozenset({"status", "reject_stage", "reject_code", "reject_detail", "manifest_root"})
MARKER = "release_part"
PARTS = ("data", "negatives", "rejects")


@dataclass
class NonNullCounts:
    """Per kind, the number of rows with a value in each column (a mergeable accumulator)."""

    by_kind: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, block: pa.Table) -> None:
        kinds = block["kind"].to_pylist() if "kind" in block.column_names else [None] * block.num_rows
        for kind in set(kinds):
            mask = pc.equal(block["kind"], kind) if kind is not None else pc.is_null(block["kind"])
            part = block.filter(mask)
            counter = self.by_kind.setdefault(str(kind), Counter())
            for name in part.column_names:
                counter[name] += part.num_rows - part[name].null_count

    def merge(self, other: NonNullCounts) -> None:
        for kind, counter in other.by_kind.items():
            self.by_kind.setdefault(kind, Counter()).update(counter)


def kind_columns(kind: str, schema: pa.Schema, counts: NonNullCounts, part: str = "data") -> list[str]:
    """The columns of ``kind``'s shards of ``part``, in schema order (module docstring)."""
    if part == "rejects":
        return list(schema.names)
    own = set(ENVELOPE) | set(KIND_FIELDS.get(kind, ()))
    seen = counts.by_kind.get(kind, Counter())
    keep = []
    for name in schema.names:
        if name in BUILD_COLUMNS or name.startswith("_") or name == MARKER:
            continue
        if name in own or (name not in RECORD_COLUMNS and seen[name] > 0):
            keep.append(name)
    return keep


def _embedding_width(column: pa.ChunkedArray) -> tuple[int, bool] | None:
    """(vector width, one vector per row) of a ``list<list<float>>`` column whose vectors all
    have one width; None when it is not such a column or the widths differ."""
    t = column.type
    if not (pa.types.is_list(t) and pa.types.is_list(t.value_type) and pa.types.is_floating(t.value_type.value_type)):
        return None
    outer = column.combine_chunks()
    inner = outer.flatten()
    if len(inner) == 0:
        return None
    lengths = pc.unique(pc.list_value_length(inner).drop_null()).to_pylist()
    if len(lengths) != 1 or inner.null_count:
        return None
    per_row = pc.unique(pc.list_value_length(outer).drop_null()).to_pylist()
    return int(lengths[0]), per_row == [1]


def fixed_size_embeddings(table: pa.Table) -> pa.Table:
    """Embedding columns (``list<list<halffloat>>``, one list of vectors per row) as Arrow
    ``fixed_size_list``: ``fixed_size_list<halffloat, d>`` where every row holds one vector
    (an image's embedding; numpy and Ray's ``iter_torch_batches`` take it as an ``(n, d)``
    array), ``list<fixed_size_list<halffloat, d>>`` where rows hold several (one per caption;
    each row an ``(k, d)`` array). Other columns are left as they are."""
    for i, name in enumerate(table.column_names):
        found = _embedding_width(table[name])
        if found is None:
            continue
        width, single = found
        value = table[name].type.value_type.value_type
        vector = pa.list_(value, width)
        if single:
            column = pc.list_element(table[name], 0).cast(vector)
        else:
            column = table[name].cast(pa.list_(vector))
        table = table.set_column(i, pa.field(name, column.type), column)
    return table


def shard_table(block: pa.Table, kind: str, columns: Sequence[str], part: str = "data") -> pa.Table:
    """``block`` as one shard of ``kind`` stores it (module docstring, step 3)."""
    from pipeline.release.card import describe_schema

    if part not in PARTS:
        raise ValueError(f"release part {part!r} is not one of {PARTS}")
    out = block.select([c for c in columns if c in block.column_names])
    out = out.append_column(pa.field(MARKER, pa.string(), nullable=False), pa.array([part] * out.num_rows, pa.string()))
    if part != "rejects":
        out = fixed_size_embeddings(out)
    return out.cast(describe_schema(out.schema))
