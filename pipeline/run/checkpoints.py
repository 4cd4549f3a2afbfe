"""Stage checkpoints of a Ray run: where each step keeps its output, the key that says whether
it can be reused, and the row count of a staged folder (Parquet footers only). No Ray here:
``pipeline.run.ray_runner`` writes and reads the folders; nightly builds open the block.

Every stage's output is materialised under ``<root>/stages/NN-<stage>-<key>/data/`` with a
``_done.json`` marker written after it. ``key`` chains the code version, the inputs (URI, size,
mtime) and every stage spec up to that stage, so a changed config or input never reuses a stale
stage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from access.io import filesystem_for
from pipeline.run.config import RunConfig, StageSpec

DONE_MARKER = "_done.json"

_checkpoint_root: ContextVar[str | None] = ContextVar("xmodal_stage_checkpoints", default=None)


@contextmanager
def stage_checkpoints(root_uri: str) -> Iterator[None]:
    """Inside this block, Ray runs checkpoint every stage under ``root_uri`` and resume from the
    last completed one. It lets ``pipeline.run.run_config`` (which owns the release) be resumable
    without a parameter of its own."""
    token = _checkpoint_root.set(root_uri)
    try:
        yield
    finally:
        _checkpoint_root.reset(token)


@dataclass(frozen=True)
class StageCheckpoint:
    """Where one step (``ingest`` or a stage) of a checkpointed run keeps its output."""

    index: int
    name: str
    uri: str  # <root>/stages/NN-<name>-<key>

    @property
    def data_uri(self) -> str:
        return f"{self.uri}/data"

    @property
    def marker_uri(self) -> str:
        return f"{self.uri}/{DONE_MARKER}"

    def is_done(self) -> bool:
        fs, path = filesystem_for(self.marker_uri)
        return bool(fs.get_file_info(path).is_file)


def _input_identity(uri: str) -> dict[str, Any]:
    """URI, size and mtime: cheap to get for local files and S3 objects, unlike a content hash."""
    fs, path = filesystem_for(uri)
    info = fs.get_file_info(path)
    mtime = info.mtime_ns if info.type == pafs.FileType.File else None
    return {"uri": uri, "size": info.size, "mtime_ns": mtime}


def plan_checkpoints(cfg: RunConfig, root_uri: str, stages: Sequence[StageSpec]) -> list[StageCheckpoint]:
    """One checkpoint per step, ``ingest`` first; each key hashes everything the step depends on."""
    from pipeline.run.versioning import code_version

    seed = {"code": code_version(), "inputs": [_input_identity(u) for u in cfg.inputs],
            "max_record_bytes": cfg.max_record_bytes, "media_roots": cfg.media_roots}
    digest = hashlib.sha256(json.dumps(seed, sort_keys=True).encode()).hexdigest()
    steps: list[tuple[str, Any]] = [("ingest", None)] + [(s.name, s.model_dump(mode="json")) for s in stages]
    plan = []
    for i, (name, spec) in enumerate(steps):
        digest = hashlib.sha256((digest + json.dumps(spec, sort_keys=True)).encode()).hexdigest()
        plan.append(StageCheckpoint(i, name, f"{root_uri.rstrip('/')}/stages/{i:02d}-{name}-{digest[:12]}"))
    return plan


def count_parquet_rows(uri: str, seen: dict[str, int] | None = None) -> int:
    """Rows in the Parquet files under ``uri`` (footers only). ``seen`` caches per-file counts
    between calls; a file that is still being written is skipped until it is complete."""
    import pyarrow.parquet as pq

    fs, path = filesystem_for(uri)
    seen = {} if seen is None else seen
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return sum(seen.values())
    for info in infos:
        if info.is_file and info.path.endswith(".parquet") and info.path not in seen:
            try:
                with fs.open_input_file(info.path) as fh:
                    seen[info.path] = pq.read_metadata(fh).num_rows
            except (OSError, pa.ArrowInvalid):
                pass  # not complete yet
    return sum(seen.values())


def checkpoint_root() -> str | None:
    """The root of the enclosing :func:`stage_checkpoints` block, if any."""
    return _checkpoint_root.get()
