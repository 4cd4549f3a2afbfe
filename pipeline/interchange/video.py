"""Videos with SRT or WebVTT subtitles -> segment records in integer microseconds.

``xmodal import video talks/*.mp4 --out m.jsonl`` takes each video's subtitles from the file
beside it with the same stem (``talk.srt``, ``talk.vtt`` or ``talk.<lang>.vtt``; or
``--subtitles DIR``). The video is probed with OpenCV (fps, frame count -> ``duration_us``);
its first audio track is decoded (PyAV when installed, else librosa/audioread, which needs an
``ffmpeg`` on the PATH), mixed to mono and written as 16-bit WAV under ``media/video/`` beside
the manifest. A video without an audio track, or where no decoder is installed, gets a video-only
record and the import summary says so.

Cues are grouped into segments of at most ``--segment-seconds`` (default 30, where banded DTW
stays cheap), cut at the start of the cue that would overflow; the first segment starts at 0,
the last ends with the video. Each segment is one record ``<stem>-NNNN`` with ``start_us``,
``duration_us``, its cues as ``subtitles`` (times on the video's timeline) and their text after
the video and audio spans as the content.

Rejected, one line per video: no subtitle file, or one that does not parse exactly (SCHEMA,
with file:line); a video OpenCV cannot open or that has no frames (MEDIA).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.interchange.manifest import (
    AUDIO_SPAN,
    VIDEO_SPAN,
    ImportProblem,
    ManifestWriter,
    media_problem,
    record_id,
    schema_problem,
)
from pipeline.interchange.subtitles import Cue, SubtitleError, read_subtitles

US = 1_000_000
log = logging.getLogger(__name__)


def probe_video(path: Path) -> tuple[float, int]:
    """(fps, duration_us) from OpenCV; a MEDIA problem when it cannot be read."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise media_problem(f"{path.name}: OpenCV cannot open the video")
        fps, frames = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        cap.release()
    if not fps or fps <= 0 or frames <= 0:
        raise media_problem(f"{path.name}: no frames (fps {fps}, frame count {frames})")
    return float(fps), round(frames / fps * US)


def _audio_pyav(path: Path) -> tuple[np.ndarray, int] | None:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().astype(np.float32).reshape(frame.layout.nb_channels if frame.format.is_planar
                                                                  else 1, -1)
                  for frame in container.decode(stream)]
        if not chunks:
            return None
        rate = int(stream.codec_context.sample_rate)
    channels = [c.mean(axis=0) if c.ndim == 2 else c for c in chunks]
    return np.concatenate(channels), rate


def extract_audio(path: Path) -> tuple[np.ndarray, int] | None:
    """Mono float32 samples and the sample rate of the video's first audio track, or None
    (no track, or no decoder installed)."""
    try:
        return _audio_pyav(path)
    except ImportError:
        pass
    try:
        import librosa

        samples, rate = librosa.load(str(path), sr=None, mono=True)
        return (samples, int(rate)) if samples.size else None
    except Exception as err:  # audioread raises its own NoBackendError, soundfile LibsndfileError
        log.info("%s: no audio decoded (%s)", path.name, err)
        return None


def find_subtitles(video: Path, folder: Path | None) -> Path | None:
    base = folder or video.parent
    for pattern in (f"{video.stem}.srt", f"{video.stem}.vtt", f"{video.stem}.*.srt", f"{video.stem}.*.vtt"):
        found = sorted(base.glob(pattern))
        if found:
            return found[0]
    return None


def group_cues(cues: list[Cue], duration_us: int, max_us: int) -> list[tuple[int, int, list[Cue]]]:
    """(start_us, end_us, cues) windows covering ``[0, duration_us]``: a new window starts at
    the cue that would make the current one longer than ``max_us``."""
    windows: list[tuple[int, int, list[Cue]]] = []
    start, current = 0, list[Cue]()
    for cue in sorted(cues, key=lambda c: c.start_us):
        if current and cue.end_us - start > max_us:
            windows.append((start, cue.start_us, current))
            start, current = cue.start_us, []
        current.append(cue)
    windows.append((start, max(duration_us, max((c.end_us for c in current), default=0)), current))
    return windows


def import_video(files: list[Path], writer: ManifestWriter, subtitles_dir: Path | None = None,
                 segment_seconds: float = 30.0) -> None:
    import soundfile

    no_audio = []
    for video in files:
        rid = record_id("video", video.stem)
        try:
            sub = find_subtitles(video, subtitles_dir)
            if sub is None:
                raise schema_problem(f"{video.name}: no subtitles ({video.stem}.srt or .vtt) beside it")
            try:
                cues = read_subtitles(sub)
            except SubtitleError as err:
                raise schema_problem(str(err)) from None
            fps, duration_us = probe_video(video)
            source, licence = writer.provenance(None, None, video.name)
            media: list[dict[str, Any]] = [{"modality": "video", "uri": writer.media_path(video), "fps": fps,
                                            "duration_us": duration_us}]
            audio = extract_audio(video)
            if audio is not None:
                buffer = io.BytesIO()
                soundfile.write(buffer, audio[0], audio[1], format="WAV", subtype="PCM_16")
                uri = writer.write_media(f"media/video/{rid}.wav", buffer.getvalue())
                media.append({"modality": "audio", "uri": uri, "sample_rate": audio[1],
                              "duration_us": round(audio[0].size / audio[1] * US)})
            else:
                no_audio.append(video.name)
        except ImportProblem as problem:
            writer.reject_problem(rid, "segment", problem)
            continue
        spans = VIDEO_SPAN + (AUDIO_SPAN if len(media) > 1 else "")
        windows = group_cues(cues, duration_us, round(segment_seconds * US))
        for k, (start, end, window) in enumerate(windows):
            text = " ".join(c.text for c in window if c.text)
            writer.add({"id": f"{rid}-{k:04d}"[:128], "kind": "segment", "content": f"{spans} {text}".rstrip(),
                        "media": media, "source": source, "license": licence, "start_us": start,
                        "duration_us": end - start,
                        "subtitles": [{"start_us": c.start_us, "duration_us": c.duration_us, "text": c.text}
                                      for c in window]})
    if no_audio:
        writer.notes.append(f"{len(no_audio)} video(s) without a decoded audio track, video-only records "
                            f"(no track, or neither PyAV nor an ffmpeg for librosa): {', '.join(no_audio[:5])}")
