"""The release as a stream: checks gathered block by block, shards written from a sorted stream.

1. :func:`gather`: duplicate ids from the ``id``/``status``/``source_ref`` columns of the rows
   whose id occurs twice (from the source), then the blocks' :meth:`ReleasePartial.of_block`,
   merged: counts, lint, media problems, report examples, metrics. A source that made them with
   the rows (``pipeline.release.runs``, after a Ray run) hands them over merged unless there
   are duplicate ids. The driver holds the partials, never the rows.
2. :func:`write_shards`: the rows through ``rows.prepare``, sorted by
   ``(_group, _kind, _id, _ref)``, arrive here in batches; :class:`ShardStreamWriter` buffers one
   shard at a time and rolls over at each group change and when the shard's ``_bytes`` reach the
   size target. Boundaries depend only on the rows, so the same inputs give the same shard bytes
   whatever the block layout or the number of workers.
3. Each data and negatives shard has its media made portable (``pipeline.release.portable``,
   the config's ``release.media``: relative to the release, copied into ``media/`` through the
   same ``put`` as the shards, or embedded), and a data shard's embedding columns are
   ``fixed_size_list`` with the widths decided over the whole kind
   (:meth:`NonNullCounts.embedding_shapes`), so every shard of a kind has one schema. Rejects
   keep every column and the URIs the build read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.release.card import describe_schema
from pipeline.release.kind_schemas import MARKER, NonNullCounts, fixed_size_embeddings, kind_columns
from pipeline.release.partials import ReleasePartial
from pipeline.release.portable import BYTES_COLUMN, NEGATIVE_BYTES_COLUMN, MediaMode, portable_media
from pipeline.release.rows import DUPLICATE_COLUMNS, SORT_COLUMNS, duplicate_losers, written_columns
from pipeline.release.shards import ShardInfo, encode_parquet, jsonl_chunks, shard_name
from pipeline.release.source import RowSource
from pipeline.run.config import MetricsConfig

log = logging.getLogger(__name__)

Put = Callable[[str, "bytes | Iterable[bytes]"], tuple[int, str]]


@dataclass
class Gathered:
    losers: dict[tuple[str, str], str]
    partial: ReleasePartial
    seconds: dict[str, float] = field(default_factory=dict)


class _PartialFn:
    """Picklable block function: a block -> its pickled :class:`ReleasePartial`."""

    def __init__(self, losers: Mapping[tuple[str, str], str], vocab: Mapping[str, int], per_code: int,
                 metrics_cfg: MetricsConfig | None, seed: int) -> None:
        self.losers, self.vocab, self.per_code = dict(losers), dict(vocab), per_code
        self.metrics_cfg, self.seed = metrics_cfg, seed

    def __call__(self, block: pa.Table) -> pa.Table:
        from pipeline.release.rows import mark_losers

        block = mark_losers(block, self.losers)
        return ReleasePartial.of_block(block, self.vocab, self.per_code, self.metrics_cfg, self.seed).to_table()


def gather(source: RowSource, inputs: Sequence[str], vocab: Mapping[str, int], *, per_code: int = 3,
           metrics_cfg: MetricsConfig | None = None, seed: int = 0) -> Gathered:
    t0 = time.perf_counter()
    losers = duplicate_losers(source.duplicate_candidates(DUPLICATE_COLUMNS), inputs)
    t1 = time.perf_counter()
    ready: ReleasePartial | None = getattr(source, "partial", None)  # merged as the rows were made
    if ready is not None and not losers:
        merged = ready
    else:  # a loser counts as a reject: the blocks' partials again, with the losers marked
        merged = ReleasePartial(metrics=None)
        for result in source.map_blocks(_PartialFn(losers, vocab, per_code, metrics_cfg, seed)):
            for part in ReleasePartial.from_table(result):
                merged.merge(part, per_code)
    t2 = time.perf_counter()
    log.info("release: %d duplicate row(s) in %.1fs; checks and metrics gathered in %.1fs",
             len(losers), t1 - t0, t2 - t1)
    return Gathered(losers, merged, {"duplicates": t1 - t0, "checks_and_metrics": t2 - t1})


def _runs(column: pa.ChunkedArray | pa.Array) -> Iterator[tuple[Any, int, int]]:
    """``(value, start, length)`` of each run of equal values of a sorted column."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.run_end_encode(array)
    start = 0
    for end, value in zip(encoded.run_ends.to_pylist(), encoded.values.to_pylist(), strict=True):
        yield value, start, end - start
        start = end


def shard_paths(group: str, index: int, jsonl: bool) -> tuple[str, list[tuple[str, str]]]:
    """``(kind in the manifest, [(path, format), ...])`` of shard ``index`` of ``group``."""
    family, _, rest = group.partition("/")
    if family == "data":
        paths = [(f"data/{shard_name(rest, index, 'parquet')}", "parquet")]
        if jsonl:
            paths.append((f"jsonl/{shard_name(rest, index, 'jsonl')}", "jsonl"))
        return rest, paths
    if family == "negatives":
        return "negatives", [(f"negatives/{shard_name(rest, index, 'parquet')}", "parquet")]
    return "rejects", [(f"{group}/{shard_name('part', index, 'parquet')}", "parquet")]


