"""Model-free temporal and fusion checks of segment records.

Consumes ok rows of kind ``segment`` (other kinds pass through unchanged). For each it checks,
in this order, and rejects on the first failure:

1. subtitles (and words) are in time order, do not overlap, and lie inside the media and the
   record's own ``start_us``/``duration_us`` window -> ``ERR_CROSS_MDL_TEMPORAL``;
2. the media decodes -> ``ERR_CROSS_MDL_MEDIA`` otherwise;
3. features are finite and bounded (decoded ones and any ``features_path`` .npy of a media ref),
   the audio is neither silent nor noise-only, the video neither all black nor frozen
   -> ``ERR_CROSS_MDL_FUSION`` with the measured value;
4. the audio belongs to its video (:mod:`stages.av_correspondence`): where both streams have
   clear events, every audio event starts and ends with a video event at one common lag
   -> ``ERR_CROSS_MDL_LOW_SCORE`` when they match at no lag (audio from another clip), with
   the event counts, the matches and the correlation; at that lag, or (no clear events) at the
   peak of the cross-correlation of the audio onset envelope with video motion energy, the
   offset is within tolerance -> ``ERR_CROSS_MDL_TEMPORAL`` with the offset;
5. the subtitles mark the clip's events (``subtitle_events``): each subtitle starts and ends
   with an audio event (the video's where the audio has none) at one common lag, within
   tolerance -> ``ERR_CROSS_MDL_LOW_SCORE`` when they match at no lag (subtitles from another
   clip; or, when the subtitles match the video but not the audio, audio from another clip that
   passed check 4 by a similar rhythm: the detail then names the audio),
   ``ERR_CROSS_MDL_TEMPORAL`` with the offset otherwise.

Produces ``av_offset_us`` (positive: audio lags the video), ``av_offset_score`` (the normalised
correlation at that lag) and ``av_event_match`` (matched events over the longer event list; null
where the events were not judged) where both streams exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from access.io import MediaPathError, resolve_media_uri
from schemas.reason_codes import ReasonCode
from stages.av_correspondence import (
    EventSettings,
    agreement,
    audio_events,
    audio_odd_one_out,
    av_verdict,
    correlation_at,
    subtitle_events,
    subtitle_verdict,
    video_events,
)
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.segment_features import (
    AudioFeatureKind,
    AudioFeatures,
    SegmentMedia,
    VideoFeatures,
    av_lag_curve,
    curve_peak,
    load_npy,
    load_segment_media,
)

US = 1_000_000
Offset = tuple[int, float, float | None]  # (lag us, correlation, event match share)


def _s(us: int | float) -> str:
    return f"{us / US:.3f} s"


def check_timed_text(items: list[dict[str, Any]] | None, label: str, window_start_us: int,
                     window_end_us: int | None) -> Verdict | None:
    """Order, overlap and containment of subtitles or words (times in microseconds)."""
    items = items or []
    for k in range(1, len(items)):
        if items[k]["start_us"] < items[k - 1]["start_us"]:
            return Verdict(ReasonCode.TEMPORAL,
                           f"{label} out of time order: #{k} starts at {_s(items[k]['start_us'])}"
                           f", before #{k - 1} at {_s(items[k - 1]['start_us'])}")
    for k in range(1, len(items)):
        prev_end = items[k - 1]["start_us"] + items[k - 1]["duration_us"]
        if items[k]["start_us"] < prev_end:
            return Verdict(ReasonCode.TEMPORAL,
                           f"{label} overlap: #{k} starts at {_s(items[k]['start_us'])}, before "
                           f"#{k - 1} ends at {_s(prev_end)}")
    for k, item in enumerate(items):
        end = item["start_us"] + item["duration_us"]
        if item["start_us"] < window_start_us:
            return Verdict(ReasonCode.TEMPORAL, f"{label} #{k} starts at {_s(item['start_us'])},"
                           f" before the segment starts at {_s(window_start_us)}")
        if window_end_us is not None and end > window_end_us:
            return Verdict(ReasonCode.TEMPORAL, f"{label} #{k} ends at {_s(end)}, after the "
                           f"media ends at {_s(window_end_us)}")
    return None


def check_finite(name: str, values: np.ndarray, explode_abs: float) -> Verdict | None:
    """Non-finite or exploding feature values."""
    if values.dtype.kind not in "fc":
        values = values.astype(np.float64)
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        nan = int(np.count_nonzero(np.isnan(values)))
        return Verdict(ReasonCode.FUSION, f"{name} has {bad} non-finite values "
                       f"({nan} NaN, {bad - nan} inf) of {values.size}")
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak > explode_abs:
        return Verdict(ReasonCode.FUSION, f"{name} explodes: max |value| {peak:.3g} > "
                       f"{explode_abs:.3g}")
    return None


class SegmentChecksParams(StageParams):
    audio_hop_us: int = Field(default=20_000, gt=0, description="audio feature hop")
    n_mels: int = Field(default=64, gt=0)
    audio_feature: AudioFeatureKind = "logmel"
    max_offset_us: int = Field(default=500_000, ge=0, description="A/V offset tolerance")
    max_lag_us: int = Field(default=5_000_000, gt=0, description="largest offset searched")
    min_offset_score: float = Field(default=0.1, description="weaker correlation: offset not judged")
    av_events: bool = Field(default=True, description="judge audio-video agreement by events")
    subtitle_events: bool = Field(
        default=True, description="subtitles mark sound events one to one (off for speech lines)")
    event_tolerance_us: int = Field(
        default=75_000, gt=0, description="event starts/ends agree within this (> half a frame)")
    silence_dbfs: float = Field(default=-60.0, description="95th percentile frame RMS below: silent")
    noise_flatness: float = Field(default=0.3, gt=0, le=1,
                                  description="median flatness of the loudest frames above: noise")
    black_luma: float = Field(default=8.0, ge=0, description="brightest frame's mean grey below: black")
    frozen_motion: float = Field(default=0.05, ge=0, description="max motion energy below: frozen")
    explode_abs: float = Field(default=1e6, gt=0)
    max_media_bytes: int = Field(default=2 * 1024**3, gt=0)


def audio_verdict(audio: AudioFeatures, p: SegmentChecksParams) -> Verdict | None:
    """Non-finite samples or features, silence, noise only."""
    if audio.non_finite_samples:
        return Verdict(ReasonCode.FUSION, f"audio has {audio.non_finite_samples} non-finite "
                       f"values (NaN or inf samples) of {audio.num_samples}")
    verdict = check_finite(f"audio {p.audio_feature}", audio.spectral, p.explode_abs)
    if verdict:
        return verdict
    loud_db = float(np.percentile(audio.rms_db, 95))
    if loud_db < p.silence_dbfs:
        return Verdict(ReasonCode.FUSION, f"audio is silent: 95th percentile frame level "
                       f"{loud_db:.1f} dBFS < {p.silence_dbfs:.1f} dBFS")
    loud = audio.rms_db >= np.percentile(audio.rms_db, 80)
    flatness = float(np.median(audio.flatness[loud]))
    if flatness > p.noise_flatness:
        return Verdict(ReasonCode.FUSION, f"audio is noise only: spectral flatness of the loudest"
                       f" frames {flatness:.2f} > {p.noise_flatness:.2f}")
    return None


def video_verdict(video: VideoFeatures, p: SegmentChecksParams) -> Verdict | None:
    """Non-finite features, all-black frames, frozen video."""
    verdict = check_finite("video descriptor", video.descriptor, p.explode_abs)
    if verdict:
        return verdict
    brightest = float(video.luma.max())
    if brightest < p.black_luma:
        return Verdict(ReasonCode.FUSION, f"video is all black: brightest frame mean grey "
                       f"{brightest:.1f} < {p.black_luma:.1f}")
    motion = float(video.motion.max()) if video.num_frames > 1 else 0.0
    if motion < p.frozen_motion:
        return Verdict(ReasonCode.FUSION, f"video is frozen: max motion energy {motion:.3f} < "
                       f"{p.frozen_motion:.3f} over {video.num_frames} frames")
    return None


def offset_verdict(offset_us: int, score: float, p: SegmentChecksParams) -> Verdict | None:
    if score < p.min_offset_score or abs(offset_us) <= p.max_offset_us:
        return None
    direction = "lags" if offset_us > 0 else "leads"
    return Verdict(ReasonCode.TEMPORAL, f"audio {direction} video by {abs(offset_us) / US:.2f} s"
                   f" (offset {offset_us} us, tolerance {p.max_offset_us / US:.2f} s, "
                   f"correlation {score:.2f})")


class SegmentChecks(Stage):
    """Temporal and fusion checks of segments; see the module docstring."""

    name = "segment_checks"
    params_model = SegmentChecksParams
    resources = Resources(num_cpus=0.5, memory=1024**3, batch_size=8)
    output_fields = (pa.field("av_offset_us", pa.int64()),
                     pa.field("av_offset_score", pa.float64()),
                     pa.field("av_event_match", pa.float64()))
    error_code = ReasonCode.FUSION
    params: SegmentChecksParams

    def process(self, rows: pa.Table) -> pa.Table:
        records = rows.to_pylist()
        verdicts: list[Verdict | None] = []
        for record in records:
            verdict, offset = (None, None)
            if record.get("kind") == "segment":
                verdict, offset = self.check_row(record)
            (record["av_offset_us"], record["av_offset_score"],
             record["av_event_match"]) = offset or (None, None, None)
            verdicts.append(verdict)
        out = pa.Table.from_pylist(records, schema=rows.schema)
        return reject_rows(out, verdicts, self.name)

    def check_row(self, row: dict[str, Any]) -> tuple[Verdict | None, Offset | None]:
        """The first failing check's verdict, and the measured offset (or None)."""
        p = self.params
        start = row.get("start_us") or 0
        window_end = start + row["duration_us"] if row.get("duration_us") is not None else None
        declared = [r.get("duration_us") for r in row.get("media") or []
                    if r.get("modality") in ("audio", "video") and r.get("duration_us")]
        if declared:
            window_end = min([*declared] + ([window_end] if window_end is not None else []))
        for label in ("subtitles", "words"):
            verdict = check_timed_text(row.get(label), label, start, window_end)
            if verdict:
                return verdict, None
        try:
            media = load_segment_media(row, p.audio_hop_us, p.n_mels, p.audio_feature,
                                       p.max_media_bytes)
            verdict = self.precomputed_verdict(row)
        except (MediaPathError, OSError, ValueError) as exc:
            return Verdict(ReasonCode.MEDIA, f"{type(exc).__name__}: {exc}"[:300]), None
        if verdict:
            return verdict, None
        measured = media.duration_us
        if measured is not None:
            for label in ("subtitles", "words"):
                verdict = check_timed_text(row.get(label), label, start, measured)
                if verdict:
                    return verdict, None
        return self.media_verdict(media, row.get("subtitles"))

    def precomputed_verdict(self, row: dict[str, Any]) -> Verdict | None:
        for ref in row.get("media") or []:
            if ref.get("features_path"):
                uri = resolve_media_uri(ref["features_path"], row.get("manifest_root"))
                verdict = check_finite(f"features_path {ref['features_path']}",
                                       load_npy(uri, self.params.max_media_bytes),
                                       self.params.explode_abs)
                if verdict:
                    return verdict
        return None

    def media_verdict(self, media: SegmentMedia, subtitles: list[dict[str, Any]] | None
                      ) -> tuple[Verdict | None, Offset | None]:
        p = self.params
        verdict = (audio_verdict(media.audio, p) if media.audio else None) or (
            video_verdict(media.video, p) if media.video else None)
        if verdict:
            return verdict, None
        settings = EventSettings()
        heard = audio_events(media.audio, settings) if media.audio else None
        seen = video_events(media.video, settings) if media.video else None
        offset: Offset | None = None
        if media.audio is not None and media.video is not None:
            curve = av_lag_curve(media.audio, media.video, p.max_lag_us)
            if p.av_events and heard and seen:
                agreed = agreement(heard, seen, p.event_tolerance_us, p.max_lag_us,
                                   curve_peak(*curve)[0])
                correlation = correlation_at(curve, agreed.lag_us)
                offset = (agreed.lag_us, correlation, agreed.share)
                verdict = av_verdict(agreed, correlation, p.max_offset_us, p.event_tolerance_us)
            else:
                lag, score = curve_peak(*curve)
                offset = (lag, score, None)
                verdict = offset_verdict(lag, score, p)
            if verdict:
                return verdict, offset
        events, against = (heard, "audio") if heard else (seen, "video")
        if p.subtitle_events and subtitles and events:
            cues = subtitle_events(subtitles)
            agreed = agreement(events, cues, p.event_tolerance_us, p.max_lag_us)
            verdict = subtitle_verdict(agreed, against, p.max_offset_us, p.event_tolerance_us)
            if verdict and verdict.code == ReasonCode.LOW_SCORE and heard and seen:
                verdict = audio_odd_one_out(
                    agreed, agreement(seen, cues, p.event_tolerance_us, p.max_lag_us),
                    p.max_offset_us, p.event_tolerance_us) or verdict
        return verdict, offset
