"""Verdicts of the dataset-level checks: one table schema for every check, the merge that keeps
one verdict per row, and the step that writes them onto the full rows (``stages.dataset_checks``
describes the checks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from schemas.reason_codes import ReasonCode
from schemas.records import STATUS_OK
from stages.base import Verdict, reject_rows

STAGE_NAME = "dataset_checks"  # the reject_stage of every verdict written here
PRIORITY = {"leakage": 0, "duplicate": 1, "template": 2}
VERDICT_SCHEMA = pa.schema([
    ("ref", pa.string()), ("check", pa.string()), ("priority", pa.int8()),
    ("code", pa.string()), ("detail", pa.string()),
    # For duplicate candidates from several bands: the kept row's rank, best first.
    ("w_pixels", pa.int64()), ("w_score", pa.float64()), ("w_id", pa.string()),
    ("image", pa.string()),  # the row's first image, for the report (templates fill it)
])


def row_refs(ids: Sequence[str | None], source_refs: Sequence[str | None]) -> list[str]:
    """A row's reference: id and source_ref (ids may still repeat before the release)."""
    return [f"{i}\x1f{s or ''}" for i, s in zip(ids, source_refs, strict=True)]


def unit_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(n, d) float32 unit rows from a list<float16> column without nulls."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    mat = flat.reshape(n, -1)
    return mat / np.linalg.norm(mat, axis=1, keepdims=True)


def verdict_table(refs: Sequence[str], check: str, code: ReasonCode, details: Sequence[str],
                  winners: Sequence[tuple[int, float, str]] | None = None,
                  images: Sequence[str | None] | None = None) -> pa.Table:
    n = len(refs)
    w = winners or [(None, None, None)] * n  # type: ignore[list-item]
    return pa.Table.from_arrays([
        pa.array(refs, pa.string()), pa.array([check] * n, pa.string()),
        pa.array([PRIORITY[check]] * n, pa.int8()), pa.array([str(code)] * n, pa.string()),
        pa.array(details, pa.string()), pa.array([x[0] for x in w], pa.int64()),
        pa.array([x[1] for x in w], pa.float64()), pa.array([x[2] for x in w], pa.string()),
        pa.array(list(images) if images is not None else [None] * n, pa.string()),
    ], schema=VERDICT_SCHEMA)


def merge_verdicts(tables: Sequence[pa.Table]) -> pa.Table:
    """One verdict per row: the first by priority (leakage, duplicate, template); between
    duplicate candidates, the one whose kept row ranks highest; then by detail."""
    tables = [t.select(VERDICT_SCHEMA.names).cast(VERDICT_SCHEMA) for t in tables if t.num_rows]
    if not tables:
        return VERDICT_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    table = table.sort_by([("ref", "ascending"), ("priority", "ascending"),
                           ("w_pixels", "descending"), ("w_score", "descending"),
                           ("w_id", "ascending"), ("detail", "ascending")])
    refs = table["ref"].to_numpy(zero_copy_only=False)
    first = np.ones(len(refs), bool)
    first[1:] = refs[1:] != refs[:-1]
    return table.filter(pa.array(first))


def apply_verdicts(rows: pa.Table, verdicts: dict[str, tuple[str, str]]) -> pa.Table:
    """``rows`` with each row whose reference has a verdict rejected at stage
    ``dataset_checks``; other rows (already rejected, fan-out, without verdict) unchanged."""
    if not verdicts or rows.num_rows == 0:
        return rows
    refs = row_refs(rows["id"].to_pylist(), rows["source_ref"].to_pylist())
    status = rows["status"].to_pylist()
    parents = rows["parent_id"].to_pylist() if "parent_id" in rows.column_names else [None] * len(refs)
    out: list[Verdict | None] = []
    for ref, st, parent in zip(refs, status, parents, strict=True):
        hit = verdicts.get(ref) if st == STATUS_OK and parent is None else None
        out.append(Verdict(ReasonCode(hit[0]), hit[1]) if hit else None)
    return reject_rows(rows, out, STAGE_NAME)


def verdict_lookup(merged: pa.Table) -> dict[str, tuple[str, str]]:
    return {r: (c, d) for r, c, d in zip(merged["ref"].to_pylist(), merged["code"].to_pylist(),
                                         merged["detail"].to_pylist(), strict=True)}
