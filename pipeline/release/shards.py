"""Shard writers: Parquet (zstd) and JSONL, deterministic zero-padded names, a size target.

A shard is hashed as it is written, so that the manifest's sha256 is the hash of exactly the
bytes on disk (and, after upload, in S3). JSONL is encoded a piece at a time.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the release directory
    kind: str
    format: str  # parquet | jsonl
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def split_by_size(table: pa.Table, target_bytes: int) -> Iterator[pa.Table]:
    """Consecutive slices of about ``target_bytes`` of Arrow memory each (at least one row)."""
    if table.num_rows == 0:
        return
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    rows_per_shard = max(1, target_bytes // per_row)
    for start in range(0, table.num_rows, rows_per_shard):
        yield table.slice(start, rows_per_shard)


def encode_parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, write_statistics=True)
    return sink.getvalue()


def _bytes_hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def jsonl_chunks(table: pa.Table, rows_per_chunk: int = 1024) -> Iterator[bytes]:
    """JSONL of ``table`` in pieces of ``rows_per_chunk`` lines: one JSON object per line, UTF-8
    with no ASCII or HTML escaping, NaN and infinities as null (JSON has neither), bytes as hex.
    Only one piece's rows are Python objects at a time (a whole 100 MB shard as Python objects
    was most of the release step's memory). orjson: the Python ``json`` module took about 10x
    as long (``benchmarks/bench_release.py``)."""
    for batch in table.to_batches(max_chunksize=rows_per_chunk):
        if batch.num_rows:
            yield b"\n".join(orjson.dumps(row, default=_bytes_hex) for row in batch.to_pylist()) + b"\n"


def encode_jsonl(table: pa.Table) -> bytes:
    return b"".join(jsonl_chunks(table))


def shard_name(prefix: str, index: int, ext: str) -> str:
    return f"{prefix}-{index:05d}.{ext}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
