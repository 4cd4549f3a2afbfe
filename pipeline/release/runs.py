"""The release's work done where the rows are made, and a merge of sorted runs on the driver.

A Ray run does not hand the release a folder to read three more times. Its last step calls
:class:`RunMaker` on every block of (about) ``RUN_ROWS`` rows, on the workers, as the rows leave
the last stage:

- the block's :class:`~pipeline.release.partials.ReleasePartial` (counts, lint, examples,
  metrics), returned to the driver as one small row and merged there by :class:`RunCollector`;
- a **run**: the block through ``rows.prepare`` (no duplicate ids known yet), sorted by
  ``SORT_COLUMNS``, written as one Parquet file of small row groups;
- an **id run**: the block's ``ok`` rows' ``id``/``source_ref``, sorted by ``id``.

The release then reads the runs through :class:`RunsSource` on the driver, without Ray: the
duplicate ids from a k-way merge of the id runs; the shards from a k-way merge of the runs
(:func:`merge_sorted`), which yields the rows in the same total order ``(_group, _kind, _id,
_ref)`` a global sort would, so the shard bytes are the same whatever the block layout. The
driver holds one row group per run (``RUN_ROW_GROUP`` rows) and the merged batch; with more than
``FAN_IN`` runs it first merges them ``FAN_IN`` at a time into longer runs beside them.

Duplicate ids are rare and known only once every run exists: their losers are taken out of the
merge, marked (``rows.prepare`` with the losers) and merged back as one more run, and the
partials are then recomputed from the runs, one run at a time, because a loser counts as a
reject. Without duplicates the release reads each run once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from access.io import filesystem_for
from pipeline.release.partials import ReleasePartial
from pipeline.release.rows import HELPER_COLUMNS, SORT_COLUMNS, prepare
from pipeline.run.config import MetricsConfig
from schemas.records import STATUS_OK

RUN_ROWS = 20_000  # at most, rows per run: fewer runs, a smaller merge
MIN_RUN_ROWS = 2_000
RUN_ROW_GROUP = 1024  # what the merge holds of each run
FAN_IN = 64  # runs merged at once
RUN_CODEC = "lz4"  # runs are read once: a fast codec (zstd reads them ~2.5x slower)
ID_COLUMNS = ("id", "source_ref")
BlockFn = Callable[[pa.Table], pa.Table]


def rows_per_run(records: int, cpus: int) -> int:
    """Rows per run: a few runs per CPU for a small build (one 20 k-row task at the end would
    wait for every row, on one core), ``RUN_ROWS`` for a large one (fewer runs to merge)."""
    return max(MIN_RUN_ROWS, min(RUN_ROWS, records // max(1, 4 * cpus)))


def _sorted(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))


def _ok(table: pa.Table) -> pa.Array:
    return pc.fill_null(pc.equal(table["status"], STATUS_OK), False)


class RunMaker:
    """Picklable: one block -> its run and id run written under ``staging_uri``, and a summary
    row (the partial, the files, rows, seconds); see the module docstring."""

    def __init__(self, staging_uri: str, vocab: Mapping[str, int], per_code: int,
                 metrics_cfg: MetricsConfig | None, seed: int) -> None:
        self.staging_uri = staging_uri.rstrip("/")
        self.vocab, self.per_code, self.metrics_cfg, self.seed = dict(vocab), per_code, metrics_cfg, seed

    def __call__(self, block: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        partial = ReleasePartial.of_block(block, self.vocab, self.per_code, self.metrics_cfg, self.seed)
        name = uuid.uuid4().hex
        files = {"run": _sorted(prepare(block, {}), SORT_COLUMNS),
                 "ids": _sorted(block.filter(pc.and_(_ok(block), pc.is_valid(block["id"]))).select(list(ID_COLUMNS)),
                                ["id"])}
        summary = partial.to_table()
        for kind, table in files.items():
            uri = f"{self.staging_uri}/{kind}/{name}.parquet"
            write_run(table, uri)
            summary = summary.append_column(f"file_{kind}", pa.array([uri], pa.string()))
        summary = summary.append_column("rows", pa.array([block.num_rows], pa.int64()))
        return summary.append_column("seconds", pa.array([time.perf_counter() - t0], pa.float64()))


def write_run(table: pa.Table, uri: str) -> None:
    fs, path = filesystem_for(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        pq.write_table(table, out, compression=RUN_CODEC, row_group_size=RUN_ROW_GROUP)


@dataclass
class RunCollector:
    """The driver's side of :class:`RunMaker`: merges each block's partial as it arrives and
    keeps the runs' paths (a path per block, whatever files a retried task left behind)."""

    per_code: int
    partial: ReleasePartial = field(default_factory=lambda: ReleasePartial(metrics=None))
    runs: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0

    def __call__(self, summary: pa.Table) -> None:
        for part in ReleasePartial.from_table(summary):
            self.partial.merge(part, self.per_code)
        self.runs.extend(summary["file_run"].to_pylist())
        self.ids.extend(summary["file_ids"].to_pylist())
        self.rows += int(pc.sum(summary["rows"]).as_py() or 0)
        self.seconds += float(pc.sum(summary["seconds"]).as_py() or 0.0)

    def timing(self) -> dict[str, object]:
        return {"stage": "release_runs", "rows_in": self.rows, "rows_out": self.rows,
                "seconds": round(self.seconds, 4)}

    def source(self, work_uri: str) -> RunsSource:
        return RunsSource(self.runs, self.ids, work_uri, self.partial)


