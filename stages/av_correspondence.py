"""Does a segment's audio (and do its subtitles) belong to its video? Model-free, from events.

The offset estimate (:func:`stages.segment_features.av_lag_curve`) always finds *some* best lag,
even for audio taken from another clip (each clip given its neighbour's sound): there it
reports a bogus offset. What tells the two apart is how well the streams agree at their best
lag: a real offset shifts every sound by the same amount, so at that lag each audio event
starts and ends with a video event, the event counts are equal and the envelopes correlate;
audio from another clip matches a few events at best.

Events are runs of activity: audio frames within ``audio_drop_db`` of the loud level (the
99th percentile of frame RMS); video frames whose share of moving pixels
(:data:`stages.segment_features.MOVING_GREY`) is above the geometric midpoint between the
still share (10th percentile) and the largest, and at least ``motion_share`` of the largest.
Gaps shorter than ``merge_gap_us`` are closed and runs shorter than ``min_event_us`` dropped.
A stream is only judged when its events are clear: the audio's loud level is
``min_contrast_db`` above its quiet level (the largest moving share ``min_motion_ratio`` times
the still share) and activity covers at most ``max_active_share`` of the clip; otherwise
(continuous sound, a camera that never stops) the offset check alone applies.

Two event lists are matched one to one at a lag: a pair matches when both its starts and its
ends agree within ``tolerance_us``. The lag is chosen among the correlation peak and every
start-to-start difference as the one that matches the most events (then the smallest error),
and refined to the mean boundary difference of its matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.reason_codes import ReasonCode
from stages.base import Verdict
from stages.segment_features import AudioFeatures, VideoFeatures

US = 1_000_000


@dataclass(frozen=True)
class Event:
    start_us: int
    end_us: int


@dataclass(frozen=True)
class EventSettings:
    audio_drop_db: float = 3.0
    min_contrast_db: float = 20.0
    min_motion_ratio: float = 20.0
    motion_share: float = 0.25
    max_active_share: float = 0.8
    merge_gap_us: int = 150_000
    min_event_us: int = 150_000


@dataclass(frozen=True)
class Agreement:
    """How two event lists agree at their best lag."""

    lag_us: int  # positive: the first list is late
    first: int  # events in the first list (audio)
    second: int  # events in the second list (video or subtitles)
    matched: int
    max_error_us: int  # largest boundary difference among the matched pairs

    @property
    def agrees(self) -> bool:
        """Every event of each list has its partner."""
        return self.matched == self.first == self.second

    @property
    def share(self) -> float:
        """Matched events over the longer list (1.0: full agreement)."""
        return self.matched / max(self.first, self.second, 1)


def runs(active: np.ndarray, starts_us: np.ndarray, ends_us: np.ndarray,
         settings: EventSettings) -> list[Event]:
    """Runs of ``active`` frames as events (frame k spans ``starts_us[k]..ends_us[k]``)."""
    events: list[list[int]] = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        start, end = int(starts_us[first]), int(ends_us[stop - 1])
        if events and start - events[-1][1] < settings.merge_gap_us:
            events[-1][1] = end
        else:
            events.append([start, end])
    return [Event(a, b) for a, b in events if b - a >= settings.min_event_us]


def _clear(events: list[Event], duration_us: int, settings: EventSettings) -> list[Event] | None:
    active = sum(e.end_us - e.start_us for e in events)
    if not events or active > settings.max_active_share * duration_us:
        return None
    return events


def audio_events(audio: AudioFeatures, settings: EventSettings) -> list[Event] | None:
    """Loud runs of the audio, or None when it has no clear events."""
    level = audio.rms_db.astype(np.float64)
    loud, quiet = np.percentile(level, 99), np.percentile(level, 10)
    if loud - quiet < settings.min_contrast_db:
        return None
    hop_us = audio.hop_length * US / audio.sample_rate
    centres = audio.frame_us.astype(np.float64)  # frames are centred on their time
    events = runs(level >= loud - settings.audio_drop_db, centres - hop_us / 2,
                  centres + hop_us / 2, settings)
    return _clear(events, audio.duration_us, settings)


def video_events(video: VideoFeatures, settings: EventSettings) -> list[Event] | None:
    """Runs of moving pixels, or None when the video has no clear events. ``moving[k]`` is the
    change from frame k-1 to frame k: it spans ``t[k-1]..t[k]``."""
    if video.num_frames < 3:
        return None
    moving = video.moving[1:].astype(np.float64)
    still = max(float(np.percentile(moving, 10)), 1e-4)
    peak = float(moving.max())
    if peak < settings.min_motion_ratio * still:
        return None
    threshold = max(float(np.sqrt(still * peak)), settings.motion_share * peak)
    events = runs(moving > threshold, video.frame_us[:-1], video.frame_us[1:], settings)
    return _clear(events, video.duration_us, settings)


def subtitle_events(subtitles: list[dict[str, int]] | None) -> list[Event]:
    return [Event(int(s["start_us"]), int(s["start_us"]) + int(s["duration_us"]))
            for s in subtitles or []]


def match_at(first: list[Event], second: list[Event], lag_us: float, tolerance_us: int
             ) -> list[tuple[int, int, float]]:
    """One-to-one pairs (i, j, error) whose starts and ends agree within ``tolerance_us`` once
    ``first`` is moved back by ``lag_us``; closest starts are paired first."""
    candidates = []
    for i, a in enumerate(first):
        for j, b in enumerate(second):
            error = max(abs(a.start_us - lag_us - b.start_us), abs(a.end_us - lag_us - b.end_us))
            if error <= tolerance_us:
                candidates.append((error, i, j))
    pairs, used_i, used_j = [], set(), set()
    for error, i, j in sorted(candidates):
        if i not in used_i and j not in used_j:
            pairs.append((i, j, error))
            used_i.add(i)
            used_j.add(j)
    return pairs


def agreement(first: list[Event], second: list[Event], tolerance_us: int,
              max_lag_us: int, hint_lag_us: float = 0.0) -> Agreement:
    """The lag at which the two lists match best (see the module docstring) and how well."""
    lags = {float(hint_lag_us)} | {float(a.start_us - b.start_us) for a in first for b in second
                                   if abs(a.start_us - b.start_us) <= max_lag_us}
    best: tuple[int, float, float] | None = None  # (-matched, error, lag)
    for lag in sorted(lags):
        pairs = match_at(first, second, lag, tolerance_us)
        key = (-len(pairs), sum(e for _, _, e in pairs), abs(lag - hint_lag_us))
        if best is None or key < (best[0], best[1], abs(best[2] - hint_lag_us)):
            best = (-len(pairs), key[1], lag)
    lag = best[2] if best else float(hint_lag_us)
    pairs = match_at(first, second, lag, tolerance_us)
    if pairs:  # refine: the mean boundary difference of the matched pairs
        refined = float(np.mean([(first[i].start_us - second[j].start_us
                                  + first[i].end_us - second[j].end_us) / 2 for i, j, _ in pairs]))
        again = match_at(first, second, refined, tolerance_us)
        if len(again) >= len(pairs):
            lag, pairs = refined, again
    return Agreement(lag_us=int(round(lag)), first=len(first), second=len(second),
                     matched=len(pairs), max_error_us=int(max((e for _, _, e in pairs), default=0)))


def describe(agreed: Agreement, first: str, second: str, tolerance_us: int) -> str:
    """``2 of 3 audio events match the video's 3 (start and end within 0.075 s)``."""
    owner = f"{second}'" if second.endswith("s") else f"{second}'s"
    return (f"{agreed.matched} of {agreed.first} {first} events match the {owner} "
            f"{agreed.second} (start and end within {tolerance_us / US:.3f} s)")


