"""The stage contract (DESIGN.md, "Stage contract").

A stage receives a ``pyarrow.Table`` batch and returns one. Only rows whose ``status`` is ``ok``
reach :meth:`Stage.process`; the others pass through untouched. Rows are never dropped: a stage
rejects a row with :func:`reject_rows`, and a stage that fans out appends rows whose
``parent_id`` names the source row. Nothing here knows Ray: ``pipeline.run.ray_runner`` turns
``Stage.resources`` into ``map_batches`` arguments and ``pipeline.run.local_runner`` calls the stage
in-process.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from schemas.reason_codes import ReasonCode
from schemas.records import ROW_SCHEMA, STATUS_OK, STATUS_REJECTED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage reserves. ``actors=None`` runs as a task pool; a stage that
    loads a model in :meth:`Stage.setup` sets ``actors=(min, max)`` and runs as an actor pool.
    CPU shares are fractional so that a 2-core machine never deadlocks its read tasks."""

    num_cpus: float = 0.5
    num_gpus: float = 0.0
    memory: int | None = None  # bytes per worker, None = no reservation
    batch_size: int = 256
    actors: tuple[int, int] | None = None


class Verdict(NamedTuple):
    """Why one row is rejected: a reason code and a short human sentence."""

    code: ReasonCode
    detail: str


class StageParams(BaseModel):
    """Base of every stage's typed parameters (``--set key=value`` and the YAML config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(ABC):
    """Base class of every stage.

    Subclasses set ``name`` (snake_case, greppable), ``params_model``, ``resources``,
    ``output_fields`` (columns the stage adds; always present in its output, null where not
    computed) and ``error_code`` (the reason code given to a row on which ``process`` raised an
    unexpected exception, so that one bad row never takes a run down).
    """

    name: ClassVar[str]
    params_model: ClassVar[type[StageParams]] = StageParams
    resources: ClassVar[Resources] = Resources()
    output_fields: ClassVar[Sequence[pa.Field]] = ()
    error_code: ClassVar[ReasonCode] = ReasonCode.SCHEMA

    def __init__(self, params: StageParams | dict[str, Any] | None = None) -> None:
        if params is None or isinstance(params, dict):
            params = self.params_model(**(params or {}))
        self.params = params
        self._ready = False

    def setup(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Load models or other per-worker state once. Called before the first batch."""

    @abstractmethod
    def process(self, rows: pa.Table) -> pa.Table:
        """Process rows that are all ``ok``. Return the same rows first, in the same order (some
        may now be rejected), then any fan-out rows (with ``parent_id``)."""

    # ---- machinery shared by every stage -------------------------------------------------
    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        for field in self.output_fields:
            if schema.get_field_index(field.name) < 0:
                schema = schema.append(field.with_nullable(True))
        return schema

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._ready:
            self.setup()
            self._ready = True
        schema = self.output_schema(batch.schema)
        batch = conform(batch, schema)
        ok_mask = pc.fill_null(pc.equal(batch["status"], STATUS_OK), False)
        ok = batch.filter(ok_mask)
        rest = batch.filter(pc.invert(ok_mask))
        out = self._process_guarded(ok) if ok.num_rows else ok
        schema = unify_schemas(schema, out.schema)
        combined = pa.concat_tables([conform(out, schema), conform(rest, schema)])
        if out.num_rows < ok.num_rows:
            raise RuntimeError(f"stage {self.name} dropped rows: {ok.num_rows} in, {out.num_rows} out")
        # Restore input order: the original rows where they were, fan-out rows after them.
        is_ok = ok_mask.to_numpy(zero_copy_only=False)
        order = np.empty(batch.num_rows, dtype=np.int64)
        order[is_ok] = np.arange(ok.num_rows)
        order[~is_ok] = out.num_rows + np.arange(rest.num_rows)
        return combined.take(np.concatenate([order, np.arange(ok.num_rows, out.num_rows)]))

    def _process_guarded(self, ok: pa.Table) -> pa.Table:
        try:
            return self.process(ok)
        except Exception:  # noqa: BLE001 - isolate the row(s) that fail, never the run
            log.warning("stage %s: batch failed, retrying row by row", self.name, exc_info=True)
        pieces = []
        for i in range(ok.num_rows):
            row = ok.slice(i, 1)
            try:
                pieces.append(self.process(row))
            except Exception as exc:  # noqa: BLE001
                detail = f"internal error in stage {self.name}: {type(exc).__name__}: {exc}"
                pieces.append(reject_rows(row, [Verdict(self.error_code, detail[:500])], self.name))
        schema = pieces[0].schema
        for piece in pieces[1:]:
            schema = unify_schemas(schema, piece.schema)
        return pa.concat_tables([conform(p, schema) for p in pieces])


def unify_schemas(a: pa.Schema, b: pa.Schema) -> pa.Schema:
    """``a`` plus the fields of ``b`` that ``a`` lacks, in order."""
    for field in b:
        if a.get_field_index(field.name) < 0:
            a = a.append(field.with_nullable(True))
    return a


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder ``table`` to ``schema``, adding missing columns as nulls and casting types."""
    columns = []
    for field in schema:
        idx = table.schema.get_field_index(field.name)
        if idx < 0:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            col = table.column(idx)
            columns.append(col if col.type == field.type else col.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def reject_rows(rows: pa.Table, verdicts: Sequence[Verdict | None], stage: str) -> pa.Table:
    """Set status/reject_* on the rows whose verdict is not None; other rows are unchanged."""
    if len(verdicts) != rows.num_rows:
        raise ValueError(f"{len(verdicts)} verdicts for {rows.num_rows} rows")
    if all(v is None for v in verdicts):
        return rows
    status = rows["status"].to_pylist()
    r_stage = rows["reject_stage"].to_pylist()
    r_code = rows["reject_code"].to_pylist()
    r_detail = rows["reject_detail"].to_pylist()
    for i, verdict in enumerate(verdicts):
        if verdict is None:
            continue
        status[i] = STATUS_REJECTED
        r_stage[i] = stage
        r_code[i] = str(verdict.code)
        r_detail[i] = verdict.detail
    for name, values in (
        ("status", status),
        ("reject_stage", r_stage),
        ("reject_code", r_code),
        ("reject_detail", r_detail),
    ):
        idx = rows.schema.get_field_index(name)
        rows = rows.set_column(idx, rows.schema.field(idx), pa.array(values, pa.string()))
    return rows


def empty_rows() -> pa.Table:
    return ROW_SCHEMA.empty_table()
