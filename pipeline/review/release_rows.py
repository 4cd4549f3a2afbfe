"""Reading a published release for review, never all of it at once.

A release is opened from its ``manifest.json`` (or from a dataset directory through ``latest``);
its Parquet shards are read one record batch at a time with only the columns asked for, and the
rows a review needs are fetched by position, reading only the row groups that hold them. A row is
named by its shard and position (``data/object-00000.parquet#12``): ids are unique among kept
rows, but a duplicate id that the release rejected shares its id with the kept row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from access.io import filesystem_for, read_bytes
from pipeline.errors import UserError
from pipeline.release.versions import read_latest

MANIFEST = "manifest.json"
BATCH_ROWS = 8192


@dataclass(frozen=True)
class Shard:
    """One Parquet shard of a release. ``group`` is ``data``, ``negatives`` or ``rejects``;
    ``kind`` the row kind of a data shard; ``stage`` and ``code`` those of a reject shard."""

    index: int
    path: str
    group: str
    kind: str
    rows: int
    stage: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Release:
    uri: str
    manifest: dict[str, Any]
    shards: tuple[Shard, ...]

    @property
    def dataset(self) -> str:
        return str(self.manifest["dataset"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def dataset_uri(self) -> str:
        return self.uri.rsplit("/", 1)[0] if "/" in self.uri else "."

    def shard(self, path: str) -> Shard | None:
        return next((s for s in self.shards if s.path == path), None)


def row_key(shard: Shard | str, row: int) -> str:
    return f"{shard.path if isinstance(shard, Shard) else shard}#{row}"


def split_key(key: str) -> tuple[str, int]:
    """``(shard path, row)`` of a row key; ValueError when it is not one."""
    path, sep, row = key.rpartition("#")
    if not sep or not path.endswith(".parquet") or not row.isdigit():
        raise ValueError(f"not a row key (shard.parquet#row): {key!r}")
    return path, int(row)


def _shard(index: int, entry: dict[str, Any]) -> Shard:
    path = str(entry["path"])
    parts = path.split("/")
    group = parts[0]
    if group == "rejects" and len(parts) >= 4:
        return Shard(index, path, group, "rejects", int(entry["rows"]), parts[1], parts[2])
    return Shard(index, path, group, str(entry.get("kind") or group), int(entry["rows"]))


def open_release(uri: str) -> Release:
    """The release at ``uri`` (a version directory, or a dataset directory whose ``latest``
    names one; local or ``s3://``). UserError when there is no published release there."""
    uri = uri.rstrip("/") or "/"
    try:
        raw = read_bytes(f"{uri}/{MANIFEST}")
    except FileNotFoundError:
        latest = read_latest(uri)
        if latest:
            return open_release(f"{uri}/{latest}")
        raise UserError(f"{uri}: no {MANIFEST} (not a published release, nor a dataset with a latest version)"
                        ) from None
    try:
        manifest = json.loads(raw)
        shards = tuple(_shard(i, s) for i, s in enumerate(s for s in manifest["shards"] if s["format"] == "parquet"))
        if not (isinstance(manifest["dataset"], str) and isinstance(manifest["version"], str)):
            raise TypeError("dataset and version must be strings")
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{uri}/{MANIFEST}: not a release manifest ({type(err).__name__}: {err})") from None
    return Release(uri, manifest, shards)


@contextmanager
def _parquet(release: Release, shard: Shard) -> Iterator[pq.ParquetFile]:
    fs, path = filesystem_for(f"{release.uri}/{shard.path}")
    with fs.open_input_file(path) as fh:
        yield pq.ParquetFile(fh)


def _present(pf: pq.ParquetFile, columns: Sequence[str]) -> list[str]:
    names = set(pf.schema_arrow.names)
    return [c for c in columns if c in names]


def iter_batches(release: Release, shard: Shard, columns: Sequence[str],
                 batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(first row, batch)`` over the whole shard, with the asked-for columns it has."""
    with _parquet(release, shard) as pf:
        offset = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=_present(pf, columns)):
            yield offset, batch
            offset += batch.num_rows


def rows_at(release: Release, shard: Shard, rows: Iterable[int], columns: Sequence[str]) -> dict[int, dict[str, Any]]:
    """The rows at these positions as dicts of the asked-for columns; only the row groups that
    hold them are read. Positions past the shard's end are left out."""
    wanted = sorted(set(rows))
    out: dict[int, dict[str, Any]] = {}
    if not wanted:
        return out
    with _parquet(release, shard) as pf:
        present = _present(pf, columns)
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            inside = [r for r in wanted if start <= r < start + n]
            if inside:
                table = pf.read_row_group(g, columns=present)
                picked = table.take(pa.array([r - start for r in inside], pa.int64())).to_pylist()
                out.update(zip(inside, picked, strict=True))
            start += n
    return out


def find_ids(release: Release, shards: Iterable[Shard], ids: Iterable[str],
             columns: Sequence[str]) -> dict[str, tuple[Shard, int, dict[str, Any]]]:
    """The first row of each id (in shard order) among ``shards``: ``id -> (shard, row, dict)``.
    Reads the ``id`` column of each shard, then only the rows found."""
    todo = set(ids)
    found: dict[str, tuple[Shard, int, dict[str, Any]]] = {}
    for shard in shards:
        if not todo:
            break
        hits: dict[int, str] = {}
        for offset, batch in iter_batches(release, shard, ["id"]):
            col = batch.column(0)
            mask = pc.is_in(col, value_set=pa.array(sorted(todo), pa.string()))
            for pos in pc.indices_nonzero(mask).to_pylist():
                ident = col[pos].as_py()
                if ident in todo and ident not in hits.values():
                    hits[offset + pos] = ident
        for row, record in rows_at(release, shard, hits, columns).items():
            found[hits[row]] = (shard, row, record)
            todo.discard(hits[row])
    return found
