"""Segment features: audio (librosa), video (OpenCV), the shared activity representation that
DTW aligns, and the audio-video offset. Pure functions over bytes and arrays; every frame time is
an integer number of microseconds.

Audio: log-mel (or MFCC) frames, an onset-strength envelope, frame RMS in dBFS and spectral
flatness, at a hop given in microseconds. Video: per-frame mean luma, motion energy (mean
absolute difference of consecutive grey frames) and a small colour/texture descriptor (channel
means and deviations, an 8-bin hue histogram, mean gradient magnitude) and the share of moving
pixels.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import librosa
import numpy as np
import soundfile
from scipy.signal import correlate

from access.io import filesystem_for, read_bytes, resolve_media_uri

US = 1_000_000
AudioFeatureKind = Literal["logmel", "mfcc"]
SILENCE_FLOOR_DB = -120.0
# A pixel "moves" when its grey level changes by more than this between frames: above codec
# noise (a few levels, all over the frame at key frames), below any visible object's edge.
MOVING_GREY = 16.0


@dataclass(frozen=True)
class AudioFeatures:
    sample_rate: int
    hop_length: int  # samples
    num_samples: int
    frame_us: np.ndarray  # (frames,) int64 start time of each frame
    spectral: np.ndarray  # (frames, dims) float32 log-mel in dB or MFCC
    onset: np.ndarray  # (frames,) float32 onset strength
    rms_db: np.ndarray  # (frames,) float32 dBFS, floored at SILENCE_FLOOR_DB
    flatness: np.ndarray  # (frames,) float32 spectral flatness in [0, 1]
    non_finite_samples: int = 0  # NaN/inf samples (features are computed with them zeroed)

    @property
    def duration_us(self) -> int:
        return self.num_samples * US // self.sample_rate


@dataclass(frozen=True)
class VideoFeatures:
    fps: float
    num_frames: int
    frame_us: np.ndarray  # (frames,) int64
    luma: np.ndarray  # (frames,) float32 mean grey level 0..255
    motion: np.ndarray  # (frames,) float32 mean |grey[t] - grey[t-1]|, 0 for the first frame
    descriptor: np.ndarray  # (frames, 15) float32 colour/texture
    moving: np.ndarray  # (frames,) float32 share of pixels changed by > MOVING_GREY, 0 first

    @property
    def duration_us(self) -> int:
        return int(round(self.num_frames * US / self.fps))


def frame_times_us(count: int, step_num: int, step_den: int) -> np.ndarray:
    """Start times ``k * step_num / step_den`` seconds as integer microseconds (floored)."""
    return (np.arange(count, dtype=np.int64) * step_num * US) // step_den


# ---- audio ---------------------------------------------------------------------------------
def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG bytes to mono float32 samples; raises ``soundfile.LibsndfileError``."""
    samples, sr = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(sr)


def audio_features(samples: np.ndarray, sample_rate: int, hop_us: int = 20_000,
                   n_mels: int = 64, kind: AudioFeatureKind = "logmel",
                   n_mfcc: int = 20) -> AudioFeatures:
    """Frame-level audio features at a hop of ``hop_us`` microseconds (rounded to samples)."""
    hop = max(1, round(sample_rate * hop_us / US))
    n_fft = 1 << max(8, int(np.ceil(np.log2(4 * hop))))
    y = np.asarray(samples, dtype=np.float32)
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    non_finite = int(y.size - np.count_nonzero(np.isfinite(y)))
    finite = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0) if non_finite else y
    # one STFT for the mel bands and the flatness (each would compute the same one itself)
    magnitude = np.abs(librosa.stft(finite, n_fft=n_fft, hop_length=hop, center=True))
    mel = librosa.feature.melspectrogram(S=magnitude ** 2, sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    spectral = logmel if kind == "logmel" else librosa.feature.mfcc(S=logmel, n_mfcc=n_mfcc)
    onset = librosa.onset.onset_strength(S=logmel, sr=sample_rate,
                                         hop_length=hop, lag=1, center=False)
    rms = librosa.feature.rms(y=finite, frame_length=n_fft, hop_length=hop, center=True)[0]
    rms_db = np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), SILENCE_FLOOR_DB)
    flat = librosa.feature.spectral_flatness(S=magnitude)[0]
    frames = spectral.shape[1]
    return AudioFeatures(
        sample_rate=sample_rate, hop_length=hop, num_samples=int(samples.shape[0]),
        frame_us=frame_times_us(frames, hop, sample_rate),
        spectral=spectral.T.astype(np.float32), onset=onset[:frames].astype(np.float32),
        rms_db=rms_db[:frames].astype(np.float32), flatness=flat[:frames].astype(np.float32),
        non_finite_samples=non_finite,
    )


