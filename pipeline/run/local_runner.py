"""The in-process runner: the same stages as on Ray, applied to a table in this process.

Used by ``xmodal check``, ``xmodal stage`` and the unit tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.run.ingest import read_manifest
from stages.base import Stage

log = logging.getLogger(__name__)


@dataclass
class StageTiming:
    name: str
    rows_in: int
    seconds: float
    rows_out: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class LocalRun:
    table: pa.Table
    timings: list[StageTiming] = field(default_factory=list)


def apply_stage(stage: Stage, table: pa.Table, batch_size: int | None = None) -> pa.Table:
    """Apply one stage in batches of its ``batch_size``, as Ray Data would."""
    size = batch_size or stage.resources.batch_size
    if table.num_rows == 0:
        return stage(table)
    pieces = [stage(table.slice(start, size)) for start in range(0, table.num_rows, size)]
    schema = pieces[0].schema
    return pa.concat_tables([p.select(schema.names).cast(schema) for p in pieces])


def run_stages(table: pa.Table, stages: Sequence[Stage]) -> LocalRun:
    run = LocalRun(table)
    for stage in stages:
        t0 = time.perf_counter()
        rows_in = run.table.num_rows
        run.table = apply_stage(stage, run.table)
        run.timings.append(StageTiming(stage.name, rows_in, time.perf_counter() - t0, run.table.num_rows))
        log.info("stage %s: %d rows in %.2fs", stage.name, rows_in, run.timings[-1].seconds)
    return run


def read_inputs(uris: Sequence[str], max_record_bytes: int, *, media_roots: Sequence[str] = ()) -> pa.Table:
    """Every manifest's rows, media refs resolved under its folder and ``media_roots``."""
    from pipeline.run.ingest import mark_duplicate_ids

    tables = [read_manifest(uri, max_record_bytes, media_roots=media_roots) for uri in uris]
    return mark_duplicate_ids(pa.concat_tables(tables))