# ---- the merge --------------------------------------------------------------------------------
def _le_count(table: pa.Table, keys: Sequence[str], bound: tuple[str, ...]) -> int:
    """Rows of the sorted ``table`` whose ``keys`` are <= ``bound`` (a prefix)."""
    cond = pc.less_equal(table[keys[-1]], bound[-1])
    for k, b in zip(reversed(keys[:-1]), reversed(bound[:-1]), strict=True):
        cond = pc.or_(pc.less(table[k], b), pc.and_(pc.equal(table[k], b), cond))
    return int(pc.sum(pc.cast(cond, pa.int64())).as_py() or 0)


def _key(table: pa.Table, keys: Sequence[str], row: int) -> tuple[str, ...]:
    return tuple(table[k][row].as_py() for k in keys)


def merge_sorted(streams: Sequence[Iterator[pa.Table]], keys: Sequence[str],
                 schema: pa.Schema | None = None) -> Iterator[pa.Table]:
    """The rows of ``streams`` (each sorted by ``keys``, non-null strings) in one sorted stream.

    Each round emits every buffered row <= the smallest last key of the buffers, so a run whose
    buffer is spent is read again before the next round; the driver holds one batch per stream."""
    bufs: list[pa.Table | None] = [None] * len(streams)

    def refill(i: int) -> None:
        while bufs[i] is None or bufs[i].num_rows == 0:  # type: ignore[union-attr]
            nxt = next(streams[i], None)
            if nxt is None:
                bufs[i] = None
                return
            bufs[i] = nxt if schema is None else conform(nxt, schema)

    live = []
    for i in range(len(streams)):
        refill(i)
        if bufs[i] is not None:
            live.append(i)
    while live:
        bound = min(_key(bufs[i], keys, bufs[i].num_rows - 1) for i in live)  # type: ignore[union-attr]
        pieces = []
        for i in live:
            buf = bufs[i]
            assert buf is not None
            if _key(buf, keys, 0) > bound:
                continue
            n = buf.num_rows if _key(buf, keys, buf.num_rows - 1) <= bound else _le_count(buf, keys, bound)
            pieces.append(buf.slice(0, n))
            bufs[i] = buf.slice(n)
            refill(i)
        live = [i for i in live if bufs[i] is not None]
        yield pieces[0] if len(pieces) == 1 else _sorted(pa.concat_tables(pieces, promote_options="permissive"), keys)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, in its order (missing ones null)."""
    # str(): Arrow's type equality ignores a list's child name, which the shards' bytes keep
    if str(table.schema) == str(schema) and table.schema.equals(schema, check_metadata=True):
        return table
    columns = [(table[f.name] if str(table.schema.field(f.name).type) == str(f.type) else table[f.name].cast(f.type))
               if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _batches(uri: str, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    fs, path = filesystem_for(uri)
    with fs.open_input_file(path) as fh:
        reader = pq.ParquetFile(fh)
        for batch in reader.iter_batches(batch_size=RUN_ROW_GROUP, columns=list(columns) if columns else None):
            yield pa.Table.from_batches([batch])


def _arrow_lists(t: pa.DataType) -> pa.DataType:
    """``t`` with Arrow's list child name (``item``) where Parquet reads back ``element``, so a
    row read from a run has the type it had before it was written."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        f = t.value_field
        child = pa.field("item", _arrow_lists(f.type), f.nullable, f.metadata)
        if pa.types.is_fixed_size_list(t):
            return pa.list_(child, t.list_size)
        return pa.large_list(child) if pa.types.is_large_list(t) else pa.list_(child)
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _arrow_lists(f.type), f.nullable, f.metadata) for f in t])
    return t


def _schema(uris: Sequence[str]) -> pa.Schema:
    schemas = []
    for uri in uris:
        fs, path = filesystem_for(uri)
        with fs.open_input_file(path) as fh:
            schemas.append(pq.read_schema(fh))
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    return pa.schema([pa.field(f.name, _arrow_lists(f.type), f.nullable, f.metadata) for f in unified],
                     metadata=unified.metadata)


