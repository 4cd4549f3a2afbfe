"""Segment alignment: DTW between video and audio, sub-segments per subtitle, shifted negatives.

Consumes ok rows of kind ``segment`` with an audio and a video ref (run ``segment_checks``
first; other kinds pass through unchanged). Video frames (x) are aligned to audio frames (y) on
a shared activity representation (level and change: motion energy vs RMS level, rising motion
vs onset strength, plus a weighted time channel), by the configured method (``exact`` banded
DTW or ``fastdtw``).

- Segments up to ``max_whole_us`` are aligned whole. Longer ones are cut into ``chunk_us``
  pieces overlapping by ``chunk_overlap_us`` (``long_mode="chunk"``) or aligned whole inside a
  fixed ``long_band_us`` band (``long_mode="band"``).
- Before aligning, the memory estimate picks the smallest downsampling factor (1, 2, 4, ...,
  ``max_downsample``) that fits ``memory_quota_bytes``; if none does the row is rejected with
  ``ERR_CROSS_MDL_DTW_OOM``. Undecodable media are ``ERR_CROSS_MDL_MEDIA``. (Downsampling,
  chunks and their stitching: :mod:`stages.dtw_plan`.)

Produces ``alignment`` (one entry per subtitle: video frame range, audio sample range, the text,
times in integer microseconds, the DTW cost and path length of that stretch), ``dtw_method``,
``dtw_cost``, ``dtw_path_length``, ``dtw_downsample``, ``continuity_tau`` (Kendall tau between
subtitle order and aligned order). For each sub-segment it adds a temporal-shift hard negative:
a row with ``parent_id`` pairing the subtitle with a window of the same clip that does not
overlap the sub-segment nor its ``negative_guard_us`` guard band (``negative_type`` and
``negative_shift_us`` say how it was made).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field
from scipy.stats import kendalltau

from access.io import MediaPathError
from schemas.reason_codes import ReasonCode
from stages import dtw
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.dtw_plan import PlanError, choose_downsample, chunk_bounds, stitch
from stages.segment_features import (
    AudioFeatureKind,
    SegmentMedia,
    audio_activity,
    load_segment_media,
    video_activity,
)

log = logging.getLogger(__name__)
US = 1_000_000
SUBSEGMENT_TYPE = pa.struct([
    ("text", pa.string()), ("start_us", pa.int64()), ("duration_us", pa.int64()),
    ("video_frame_start", pa.int64()), ("video_frame_end", pa.int64()),
    ("audio_sample_start", pa.int64()), ("audio_sample_end", pa.int64()),
    ("audio_start_us", pa.int64()), ("audio_duration_us", pa.int64()),
    ("dtw_cost", pa.float64()), ("path_length", pa.int64()),
])


def kendall_continuity(aligned_starts: list[int]) -> float:
    """Kendall tau between subtitle order and the order of their aligned starts (1 = same)."""
    if len(aligned_starts) < 2:
        return 1.0
    tau = kendalltau(np.arange(len(aligned_starts)), np.asarray(aligned_starts)).statistic
    return float(tau) if np.isfinite(tau) else 1.0


def segment_window(row: dict[str, Any], media: SegmentMedia) -> tuple[int, int]:
    """``[start, end)`` of the segment in media time: the record's ``start_us``/``duration_us``
    where given, clipped to the decoded media."""
    media_end = int(media.duration_us or 0)
    start = min(int(row.get("start_us") or 0), media_end)
    end = media_end if row.get("duration_us") is None else start + int(row["duration_us"])
    return start, min(end, media_end)


def with_position(features: np.ndarray, frame_us: np.ndarray, weight_per_s: float) -> np.ndarray:
    """Append a time channel (seconds x weight): where activity is flat on both sides the path
    then stays near the proportional one instead of drifting on noise."""
    position = (frame_us.astype(np.float64) * (weight_per_s / US)).astype(np.float32)
    return np.concatenate([features, position[:, None]], axis=1)


def _seeded_rng(seed: int, row_id: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{row_id}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def shifted_window(start_us: int, duration_us: int, clip_us: int, guard_us: int,
                   rng: np.random.Generator, clip_start_us: int = 0) -> int | None:
    """Start of a window of ``duration_us`` inside ``[clip_start_us, clip_us)`` that ends
    before ``start - guard`` or starts after ``end + guard``; None if the clip has no room."""
    before = (clip_start_us, min(start_us - guard_us, clip_us) - duration_us)
    after = (max(clip_start_us, start_us + duration_us + guard_us), clip_us - duration_us)
    spans = [(lo, hi) for lo, hi in (before, after) if hi >= lo]
    if not spans:
        return None
    sizes = np.array([hi - lo + 1 for lo, hi in spans], dtype=np.float64)
    lo, hi = spans[int(rng.choice(len(spans), p=sizes / sizes.sum()))]
    return int(rng.integers(lo, hi + 1))


class SegmentAlignParams(StageParams):
    method: dtw.DtwMethod = Field(default="exact", description="exact banded DTW or fastdtw")
    band_us: int = Field(default=1_000_000, gt=0, description="exact: band half-width")
    radius: int = Field(default=10, ge=1, description="fastdtw radius")
    fastdtw_pure_ok: bool = Field(default=False, description="accept the slow pure-Python fastdtw")
    max_whole_us: int = Field(default=60_000_000, gt=0, description="longer segments: long_mode")
    long_mode: Literal["chunk", "band"] = "chunk"
    chunk_us: int = Field(default=30_000_000, gt=0)
    chunk_overlap_us: int = Field(default=5_000_000, ge=0)
    long_band_us: int = Field(default=2_000_000, gt=0, description="band of long_mode=band")
    memory_quota_bytes: int = Field(default=256 * 2**20, gt=0, description="per worker")
    max_downsample: int = Field(default=8, ge=1)
    audio_hop_us: int = Field(default=20_000, gt=0)
    n_mels: int = Field(default=64, gt=0)
    audio_feature: AudioFeatureKind = "logmel"
    position_weight_per_s: float = Field(default=0.5, ge=0, description="pull toward the diagonal")
    negative_guard_us: int = Field(default=1_000_000, ge=0)
    seed: int = 0
    max_media_bytes: int = Field(default=2 * 1024**3, gt=0)


class SegmentAlign(Stage):
    """DTW alignment of segments into sub-segments, plus shifted negatives; see the module."""

    name = "segment_align"
    params_model = SegmentAlignParams
    resources = Resources(num_cpus=0.5, memory=1024**3, batch_size=8)
    output_fields = (
        pa.field("alignment", pa.list_(SUBSEGMENT_TYPE)), pa.field("dtw_method", pa.string()),
        pa.field("dtw_cost", pa.float64()), pa.field("dtw_path_length", pa.int64()),
        pa.field("dtw_downsample", pa.int32()), pa.field("continuity_tau", pa.float64()),
        pa.field("negative_type", pa.string()), pa.field("negative_shift_us", pa.int64()),
    )
    error_code = ReasonCode.DTW_OOM
    params: SegmentAlignParams

    def setup(self) -> None:
        if self.params.method != "fastdtw":
            return
        build = dtw.fastdtw_build()
        if build == "compiled" or (build == "pure" and self.params.fastdtw_pure_ok):
            if build == "pure":
                log.warning(
                    "segment_align: fastdtw is the PURE-PYTHON build (~50x slower); install "
                    "the compiled one with: %s", dtw.FASTDTW_INSTALL)
            return
        raise RuntimeError(f"segment_align: fastdtw build is {build!r}, not compiled; "
                           f"install with: {dtw.FASTDTW_INSTALL}")

    def process(self, rows: pa.Table) -> pa.Table:
        records = rows.to_pylist()
        verdicts: list[Verdict | None] = []
        negatives: list[dict[str, Any]] = []
        for record in records:
            verdict = None
            if record.get("kind") == "segment":
                verdict = self.align_row(record, negatives)
            verdicts.append(verdict)
        out = reject_rows(pa.Table.from_pylist(records, schema=rows.schema), verdicts, self.name)
        if not negatives:
            return out
        return pa.concat_tables([out, pa.Table.from_pylist(negatives, schema=rows.schema)])

    def align_row(self, row: dict[str, Any], negatives: list[dict[str, Any]]) -> Verdict | None:
        """Fill the row's alignment columns and append its negatives; or a verdict."""
        p = self.params
        try:
            media = load_segment_media(row, p.audio_hop_us, p.n_mels, p.audio_feature,
                                       p.max_media_bytes)
        except (MediaPathError, OSError, ValueError) as exc:
            return Verdict(ReasonCode.MEDIA, f"{type(exc).__name__}: {exc}"[:300])
        if media.audio is None or media.video is None:
            return Verdict(ReasonCode.MEDIA, "segment alignment needs an audio and a video ref")
        try:
            window = segment_window(row, media)
            if window[1] - window[0] < US // 10:
                return Verdict(ReasonCode.TEMPORAL, f"segment window [{window[0]}, {window[1]})"
                               f" us leaves under 0.1 s of the {media.duration_us} us of media")
            path_us, steps, factor = self.warp(media, window)
        except PlanError as exc:
            return Verdict(ReasonCode.DTW_OOM, str(exc))
        entries = [self.subsegment(media, path_us, steps, sub) for sub in row.get("subtitles")
                   or []]
        row.update(alignment=entries, dtw_method=p.method, dtw_cost=float(steps.sum()),
                   dtw_path_length=int(len(steps)), dtw_downsample=factor,
                   continuity_tau=kendall_continuity([e["audio_start_us"] for e in entries]))
        for k, sub in enumerate(row.get("subtitles") or []):
            start = shifted_window(sub["start_us"], sub["duration_us"], window[1],
                                   p.negative_guard_us, _seeded_rng(p.seed, row["id"], k),
                                   window[0])
            if start is None:
                continue
            shifted = {"start_us": start, "duration_us": sub["duration_us"], "text": sub["text"]}
            entry = self.subsegment(media, path_us, steps, shifted)
            negatives.append({**row, "id": f"{row['id']}-tneg{k:03d}", "parent_id": row["id"],
                              "start_us": start, "duration_us": sub["duration_us"],
                              "subtitles": [shifted], "words": None, "alignment": [entry],
                              "dtw_cost": entry["dtw_cost"],
                              "dtw_path_length": entry["path_length"], "continuity_tau": None,
                              "negative_type": "temporal_shift",
                              "negative_shift_us": start - sub["start_us"]})
        return None

    def warp(self, media: SegmentMedia, window: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray, int]:
        """Path over ``window`` as (video time, audio time) pairs in microseconds, its step
        costs, and the downsampling factor used."""
        p = self.params
        audio, video = media.audio, media.video
        if audio is None or video is None:
            raise PlanError("no audio or no video")
        x = with_position(video_activity(video), video.frame_us, p.position_weight_per_s)
        y = with_position(audio_activity(audio), audio.frame_us, p.position_weight_per_s)
        span_us = window[1] - window[0]
        long = span_us > p.max_whole_us
        bounds = ([(window[0] + a, window[0] + b)
                   for a, b in chunk_bounds(span_us, p.chunk_us, p.chunk_overlap_us)]
                  if long and p.long_mode == "chunk" else [window])
        band_us = p.long_band_us if long and p.long_mode == "band" else p.band_us
        hop_us = audio.hop_length * US / audio.sample_rate
        width = max(len(np.flatnonzero((video.frame_us >= a) & (video.frame_us < b)))
                    for a, b in bounds)
        height = max(len(np.flatnonzero((audio.frame_us >= a) & (audio.frame_us < b)))
                     for a, b in bounds)
        factor, _ = choose_downsample(width, height, x.shape[1], p.method,
                                      round(band_us / hop_us), p.radius,
                                      p.memory_quota_bytes - (x.nbytes + y.nbytes),
                                      p.max_downsample)
        pieces = []
        for k, (a, b) in enumerate(bounds):
            xi = np.flatnonzero((video.frame_us >= a) & (video.frame_us < b))
            yi = np.flatnonzero((audio.frame_us >= a) & (audio.frame_us < b))
            if len(xi) == 0 or len(yi) == 0:
                continue
            xs, ys = dtw.downsample(x[xi], factor), dtw.downsample(y[yi], factor)
            result = dtw.align(xs, ys, p.method,
                               half_width=max(1, round(band_us / (hop_us * factor))),
                               radius=p.radius, fastdtw_pure_ok=p.fastdtw_pure_ok)
            times = np.stack([video.frame_us[xi[np.minimum(result.path[:, 0] * factor,
                                                           len(xi) - 1)]],
                              audio.frame_us[yi[np.minimum(result.path[:, 1] * factor,
                                                           len(yi) - 1)]]], axis=1)
            cut = a + p.chunk_overlap_us // 2 if k > 0 else a
            pieces.append((cut, times, result.step_cost))
        if not pieces:
            raise PlanError(f"no video or audio frame inside the segment window {window} us")
        path, steps = stitch(pieces)
        return path, steps, factor

    def subsegment(self, media: SegmentMedia, path_us: np.ndarray, steps: np.ndarray,
                   sub: dict[str, Any]) -> dict[str, Any]:
        """Sub-segment of one subtitle: its video frames, and the audio the path maps them to."""
        audio, video = media.audio, media.video
        if audio is None or video is None:
            raise PlanError("no audio or no video")
        start, end = sub["start_us"], sub["start_us"] + sub["duration_us"]
        f0 = int(min(video.num_frames, math.floor(start * video.fps / US)))
        f1 = int(min(video.num_frames, max(f0 + 1, math.ceil(end * video.fps / US))))
        sel = (path_us[:, 0] >= start) & (path_us[:, 0] < end)
        if not sel.any():  # shorter than a frame: the nearest step
            sel = np.zeros(len(path_us), bool)
            sel[int(np.argmin(np.abs(path_us[:, 0] - start)))] = True
        hop_us = audio.hop_length * US // audio.sample_rate
        a0 = int(path_us[sel, 1].min())
        a1 = int(min(audio.duration_us, path_us[sel, 1].max() + hop_us))
        s0 = a0 * audio.sample_rate // US
        s1 = max(s0 + 1, min(audio.num_samples, a1 * audio.sample_rate // US))
        return {"text": sub["text"], "start_us": start, "duration_us": end - start,
                "video_frame_start": f0, "video_frame_end": f1, "audio_sample_start": s0,
                "audio_sample_end": s1, "audio_start_us": a0, "audio_duration_us": a1 - a0,
                "dtw_cost": float(steps[sel].sum()), "path_length": int(sel.sum())}