# ---- video ---------------------------------------------------------------------------------
def _frame_descriptor(small: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Channel means and standard deviations (0-1), an 8-bin hue histogram and the mean
    gradient magnitude. OpenCV's reductions, not numpy's: a frame's reductions in numpy cost
    ~0.23 ms of fixed overhead, ~6x OpenCV's, and this runs on every frame of every segment
    (the same values to ~1e-6)."""
    mean, std = cv2.meanStdDev(small)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hue_hist = np.bincount((hsv[..., 0].ravel().astype(np.int64) * 8) // 180, minlength=8)[:8]
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    texture = cv2.mean(cv2.magnitude(gx, gy))[0] / 255.0
    return np.concatenate([mean.ravel() / 255.0, std.ravel() / 255.0,
                           hue_hist / max(1, grey.size), [texture]]).astype(np.float32)


def video_features_from_path(path: str, fps_hint: float | None = None,
                             max_side: int = 96) -> VideoFeatures:
    """Decode frames one at a time (nothing but descriptors is kept) and measure them.

    Raises ``ValueError`` when OpenCV cannot open the file or decodes no frame."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open {path}")
    fps = float(fps_hint or capture.get(cv2.CAP_PROP_FPS) or 0.0)
    luma: list[float] = []
    motion: list[float] = []
    moving: list[float] = []
    descriptors: list[np.ndarray] = []
    previous: np.ndarray | None = None
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            h, w = frame.shape[:2]
            scale = max_side / max(h, w)
            small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA) if scale < 1 else frame
            grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
            luma.append(float(grey.mean()))
            change = None if previous is None else np.abs(grey - previous)
            motion.append(0.0 if change is None else float(change.mean()))
            moving.append(0.0 if change is None else float(np.mean(change > MOVING_GREY)))
            descriptors.append(_frame_descriptor(small, grey))
            previous = grey
    finally:
        capture.release()
    if not luma:
        raise ValueError(f"no frame decoded from {path}")
    if fps <= 0:
        raise ValueError(f"unknown frame rate for {path}")
    # fps may be fractional (29.97): times are k / fps, floored to microseconds
    frame_us = np.floor(np.arange(len(luma)) * (US / fps)).astype(np.int64)
    return VideoFeatures(fps=fps, num_frames=len(luma), frame_us=frame_us,
                         luma=np.asarray(luma, np.float32), motion=np.asarray(motion, np.float32),
                         descriptor=np.stack(descriptors), moving=np.asarray(moving, np.float32))


def video_features(uri: str, fps_hint: float | None = None, max_bytes: int | None = None,
                   max_side: int = 96) -> VideoFeatures:
    """Video features of a local path, ``file://`` or ``s3://`` URI (copied to a temp file,
    since OpenCV reads files)."""
    fs, path = filesystem_for(uri)
    if uri.startswith("s3://"):
        data = read_bytes(uri, max_bytes)
        suffix = os.path.splitext(path)[1] or ".mp4"
        with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
            handle.write(data)
            handle.flush()
            return video_features_from_path(handle.name, fps_hint, max_side)
    if not os.path.isfile(path):
        raise FileNotFoundError(uri)
    if max_bytes is not None and os.path.getsize(path) > max_bytes:
        raise ValueError(f"{uri} is over the limit of {max_bytes} bytes")
    return video_features_from_path(path, fps_hint, max_side)


def load_npy(uri: str, max_bytes: int | None = None) -> np.ndarray:
    """A precomputed feature array (``features_path``); pickles are refused."""
    return np.asarray(np.load(io.BytesIO(read_bytes(uri, max_bytes)), allow_pickle=False))


