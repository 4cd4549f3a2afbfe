"""Reading a published release for the exporters: its manifest, its kept rows kind by kind
(one Parquet row group at a time), and its media wherever the shards say they are: embedded,
or a uri resolved against the release folder (``pipeline.release.portable.resolve_media_uri``),
so a release copied with its ``media/`` exports from the copy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from access.io import read_bytes
from pipeline.errors import UserError
from pipeline.release.portable import resolve_media_uri


def open_release(path: str) -> tuple[Path, dict[str, Any]]:
    root = Path(path)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{path}: not a release (no manifest.json; give the version folder, e.g. "
                        "out/releases/sample-world/demo)")
    return root, json.loads(manifest.read_text())


def shard_paths(root: Path, manifest: dict[str, Any], prefix: str) -> list[Path]:
    """Parquet shards whose path starts with ``prefix`` (``data/object-``, ``negatives/``,
    ``rejects/``), in manifest order; the folder's files when the manifest lists none."""
    listed = [root / s["path"] for s in manifest.get("shards", [])
              if s.get("path", "").startswith(prefix) and s["path"].endswith(".parquet")]
    return listed or sorted(root.glob(f"{prefix}*.parquet")) or sorted(root.glob(f"{prefix}**/*.parquet"))


def kinds(manifest: dict[str, Any], root: Path) -> list[str]:
    found = {Path(s["path"]).name.rsplit("-", 1)[0] for s in manifest.get("shards", [])
             if s.get("path", "").startswith("data/") and s["path"].endswith(".parquet")}
    found |= {p.name.rsplit("-", 1)[0] for p in (root / "data").glob("*.parquet")}
    return sorted(found)


def iter_batches(paths: list[Path], batch_size: int = 1024) -> Iterator[pa.Table]:
    for path in paths:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=batch_size):
            yield pa.Table.from_batches([batch])


def media_data(root: Path, row: dict[str, Any], index: int) -> bytes:
    """The bytes of ``row``'s media ref ``index``: embedded, relative to the release, or as given."""
    embedded = row.get("media_bytes")
    if embedded:
        return bytes(embedded[index])
    return read_bytes(resolve_media_uri(str(root), row["media"][index]["uri"]))
