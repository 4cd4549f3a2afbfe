"""Manifests cut into blocks, so that every stage runs on all the cores it is given.

A JSON-lines manifest is cut at line boundaries into ranges of about ``lines_per_block`` lines:
the driver streams the file once (``plan_blocks``, the same pass that counts its records) and
keeps one ``(start byte, end byte, first line)`` per block, never the lines. Each ingest task
reads its byte range and numbers its lines from ``first line``, so ``source_ref`` is the same as
with one block. A Parquet manifest is one block (its rows are read by row group inside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from access.io import filesystem_for

DEFAULT_LINES_PER_BLOCK = 2000
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Block:
    uri: str
    start: int  # byte offset of the block's first line
    end: int  # byte offset after its last line (-1: to the end of the file)
    first_line: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_blocks(uri: str, lines_per_block: int = DEFAULT_LINES_PER_BLOCK) -> list[Block]:
    """The blocks of one manifest (module docstring)."""
    if uri.endswith(".parquet") or lines_per_block <= 0:
        return [Block(uri, 0, -1, 1)]
    fs, path = filesystem_for(uri)
    blocks: list[Block] = []
    start, line, offset, lines_in_block = 0, 1, 0, 0
    with fs.open_input_stream(path) as fh:
        while True:
            chunk = fh.read(_READ_CHUNK)
            if not chunk:
                break
            pos = 0
            while True:
                nl = chunk.find(b"\n", pos)
                if nl < 0:
                    break
                lines_in_block += 1
                pos = nl + 1
                if lines_in_block == lines_per_block:
                    end = offset + pos
                    blocks.append(Block(uri, start, end, line))
                    line += lines_in_block
                    start, lines_in_block = end, 0
            offset += len(chunk)
    if offset > start or not blocks:
        blocks.append(Block(uri, start, -1, line))
    return blocks


def read_block(block: Block) -> bytes:
    fs, path = filesystem_for(block.uri)
    with fs.open_input_file(path) as fh:
        fh.seek(block.start)
        return fh.read() if block.end < 0 else fh.read(block.end - block.start)


class ParseBlocks:
    """Task: block descriptions -> ROW_SCHEMA rows."""

    def __init__(self, max_record_bytes: int, media_roots: Sequence[str] = ()) -> None:
        self.max_record_bytes, self.media_roots = max_record_bytes, list(media_roots)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.run.ingest import parse_manifest_bytes

        tables = []
        for spec in batch.to_pylist():
            block = Block(spec["uri"], spec["start"], spec["end"], spec["first_line"])
            data = read_block(block)
            tables.append(parse_manifest_bytes(data, block.uri, self.max_record_bytes, media_roots=self.media_roots,
                                               first_line=block.first_line))
        return pa.concat_tables(tables)
