"""Seeded fixed-size samples of a release's rows, the same whatever the block layout.

Each row gets ``sha1(seed:id:source_ref)`` (:func:`row_hashes`, in column :data:`HASH`); a sample
is the bottom-k by (hash, id) (:func:`bottom`), so the union of two blocks' samples cut to k is the
sample of the union. :func:`ordered` puts a sample in a layout-independent order before any
summary is computed from it (a mean summed in another order could differ in its last bit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SAMPLE_ROWS = 20_000
HASH = "_h"
_ORDER = [(HASH, "ascending"), ("id", "ascending")]


def row_hashes(table: pa.Table, seed: int) -> pa.Array:
    ids = table["id"].to_pylist()
    refs = table["source_ref"].to_pylist() if "source_ref" in table.schema.names else [""] * len(ids)
    return pa.array([int.from_bytes(hashlib.sha1(f"{seed}:{i}:{r}".encode()).digest()[:8], "big")
                     for i, r in zip(ids, refs, strict=True)], pa.uint64())


def bottom(table: pa.Table | None, k: int) -> pa.Table | None:
    """The ``k`` rows of smallest (hash, id)."""
    if table is None or table.num_rows <= k:
        return table
    return table.take(pc.sort_indices(table, sort_keys=_ORDER).slice(0, k))


def concat(a: pa.Table | None, b: pa.Table | None) -> pa.Table | None:
    if a is None or b is None:
        return a if b is None else b
    return pa.concat_tables([a, b], promote_options="permissive")


def narrow(table: pa.Table, names: Sequence[str | None]) -> pa.Table:
    """The named columns that exist, each once, in the order given."""
    keep = [n for n in dict.fromkeys(names) if n is not None and n in table.schema.names]
    return table.select(keep)


def mask(table: pa.Table, expr: Any) -> pa.Table:
    """The rows where ``expr`` is true (null counts as false)."""
    return table.filter(pc.fill_null(expr, False))


def ordered(table: pa.Table | None) -> pa.Table | None:
    """A sample in a layout-independent order (hash, then id)."""
    if table is None:
        return None
    return table.take(pc.sort_indices(table, sort_keys=_ORDER))