def merged_runs(uris: Sequence[str], keys: Sequence[str], work_uri: str, extra: pa.Table | None = None,
                drop: pa.Array | None = None) -> Iterator[pa.Table]:
    """The rows of the run files ``uris`` (less the ``drop`` pairs, plus the sorted ``extra``)
    in one sorted stream; with more than ``FAN_IN`` runs they are merged ``FAN_IN`` at a time
    into runs under ``work_uri`` first, so the driver never holds more than ``FAN_IN`` row groups."""
    uris = list(uris)
    if not uris:
        return iter(() if extra is None else [extra])
    schema = _schema(uris)
    streams = [_batches(u) if drop is None else _without(_batches(u), drop) for u in uris]
    level = 0
    while len(streams) > FAN_IN:
        longer = []
        for start in range(0, len(streams), FAN_IN):
            out = f"{work_uri.rstrip('/')}/merge-{level}/{uuid.uuid4().hex}.parquet"
            _write_stream(merge_sorted(streams[start:start + FAN_IN], keys, schema), out, schema)
            longer.append(out)
        streams, level = [_batches(u) for u in longer], level + 1
    if extra is not None:
        streams.append(iter([extra]))
    return merge_sorted(streams, keys, schema)


def _write_stream(batches: Iterator[pa.Table], uri: str, schema: pa.Schema | None) -> None:
    fs, path = filesystem_for(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        writer = None
        for batch in batches:
            writer = writer or pq.ParquetWriter(out, schema or batch.schema, compression=RUN_CODEC)
            writer.write_table(batch, row_group_size=RUN_ROW_GROUP)
        if writer is not None:
            writer.close()


# ---- the release's row source -----------------------------------------------------------------
def _pair_keys(ids: pa.ChunkedArray | pa.Array, refs: pa.ChunkedArray | pa.Array) -> pa.Array:
    joined = pc.binary_join_element_wise(pc.fill_null(ids, ""), pc.fill_null(refs, ""), "\x00")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


class RunsSource:
    """The runs of a Ray run as a :class:`~pipeline.release.source.RowSource`, read on the driver
    (module docstring). ``partial``: the blocks' partials merged as they were made."""

    def __init__(self, runs: Sequence[str], ids: Sequence[str], work_uri: str,
                 partial: ReleasePartial | None = None) -> None:
        self.runs, self.ids, self.work_uri = list(runs), list(ids), work_uri
        self.partial = partial

    def map_blocks(self, fn: BlockFn) -> Iterator[pa.Table]:
        for uri in self.runs:
            table = pa.concat_tables(list(_batches(uri)), promote_options="permissive")
            yield fn(table.drop_columns([c for c in HELPER_COLUMNS if c in table.column_names]))

    def duplicate_candidates(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """Equal ids are adjacent in the merged id runs; a run of them may cross a batch, so the
        last id of each batch waits for the next."""
        tail: pa.Table | None = None
        merged = merged_runs(self.ids, ["id"], f"{self.work_uri}/ids") if self.ids else iter(())
        for batch in [*merged, None]:
            if batch is None:
                table = tail
            else:
                table = batch if tail is None else pa.concat_tables([tail, batch], promote_options="permissive")
                last = table["id"][table.num_rows - 1]
                cut = table.num_rows - int(pc.sum(pc.cast(pc.equal(table["id"], last), pa.int64())).as_py() or 0)
                table, tail = table.slice(0, cut), table.slice(cut)
            if table is None or table.num_rows == 0:
                continue
            counts = table.group_by("id").aggregate([("id", "count")])
            many = counts.filter(pc.greater(counts["id_count"], 1))["id"]
            if len(many):
                rows = table.filter(pc.is_in(table["id"], many))
                status = pa.array([STATUS_OK] * rows.num_rows, pa.string())
                yield rows.append_column("status", status).select(list(columns))

    def sorted_batches(self, losers: Mapping[tuple[str, str], str], keys: Sequence[str]) -> Iterator[pa.Table]:
        """Every row in ``keys`` order; the losers of duplicate ids marked (module docstring)."""
        if not self.runs:
            return iter(())
        if not losers:
            return merged_runs(self.runs, keys, f"{self.work_uri}/rows")
        wanted = pa.array(sorted(f"{i}\x00{r}" for i, r in losers), pa.string())
        marked = []
        for uri in self.runs:
            for batch in _batches(uri):
                hit = pc.and_(_ok(batch), pc.is_in(_pair_keys(batch["_id"], batch["_ref"]), wanted))
                if pc.any(hit).as_py():
                    rows = batch.filter(hit)
                    marked.append(prepare(rows.drop_columns([c for c in HELPER_COLUMNS if c in rows.column_names]),
                                          losers))
        extra = _sorted(pa.concat_tables(marked, promote_options="permissive"), keys) if marked else None
        return merged_runs(self.runs, keys, f"{self.work_uri}/rows", extra=extra, drop=wanted)


def _without(batches: Iterator[pa.Table], wanted: pa.Array) -> Iterator[pa.Table]:
    for batch in batches:
        yield batch.filter(pc.invert(pc.and_(_ok(batch), pc.is_in(_pair_keys(batch["_id"], batch["_ref"]), wanted))))