# ---- shared representation and offset ------------------------------------------------------
def _zscore(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    std = a.std()
    return (a - a.mean()) / std if std > 1e-9 else np.zeros_like(a)


def _smooth(a: np.ndarray, frames: int) -> np.ndarray:
    if frames <= 1:
        return a
    kernel = np.ones(frames) / frames
    return np.convolve(a, kernel, mode="same")


def audio_activity(audio: AudioFeatures) -> np.ndarray:
    """(frames, 2): z-scored level (RMS dB) and change (onset strength) per audio frame."""
    return np.stack([_zscore(audio.rms_db), _zscore(audio.onset)], axis=1).astype(np.float32)


def video_activity(video: VideoFeatures) -> np.ndarray:
    """(frames, 2): z-scored level (motion energy) and change (its rectified increase)."""
    rise = np.maximum(np.diff(video.motion, prepend=video.motion[:1]), 0.0)
    return np.stack([_zscore(video.motion), _zscore(rise)], axis=1).astype(np.float32)


def _lag_scores(a: np.ndarray, v: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of z-scored ``a`` and ``v`` at each lag, divided by the overlap so that large
    lags are not favoured: ``score[k]`` belongs to ``a(t + lag[k]) ~ v(t)``."""
    frames = len(a)
    full = correlate(_zscore(a), _zscore(v), mode="full", method="fft")
    lags = np.arange(-(frames - 1), frames)
    keep = np.abs(lags) <= max_lag
    return lags[keep], full[keep] / (frames - np.abs(lags[keep]))


def av_lag_curve(audio: AudioFeatures, video: VideoFeatures, max_lag_us: int = 5 * US,
                 smooth_us: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """The audio-video correlation at each lag: (lags in microseconds, positive: audio lags;
    scores). Empty arrays when the streams overlap by fewer than 4 audio frames.

    Two envelope pairs are cross-correlated at the audio frame rate (video sampled at the audio
    frame times, both smoothed by ``smooth_us``): the audio onset envelope against the video's
    motion onset (rectified increase of motion energy), and the audio level (RMS dB) against
    motion energy. Their scores are averaged: onsets alone are ambiguous when motion is a
    plateau, levels alone when the activity has no edges."""
    hop_us = audio.hop_length * US / audio.sample_rate
    frames = int(min(len(audio.onset), np.ceil(video.duration_us / hop_us)))
    if frames < 4:
        return np.zeros(0), np.zeros(0)
    # motion[k] is the change between frames k-1 and k: it belongs half a frame before t_k
    motion = np.interp(audio.frame_us[:frames], video.frame_us - 0.5 * US / video.fps,
                       video.motion)
    rise = np.maximum(np.diff(motion, prepend=motion[:1]), 0.0)
    width = max(1, round(smooth_us / hop_us))
    max_lag = min(frames // 2, int(max_lag_us / hop_us))  # keep half the clip overlapping
    lags, onset_score = _lag_scores(_smooth(audio.onset[:frames].astype(np.float64), width),
                                    _smooth(rise, width), max_lag)
    _, level_score = _lag_scores(_smooth(audio.rms_db[:frames].astype(np.float64), width),
                                 _smooth(motion, width), max_lag)
    return lags * hop_us, (onset_score + level_score) / 2


def curve_peak(lags_us: np.ndarray, score: np.ndarray) -> tuple[int, float]:
    """The best lag of a :func:`av_lag_curve` (refined by a parabola) and its score."""
    if not score.size:
        return 0, 0.0
    best = int(np.argmax(score))
    shift = 0.0
    if 0 < best < len(score) - 1:
        left, mid, right = score[best - 1], score[best], score[best + 1]
        denom = left - 2 * mid + right
        shift = 0.5 * (left - right) / denom if denom < 0 else 0.0
    step_us = lags_us[1] - lags_us[0] if lags_us.size > 1 else 0.0
    return int(round(lags_us[best] + shift * step_us)), float(score[best])


def estimate_av_offset_us(audio: AudioFeatures, video: VideoFeatures, max_lag_us: int = 5 * US,
                          smooth_us: int = 100_000) -> tuple[int, float]:
    """Offset of the audio against the video (positive: audio lags) and the peak correlation."""
    return curve_peak(*av_lag_curve(audio, video, max_lag_us, smooth_us))


# ---- one segment row -----------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentMedia:
    """Features of a segment row's first audio and first video ref (None where absent)."""

    audio: AudioFeatures | None
    video: VideoFeatures | None

    @property
    def duration_us(self) -> int | None:
        """The shorter of the decoded streams: what subtitles must fit in."""
        spans = [m.duration_us for m in (self.audio, self.video) if m is not None]
        return min(spans) if spans else None


def first_ref(media: list[dict[str, Any]] | None, modality: str) -> dict[str, Any] | None:
    return next((ref for ref in media or [] if ref.get("modality") == modality), None)


def load_segment_media(row: dict[str, Any], hop_us: int = 20_000, n_mels: int = 64,
                       kind: AudioFeatureKind = "logmel",
                       max_bytes: int | None = None) -> SegmentMedia:
    """Decode and measure a row's media. Raises ``MediaPathError``, ``OSError`` or
    ``ValueError`` (undecodable) for the caller to turn into ``ERR_CROSS_MDL_MEDIA``."""
    root = row.get("manifest_root")
    audio = video = None
    audio_ref = first_ref(row.get("media"), "audio")
    if audio_ref is not None:
        data = read_bytes(resolve_media_uri(audio_ref["uri"], root), max_bytes)
        try:
            samples, sr = decode_audio(data)
        except soundfile.LibsndfileError as exc:
            raise ValueError(f"audio {audio_ref['uri']} is undecodable: {exc}") from None
        audio = audio_features(samples, sr, hop_us, n_mels, kind)
    video_ref = first_ref(row.get("media"), "video")
    if video_ref is not None:
        uri = resolve_media_uri(video_ref["uri"], root)
        video = video_features(uri, video_ref.get("fps"), max_bytes)
    return SegmentMedia(audio, video)