class ShardStreamWriter:
    """Shards from sorted, prepared batches; see the module docstring for the rollover rule."""

    def __init__(self, put: Put, target_bytes: int, jsonl: bool, watch: Iterable[str] = (),
                 non_null: NonNullCounts | None = None, media: MediaMode | None = None,
                 release_uri: str = "") -> None:
        self.put, self.target, self.jsonl = put, max(1, target_bytes), jsonl
        self.non_null = non_null
        # media refs of data and negatives shards (None: as they are); see the module docstring
        self.media, self.release_uri = media, release_uri
        self.media_files: dict[str, dict[str, Any]] = {}  # copied media: path -> path, bytes, sha256
        self.copied: dict[str, str] = {}  # source uri -> its path in the release
        self.schemas: dict[str, pa.Schema] = {}  # card config -> the schema of its first shard
        self.group: str | None = None
        self.index = 0
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.shards: list[ShardInfo] = []
        self.watch = set(watch)
        self.found: dict[str, str] = {}  # watched reject id -> its file
        self.rows = 0

    def add(self, batch: pa.Table) -> None:
        sizes = batch["_bytes"].to_numpy(zero_copy_only=False)
        for group, start, length in _runs(batch["_group"]):
            if group != self.group:
                self.flush()
                self.group, self.index = group, 0
            pos = start
            end = start + length
            while pos < end:
                cum = np.cumsum(sizes[pos:end])
                k = int(np.searchsorted(cum, self.target - self.buffered, side="left"))
                if k >= len(cum):  # the shard is not full yet
                    self._buffer(batch.slice(pos, end - pos), int(cum[-1]))
                    pos = end
                else:
                    self._buffer(batch.slice(pos, k + 1), int(cum[k]))
                    pos += k + 1
                    self.flush()

    def _buffer(self, piece: pa.Table, nbytes: int) -> None:
        self.buffer.append(piece)
        self.buffered += nbytes

    def flush(self) -> None:
        if not self.buffer or self.group is None:
            return
        table = pa.concat_tables(self.buffer, promote_options="permissive").combine_chunks()
        self.buffer, self.buffered = [], 0
        kind, paths = shard_paths(self.group, self.index, self.jsonl)
        if self.watch and kind == "rejects":
            for rid in table["id"].to_pylist():
                if rid in self.watch and rid not in self.found:
                    self.found[rid] = paths[0][0]
        data = self._shard_rows(kind, table)
        self.schemas.setdefault(card_name(self.group), data.schema)
        for path, fmt in paths:
            blob: bytes | Iterable[bytes] = encode_parquet(data) if fmt == "parquet" else jsonl_chunks(
                data.drop_columns([c for c in (BYTES_COLUMN, NEGATIVE_BYTES_COLUMN) if c in data.column_names]))
            size, digest = self.put(path, blob)
            self.shards.append(ShardInfo(path, kind, fmt, data.num_rows, size, digest))
        self.rows += data.num_rows
        self.index += 1

    def _shard_rows(self, kind: str, table: pa.Table) -> pa.Table:
        """The columns one shard of the current group stores, with its ``release_part`` marker
        (``pipeline.release.kind_schemas``): a kind's own columns and the columns its kept rows
        use; negative pairs their pair's columns; rejects every column. Media and embeddings as
        the module docstring says."""
        assert self.group is not None
        data = written_columns(self.group, table)
        if self.non_null is None:
            return data
        part = "data" if kind not in ("negatives", "rejects") else kind
        if part == "data":
            columns = kind_columns(kind, data.schema, self.non_null, part)
        else:
            columns = list(data.schema.names)
        out = data.select(columns)
        if part != "rejects" and self.media is not None:
            out = portable_media(out, self.media, self.release_uri, put=self.put, written=self.media_files,
                                 copied=self.copied)
        if part == "data":
            out = fixed_size_embeddings(out, self.non_null.embedding_shapes(kind))
        marker = pa.array([part] * out.num_rows, pa.string())
        out = out.append_column(pa.field(MARKER, pa.string(), nullable=False), marker)
        return out.cast(describe_schema(out.schema))

    def close(self) -> list[ShardInfo]:
        self.flush()
        return self.shards


def card_name(group: str) -> str:
    """The dataset card's config of a group: the kind, ``negatives`` or ``rejects``."""
    family, _, rest = group.partition("/")
    return rest if family == "data" else family


def write_shards(source: RowSource, losers: Mapping[tuple[str, str], str], put: Put, *, target_bytes: int,
                 jsonl: bool, watch: Iterable[str] = (), non_null: NonNullCounts | None = None,
                 media: MediaMode | None = None, release_uri: str = "") -> ShardStreamWriter:
    writer = ShardStreamWriter(put, target_bytes, jsonl, watch, non_null, media, release_uri)
    t0 = time.perf_counter()
    for batch in source.sorted_batches(losers, list(SORT_COLUMNS)):
        writer.add(batch)
    writer.close()
    log.info("release: %d rows in %d shard file(s) in %.1fs", writer.rows, len(writer.shards),
             time.perf_counter() - t0)
    return writer
