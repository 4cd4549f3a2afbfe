"""Where a release reads its staged rows from: blocks, never the whole dataset on the driver.

A :class:`RowSource` runs three kinds of work over the staged rows and streams back small
results; the release (``pipeline.release.stream``) is written against it once, and runs the same
way after a Ray run (``pipeline.release.runs.RunsSource``: the sorted runs the workers wrote,
merged on the driver) and in-process (:class:`TableSource`, for ``xmodal run --local`` and for
tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

BlockFn = Callable[[pa.Table], pa.Table]


class RowSource(Protocol):
    def map_blocks(self, fn: BlockFn) -> Iterator[pa.Table]:
        """``fn`` over every block (any layout); its (small) results, in any order."""
        ...

    def duplicate_candidates(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The ``ok`` rows (``columns`` only) whose ``id`` occurs more than once."""
        ...

    def sorted_batches(self, losers: Mapping[tuple[str, str], str], keys: Sequence[str]) -> Iterator[pa.Table]:
        """Every row through ``rows.prepare`` with ``losers``, in ascending order of ``keys``, in batches."""
        ...


class TableSource:
    """An in-process table as a row source, cut into blocks of ``block_rows`` rows."""

    def __init__(self, table: pa.Table, block_rows: int = 65_536) -> None:
        self.table = table
        self.block_rows = max(1, block_rows)

    def blocks(self) -> Iterator[pa.Table]:
        for start in range(0, self.table.num_rows, self.block_rows):
            yield self.table.slice(start, self.block_rows)

    def map_blocks(self, fn: BlockFn) -> Iterator[pa.Table]:
        for block in self.blocks():
            yield fn(block)

    def duplicate_candidates(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        from schemas.records import STATUS_OK

        t = self.table
        ok = t.select(list(columns)).filter(pc.fill_null(pc.equal(t["status"], STATUS_OK), False))
        counts = ok.group_by("id").aggregate([("id", "count")])
        many = counts.filter(pc.greater(counts["id_count"], 1))["id"]
        yield ok.filter(pc.is_in(ok["id"], many))

    def sorted_batches(self, losers: Mapping[tuple[str, str], str], keys: Sequence[str]) -> Iterator[pa.Table]:
        from pipeline.release.rows import prepare

        if self.table.num_rows == 0:
            return
        prepared = pa.concat_tables([prepare(b, losers) for b in self.blocks()], promote_options="permissive")
        order = pc.sort_indices(prepared, sort_keys=[(k, "ascending") for k in keys])
        for start in range(0, prepared.num_rows, self.block_rows):
            yield prepared.take(order.slice(start, self.block_rows))
