"""Reading a release's shards without torch: the manifest index, shard integrity, the split of
rows between consumers, and the Ray Data path (``read_parquet`` + a span check per batch).

A release (DESIGN.md) is read through its ``manifest.json``, the commit marker: only the Parquet
shards it lists under ``data/`` are read, and a shard whose row count (always) or sha256 (with
``verify_sha256``) differs from the manifest raises :class:`ShardIntegrityError`. Ray workers
import this module, not the torch loader, so they start in about a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from access.io import filesystem_for, read_bytes
from schemas.placeholder_grammar import DEFAULT_VOCAB, MODALITIES
from schemas.placeholders import PlaceholderLinter

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "xmodal-release/1"
OnError = Literal["raise", "skip"]
RAY_CHECK_CPUS = 0.5  # fractional, as the pipeline's stages: a 2-core machine still makes progress


class ReleaseReadError(RuntimeError):
    """The release cannot be read: no manifest (not published), unknown format."""


class ShardIntegrityError(RuntimeError):
    """A shard differs from what ``manifest.json`` says about it (rows, sha256)."""


class MalformedSampleError(ValueError):
    """One row fails its checks; names the shard, the row id, the rule and what is wrong."""

    def __init__(self, shard: str, sample_id: str, rule: str, detail: str) -> None:
        super().__init__(f"malformed sample {sample_id!r} in shard {shard}: {rule}: {detail}")
        self.shard, self.sample_id, self.rule, self.detail = shard, sample_id, rule, detail


@dataclass(frozen=True)
class ShardEntry:
    """One Parquet shard as the manifest lists it; ``uri`` is absolute (path or s3://)."""

    uri: str
    kind: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ReleaseIndex:
    """A published release version: its URI, its manifest and its data shards in manifest order."""

    uri: str
    manifest: Mapping[str, Any]
    shards: tuple[ShardEntry, ...]

    def select(self, kinds: Sequence[str] | None = None) -> tuple[ShardEntry, ...]:
        return tuple(s for s in self.shards if kinds is None or s.kind in kinds)

    def vocab(self, override: Mapping[str, int] | None = None) -> dict[str, int]:
        """Token vocabulary sizes for the span check: ``override``, else the manifest's
        ``placeholder_vocab`` when it records one, else the grammar's default."""
        given = override if override is not None else self.manifest.get("placeholder_vocab") or {}
        return {m: int(given.get(m, DEFAULT_VOCAB)) for m in MODALITIES}


def open_release(uri: str) -> ReleaseIndex:
    """Open ``<root>/<dataset>/<version>`` or ``<root>/<dataset>`` (follows its ``latest``)."""
    uri = uri.rstrip("/")
    fs, path = filesystem_for(uri)
    if not fs.get_file_info(f"{path}/manifest.json").is_file:
        if not fs.get_file_info(f"{path}/latest").is_file:
            raise ReleaseReadError(f"{uri}: no manifest.json (not a published release) and no latest pointer")
        uri = f"{uri}/{read_bytes(f'{uri}/latest').decode().strip()}"
    try:
        manifest = json.loads(read_bytes(f"{uri}/manifest.json"))
    except FileNotFoundError:
        raise ReleaseReadError(f"{uri}: no manifest.json (not a published release)") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ReleaseReadError(f"{uri}: manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    shards = tuple(
        ShardEntry(f"{uri}/{s['path']}", s["kind"], int(s["rows"]), int(s["bytes"]), s["sha256"])
        for s in manifest["shards"]
        if s["format"] == "parquet" and s["path"].startswith("data/")
    )
    return ReleaseIndex(uri, manifest, shards)


def read_shard(shard: ShardEntry, *, verify_sha256: bool = False, columns: Sequence[str] | None = None) -> pa.Table:
    """Read one shard; raises :class:`ShardIntegrityError` when it is not the one in the manifest."""
    if verify_sha256:
        data = read_bytes(shard.uri)
        got = hashlib.sha256(data).hexdigest()
        if got != shard.sha256:
            raise ShardIntegrityError(f"shard {shard.uri}: sha256 {got}, manifest says {shard.sha256}")
        table = pq.read_table(pa.BufferReader(data), columns=list(columns) if columns else None)
    else:
        fs, path = filesystem_for(shard.uri)
        table = pq.read_table(path, filesystem=fs, columns=list(columns) if columns else None)
    if table.num_rows != shard.rows:
        raise ShardIntegrityError(f"shard {shard.uri}: {table.num_rows} rows, manifest says {shard.rows}")
    return table


def partition_rows(shard_rows: Sequence[int], part: int, num_parts: int) -> list[tuple[int, int, int]]:
    """The ``part``-th of ``num_parts`` contiguous ranges of the shards' concatenated rows, as
    ``(shard index, start, stop)`` pieces. The ranges cover every row once and differ in size by
    at most one row."""
    if not 0 <= part < num_parts:
        raise ValueError(f"part {part} is not in [0, {num_parts})")
    total = sum(shard_rows)
    lo, hi = part * total // num_parts, (part + 1) * total // num_parts
    pieces, offset = [], 0
    for i, rows in enumerate(shard_rows):
        start, stop = max(lo, offset), min(hi, offset + rows)
        if start < stop:
            pieces.append((i, start - offset, stop - offset))
        offset += rows
    return pieces


# ---- Ray Data ---------------------------------------------------------------------------------
def check_batch(batch: pa.Table, *, vocab: Mapping[str, int], on_error: OnError, path_column: str = "path",
                release_uri: str | None = None) -> pa.Table:
    """Lint one Ray Data batch read with ``include_paths=True``: raise :class:`MalformedSampleError`
    on the first malformed row, or drop (and log) malformed rows; the path column is removed.
    With ``release_uri``, media uris are resolved against it (they are relative to the release)."""
    verdicts = PlaceholderLinter(vocab).check_columns(batch["content"], batch["media"], batch["kind"])
    bad = [i for i, v in enumerate(verdicts) if v is not None]
    for i in bad:
        rule, detail = verdicts[i]  # type: ignore[misc]
        exc = MalformedSampleError(batch[path_column][i].as_py(), batch["id"][i].as_py(), f"placeholder/{rule}", detail)
        if on_error == "raise":
            raise exc
        log.warning("skipped %s", exc)
    if bad:
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[bad] = False
        batch = batch.filter(pa.array(keep))
    if release_uri is not None:
        from pipeline.release.portable import resolve_media_column

        batch = resolve_media_column(batch, release_uri)
    return batch.drop_columns([path_column])


def _verify_shard(shard: ShardEntry) -> int:
    return read_shard(shard, verify_sha256=True, columns=["id"]).num_rows


def ray_dataset(
    release_uri: str,
    *,
    kinds: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    on_error: OnError = "raise",
    verify_sha256: bool = False,
    vocab: Mapping[str, int] | None = None,
) -> Any:
    """A ``ray.data.Dataset`` of a release's checked rows (``read_parquet`` over the shards that
    ``manifest.json`` lists), ready for ``map_batches`` preprocessing and ``iter_torch_batches``
    (or ``ray.train.get_dataset_shard(...).iter_torch_batches`` inside Ray Train).

    ``verify_sha256`` hashes every shard in Ray tasks before reading; ``vocab`` as in
    :meth:`ReleaseIndex.vocab`. Only the spans are checked here (media decoding belongs to the
    caller's ``map_batches``; the ``media`` uris arrive resolved against the release). Skipped
    rows are logged by the Ray task that drops them, not counted. Embedding columns with one
    vector a row are ``fixed_size_list`` and become ``(batch, d)`` tensors; string and other list
    columns do not become tensors: select numeric columns or pass a ``collate_fn`` to
    ``iter_torch_batches``."""
    import ray

    index = open_release(release_uri)
    shards = index.select(kinds)
    if not shards:
        raise ReleaseReadError(f"{release_uri}: no data shards of kinds {list(kinds or [])}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if verify_sha256:
        verify = ray.remote(num_cpus=RAY_CHECK_CPUS)(_verify_shard)
        ray.get([verify.remote(s) for s in shards])
    fs, _ = filesystem_for(shards[0].uri)
    ds = ray.data.read_parquet([filesystem_for(s.uri)[1] for s in shards], filesystem=fs, include_paths=True)
    if columns is not None:
        ds = ds.select_columns(sorted(set(columns) | {"id", "kind", "content", "media", "path"}))
    check_vocab = index.vocab(vocab)

    release_root = index.uri

    def check(batch: pa.Table) -> pa.Table:
        return check_batch(batch, vocab=check_vocab, on_error=on_error, release_uri=release_root)

    ds = ds.map_batches(check, batch_format="pyarrow", num_cpus=RAY_CHECK_CPUS)
    return ds.select_columns(list(columns)) if columns is not None else ds
