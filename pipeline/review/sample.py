"""The review sample: seeded, stratified, drawn by streaming the release's shards.

Strata (a row can be in several; it is shown once, under the first in this order):

- ``reject:<CODE>``: the rows each reason code rejected, up to ``per_code`` per code;
- ``flipped``: augmented rows whose transforms include a flip, shown beside their parent;
- ``laterality``: rows whose left/right is part of the label (mirror flips are the classic
  silent failure, so they are sampled apart from the rest);
- ``negative:<type>``: kept negative pairs of each type, the positive beside the negative
  (what the false-negative filter dropped is ``reject:ERR_CROSS_MDL_HARD_NEG``);
- ``kept:<kind>``: kept rows without a parent, of every kind (``kept:segment`` are the
  segments to replay).

Every stratum but the reject codes takes up to ``kept`` rows. Selection is bottom-k on a hash
of (seed, shard path, row): the same seed gives the same sample whatever the shard order, and
only the light columns of one batch plus ``k`` candidates per stratum are in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.review.release_rows import Release, Shard, find_ids, iter_batches, row_key, rows_at

LIGHT_COLUMNS = ("kind", "parent_id", "laterality", "augment_transforms", "negative_type")
# What the page shows; embeddings and decoded pixels are never read.
DISPLAY_COLUMNS = (
    "id", "kind", "content", "media", "boxes", "boxes_xyxy", "captions", "laterality", "parent_id",
    "start_us", "duration_us", "subtitles", "words", "items", "doc_window", "doc_windows",
    "reject_stage", "reject_code", "reject_detail", "source_ref", "manifest_root", "review_status",
    "av_offset_us", "av_offset_score", "alignment", "continuity_tau", "dtw_method", "dtw_cost",
    "augment_transforms", "negative_type", "negative_text", "negative_media", "negative_edit",
    "positive_text", "negative_similarity", "positive_similarity", "negative_verdict", "negative_shift_us",
    "clip_score", "clip_caption_scores", "clip_box_scores", "chair_i", "chair_s",
)
_ORDER = ("reject:", "flipped", "laterality", "negative:", "kept:")


@dataclass
class SampledRow:
    """One sampled row: where it is, why it was drawn, what the release decided, its columns and
    (for an augmented row) its parent's."""

    shard: Shard
    row: int
    strata: list[str]
    record: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return row_key(self.shard, self.row)

    @property
    def check(self) -> str:
        """``kept``, or the reason code that rejected the row."""
        return "kept" if self.shard.group != "rejects" else str(self.shard.code or self.record.get("reject_code"))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "id": self.record.get("id"), "kind": self.record.get("kind"),
                "check": self.check, "stage": self.shard.stage, "strata": self.strata}


@dataclass
class Sample:
    rows: list[SampledRow]
    population: dict[str, int]  # rows of the release in each stratum
    seed: int
    per_code: int
    kept: int


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64, elementwise (uint64 arithmetic wraps)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def priorities(seed: int, shard_path: str, first_row: int, n: int) -> np.ndarray:
    """The sampling priority of rows ``first_row .. first_row + n`` of a shard."""
    salt = _mix(np.array([(seed & 0xFFFFFFFF) << 32 | zlib.crc32(shard_path.encode())], np.uint64))[0]
    return _mix(np.arange(first_row, first_row + n, dtype=np.uint64) ^ salt)


def _bool(batch: pa.RecordBatch, name: str, fn: Any = None) -> np.ndarray:
    if name not in batch.schema.names:
        return np.zeros(batch.num_rows, bool)
    col = batch.column(name)
    col = fn(col) if fn is not None else col
    return np.asarray(pc.fill_null(col, False).to_numpy(zero_copy_only=False), bool)