def correlation_at(curve: tuple[np.ndarray, np.ndarray], lag_us: float) -> float:
    """The audio-video correlation of :func:`stages.segment_features.av_lag_curve` at a lag."""
    lags, scores = curve
    return float(np.interp(lag_us, lags, scores)) if scores.size else 0.0


def _direction(lag_us: int, late: str, early: str) -> str:
    return f"{late if lag_us > 0 else early} by {abs(lag_us) / US:.2f} s"


def av_verdict(agreed: Agreement, correlation: float, max_offset_us: int, tolerance_us: int
               ) -> Verdict | None:
    """LOW_SCORE when the audio's events match the video's at no lag; TEMPORAL when they match
    at a lag beyond ``max_offset_us``."""
    measured = (f"{describe(agreed, 'audio', 'video', tolerance_us)}; onset/motion correlation "
                f"{correlation:.2f}")
    if not agreed.agrees:
        return Verdict(ReasonCode.LOW_SCORE, "audio does not belong to its video: at its best lag"
                       f" ({agreed.lag_us / US:+.2f} s) {measured}")
    if abs(agreed.lag_us) > max_offset_us:
        return Verdict(ReasonCode.TEMPORAL, "audio " + _direction(agreed.lag_us, "lags video",
                                                                   "leads video")
                       + f" (offset {agreed.lag_us} us, tolerance {max_offset_us / US:.2f} s; "
                       f"{measured})")
    return None


def subtitle_verdict(agreed: Agreement, against: str, max_offset_us: int, tolerance_us: int
                     ) -> Verdict | None:
    """LOW_SCORE when the subtitles match the ``against`` stream's events at no lag; TEMPORAL
    when they match at a lag beyond ``max_offset_us``. ``agreed`` has the subtitles second."""
    measured = describe(agreed, against, "subtitles", tolerance_us)
    if not agreed.agrees:
        return Verdict(ReasonCode.LOW_SCORE, f"subtitles do not belong to the clip: at their best"
                       f" lag ({-agreed.lag_us / US:+.2f} s) {measured}")
    if abs(agreed.lag_us) > max_offset_us:
        return Verdict(ReasonCode.TEMPORAL, "subtitles " + _direction(-agreed.lag_us,
                                                                       f"lag the {against}",
                                                                       f"lead the {against}")
                       + f" (offset {-agreed.lag_us} us, tolerance {max_offset_us / US:.2f} s; "
                       f"{measured})")
    return None


def audio_odd_one_out(heard: Agreement, seen: Agreement, max_offset_us: int, tolerance_us: int
                      ) -> Verdict | None:
    """LOW_SCORE naming the audio when the subtitles match the video (``seen``, within
    ``max_offset_us``) but not the audio (``heard``): audio from another clip whose events
    happen to fall near the video's (a similar rhythm) passes the audio-video check, and the
    subtitles tell which stream is foreign. Both agreements have the subtitles second."""
    if heard.agrees or not seen.agrees or abs(seen.lag_us) > max_offset_us:
        return None
    return Verdict(ReasonCode.LOW_SCORE, "audio does not belong to its video: the subtitles match"
                   f" the video ({describe(seen, 'video', 'subtitles', tolerance_us)}) but not the"
                   f" audio (at its best lag, {heard.lag_us / US:+.2f} s, "
                   f"{describe(heard, 'audio', 'subtitles', tolerance_us)})")
