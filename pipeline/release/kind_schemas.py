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
   ``fixed_size_list`` (:func:`fixed_size_embeddings`, with the shapes ``counts`` saw over all
   of the kind's kept rows: :meth:`NonNullCounts.embedding_shapes`), and the column descriptions
   in the Parquet field metadata (``pipeline.release.card.describe_schema``).

Rules: a kind keeps the envelope and its own record fields always (``boxes``/``captions``/
``laterality`` for objects, times and subtitles for segments, ``items`` for documents), and a
stage column only where at least one kept row of that kind has a value. The build-machine
columns (``status``, ``reject_*``, ``manifest_root``) are not in data shards: the marker says
what a row is. Rejects keep every column (one schema across all reject shards), since the
reason is what they are read for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
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
class VectorShapes:
    """What the kept rows of a kind hold in one embedding column: the vector widths, the
    numbers of vectors a row holds, and whether a vector is null (mergeable)."""

    widths: set[int] = field(default_factory=set)
    per_row: set[int] = field(default_factory=set)
    null_vectors: bool = False

    def merge(self, other: VectorShapes) -> None:
        self.widths |= other.widths
        self.per_row |= other.per_row
        self.null_vectors |= other.null_vectors

    def fixed(self) -> tuple[int, bool] | None:
        """``(width, one vector per row)`` when every vector has one width, else None."""
        if len(self.widths) != 1 or self.null_vectors:
            return None
        return next(iter(self.widths)), self.per_row == {1}


def _is_embedding(t: pa.DataType) -> bool:
    return pa.types.is_list(t) and pa.types.is_list(t.value_type) and pa.types.is_floating(t.value_type.value_type)


def vector_shapes(column: pa.ChunkedArray | pa.Array) -> VectorShapes | None:
    """The :class:`VectorShapes` of a ``list<list<float>>`` column; None for any other column."""
    if not _is_embedding(column.type):
        return None
    outer = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    inner = outer.flatten()
    return VectorShapes(set(pc.unique(pc.list_value_length(inner).drop_null()).to_pylist()),
                        set(pc.unique(pc.list_value_length(outer).drop_null()).to_pylist()), inner.null_count > 0)


@dataclass
class NonNullCounts:
    """Per kind, the number of rows with a value in each column, and the shapes of its embedding
    columns (a mergeable accumulator)."""

    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    vectors: dict[str, dict[str, VectorShapes]] = field(default_factory=dict)

    def add(self, block: pa.Table) -> None:
        kinds = block["kind"].to_pylist() if "kind" in block.column_names else [None] * block.num_rows
        for kind in set(kinds):
            mask = pc.equal(block["kind"], kind) if kind is not None else pc.is_null(block["kind"])
            part = block.filter(mask)
            counter = self.by_kind.setdefault(str(kind), Counter())
            shapes = self.vectors.setdefault(str(kind), {})
            for name in part.column_names:
                counter[name] += part.num_rows - part[name].null_count
                found = vector_shapes(part[name])
                if found is not None:
                    shapes.setdefault(name, VectorShapes()).merge(found)

    def merge(self, other: NonNullCounts) -> None:
        for kind, counter in other.by_kind.items():
            self.by_kind.setdefault(kind, Counter()).update(counter)
        for kind, shapes in other.vectors.items():
            mine = self.vectors.setdefault(kind, {})
            for name, found in shapes.items():
                mine.setdefault(name, VectorShapes()).merge(found)

    def embedding_shapes(self, kind: str) -> dict[str, tuple[int, bool]]:
        """``{column: (width, one vector per row)}`` of ``kind``'s fixed-width embedding columns,
        decided over all of its kept rows, so that every shard of the kind has the same types."""
        out = {}
        for name, shapes in self.vectors.get(kind, {}).items():
            fixed = shapes.fixed()
            if fixed is not None:
                out[name] = fixed
        return out


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
    found = vector_shapes(column)
    return found.fixed() if found is not None else None


def fixed_size_embeddings(table: pa.Table, shapes: Mapping[str, tuple[int, bool]] | None = None) -> pa.Table:
    """Embedding columns (``list<list<halffloat>>``, one list of vectors per row) as Arrow
    ``fixed_size_list``: ``fixed_size_list<halffloat, d>`` where every row holds one vector
    (an image's embedding; numpy and Ray's ``iter_torch_batches`` take it as an ``(n, d)``
    array), ``list<fixed_size_list<halffloat, d>>`` where rows hold several (one per caption;
    each row an ``(k, d)`` array). Other columns are left as they are. ``shapes``
    (:meth:`NonNullCounts.embedding_shapes`): the columns and shapes decided for the whole kind,
    so that every shard has the same types; without it, each table decides from its own rows."""
    for i, name in enumerate(table.column_names):
        if not _is_embedding(table[name].type):
            continue
        found = _embedding_width(table[name]) if shapes is None else shapes.get(name)
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