def stratum_masks(shard: Shard, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Which rows of ``batch`` (from ``shard``) belong to each stratum."""
    n = batch.num_rows
    if shard.group == "rejects":
        return {f"reject:{shard.code}": np.ones(n, bool)}
    if shard.group == "negatives":
        if "negative_type" not in batch.schema.names:
            return {"negative:unknown": np.ones(n, bool)}
        types = np.asarray(pc.fill_null(batch.column("negative_type"), "unknown").to_numpy(zero_copy_only=False))
        return {f"negative:{t}": types == t for t in np.unique(types)}
    child = _bool(batch, "parent_id", pc.is_valid)
    kind = batch.column("kind") if "kind" in batch.schema.names else None
    kinds = (np.asarray(pc.fill_null(kind, shard.kind).to_numpy(zero_copy_only=False)) if kind is not None
             else np.full(n, shard.kind, object))
    out = {f"kept:{k}": (kinds == k) & ~child for k in np.unique(kinds)}
    out["laterality"] = _bool(batch, "laterality")
    out["flipped"] = child & _bool(batch, "augment_transforms", lambda c: pc.match_substring(c, "Flip"))
    return out


def _stratum_rank(name: str) -> tuple[int, str]:
    return next(i for i, p in enumerate(_ORDER) if name.startswith(p)), name


class _BottomK:
    """The ``k`` rows of smallest priority seen so far in one stratum."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.prio = np.empty(0, np.uint64)
        self.shard = np.empty(0, np.int64)
        self.row = np.empty(0, np.int64)

    def offer(self, prio: np.ndarray, shard: int, rows: np.ndarray) -> None:
        if self.k <= 0 or not len(prio):
            return
        p = np.concatenate([self.prio, prio])
        s = np.concatenate([self.shard, np.full(len(prio), shard, np.int64)])
        r = np.concatenate([self.row, rows.astype(np.int64)])
        keep = np.lexsort((r, s, p))[: self.k]
        self.prio, self.shard, self.row = p[keep], s[keep], r[keep]


def draw_sample(release: Release, *, seed: int, per_code: int, kept: int) -> Sample:
    """The stratified sample (see the module docstring), with each row's display columns and
    the parent of every augmented row."""
    picks: dict[str, _BottomK] = {}
    population: dict[str, int] = {}
    for shard in release.shards:
        for offset, batch in iter_batches(release, shard, LIGHT_COLUMNS):
            prio = priorities(seed, shard.path, offset, batch.num_rows)
            for name, mask in stratum_masks(shard, batch).items():
                hits = np.flatnonzero(mask)
                if not len(hits):
                    continue
                population[name] = population.get(name, 0) + len(hits)
                k = per_code if name.startswith("reject:") else kept
                picks.setdefault(name, _BottomK(k)).offer(prio[hits], shard.index, hits + offset)
    by_key: dict[tuple[int, int], SampledRow] = {}
    for name in sorted(picks, key=_stratum_rank):
        for s, r in zip(picks[name].shard.tolist(), picks[name].row.tolist(), strict=True):
            entry = by_key.setdefault((s, r), SampledRow(release.shards[s], r, []))
            entry.strata.append(name)
    rows = list(by_key.values())
    _fill(release, rows)
    return Sample(rows, dict(sorted(population.items(), key=lambda kv: _stratum_rank(kv[0]))), seed, per_code, kept)


def _fill(release: Release, rows: Sequence[SampledRow]) -> None:
    """Read the display columns of the sampled rows, shard by shard, and the augmented rows'
    parents from the data shards of their kind."""
    by_shard: dict[int, list[SampledRow]] = {}
    for r in rows:
        by_shard.setdefault(r.shard.index, []).append(r)
    for index, group in by_shard.items():
        records = rows_at(release, release.shards[index], [r.row for r in group], DISPLAY_COLUMNS)
        for r in group:
            r.record = records.get(r.row, {})
    wanted: dict[str, list[SampledRow]] = {}
    for r in rows:
        if r.shard.group == "data" and r.record.get("parent_id") and r.record.get("augment_transforms") is not None:
            wanted.setdefault(str(r.record["parent_id"]), []).append(r)
    kinds = {str(r.record.get("kind")) for group in wanted.values() for r in group}
    shards = [s for s in release.shards if s.group == "data" and s.kind in kinds]
    for ident, (_, _, record) in find_ids(release, shards, wanted, DISPLAY_COLUMNS).items():
        for r in wanted[ident]:
            r.parent = record
