"""Media beside the review page: copies under ``DIR/media/``, videos re-encoded for a browser,
subtitles and aligned sub-segments as WebVTT.

Images and audio are copied as they are. A video is decoded (OpenCV) and written again as VP8
WebM, which every Chromium plays (the sample world's MPEG-4 part 2 does not play in a browser);
its audio stays in its own file, played in step by the page. A ``.vtt`` file is written beside
each video, and the page carries the same text as a ``data:`` URI, since a browser refuses a
``<track>`` read from ``file://``. A media file that cannot be read is not an error: the page
says why it is missing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from access.io import MediaPathError, read_bytes, resolve_media_uri
from pipeline.release.portable import resolve_media_uri as resolve_release_media

MEDIA_DIR = "media"
WEBM_FOURCC = "VP80"
DEFAULT_MAX_MEDIA_BYTES = 64 << 20


@dataclass(frozen=True)
class Copied:
    """A media file beside the page (``rel`` under DIR, ``local`` its path here) or why there is
    none (``missing``)."""

    uri: str
    rel: str | None
    missing: str | None = None
    local: str | None = None


def _stem(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def _suffix(uri: str, default: str) -> str:
    ext = os.path.splitext(urllib.parse.urlparse(uri).path)[1].lower()
    return ext if ext and len(ext) <= 6 and ext[1:].isalnum() else default


class MediaCopier:
    """Copies each media ref once (by resolved URI) under ``out_dir/media``.

    ``release_uri``: the release the rows were read from. Its data and negatives shards hold
    refs relative to the release folder (``release.media``: ``relative`` or ``copy``,
    ``pipeline.release.portable``), resolved against it; a row with a ``manifest_root`` (a
    reject, which keeps the URIs the build read) is resolved against that root as before."""

    def __init__(self, out_dir: Path, max_bytes: int = DEFAULT_MAX_MEDIA_BYTES,
                 release_uri: str | None = None) -> None:
        self.out_dir = out_dir
        self.max_bytes = max_bytes
        self.release_uri = release_uri
        self._done: dict[tuple[str, str], Copied] = {}
        self.missing: list[Copied] = []
        (out_dir / MEDIA_DIR).mkdir(parents=True, exist_ok=True)

    def _read(self, uri: str, root: str | None) -> tuple[str, bytes | None, str | None]:
        try:
            if root is None and self.release_uri is not None:
                resolved = resolve_release_media(self.release_uri, uri)
            else:
                resolved = resolve_media_uri(uri, root)
        except (MediaPathError, ValueError) as err:
            return uri, None, f"not resolvable: {err}"
        try:
            return resolved, read_bytes(resolved, self.max_bytes), None
        except FileNotFoundError:
            return resolved, None, f"not found: {resolved}"
        except (OSError, ValueError) as err:
            return resolved, None, f"not readable: {err}"

    def copy(self, ref: dict[str, Any] | None, root: str | None) -> Copied:
        """An image or audio ref, copied; a video ref, re-encoded as WebM."""
        uri = str((ref or {}).get("uri") or "")
        modality = str((ref or {}).get("modality") or "")
        if not uri:
            return Copied(uri, None, "no uri")
        key = (uri, root or "")
        if key not in self._done:
            done = self._video(uri, root) if modality == "video" else self._plain(uri, root, modality)
            self._done[key] = done
            if done.rel is None:
                self.missing.append(done)
        return self._done[key]

    def _plain(self, uri: str, root: str | None, modality: str) -> Copied:
        resolved, data, why = self._read(uri, root)
        if data is None:
            return Copied(resolved, None, why)
        rel = f"{MEDIA_DIR}/{_stem(resolved)}{_suffix(resolved, '.wav' if modality == 'audio' else '.png')}"
        (self.out_dir / rel).write_bytes(data)
        return Copied(resolved, rel, local=str(self.out_dir / rel))

    def _video(self, uri: str, root: str | None) -> Copied:
        resolved, data, why = self._read(uri, root)
        if data is None:
            return Copied(resolved, None, why)
        rel = f"{MEDIA_DIR}/{_stem(resolved)}.webm"
        with tempfile.NamedTemporaryFile(suffix=_suffix(resolved, ".mp4"), dir=self.out_dir / MEDIA_DIR) as src:
            src.write(data)
            src.flush()
            why = transcode_webm(src.name, str(self.out_dir / rel))
        return Copied(resolved, None, why) if why else Copied(resolved, rel, local=str(self.out_dir / rel))

    def write_text(self, name: str, text: str) -> str:
        rel = f"{MEDIA_DIR}/{name}"
        (self.out_dir / rel).write_text(text, encoding="utf-8")
        return rel


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (native code's messages) for the block."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def transcode_webm(src: str, dest: str) -> str | None:
    """Decode ``src`` and write its frames to ``dest`` as VP8 WebM at the same rate; the reason
    when it cannot (None on success)."""
    import cv2

    cap = cv2.VideoCapture(src)
    try:
        if not cap.isOpened():
            return "video not decodable"
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        ok, frame = cap.read()
        if not ok:
            return "video has no frame"
        height, width = frame.shape[:2]
        with _quiet_stderr():  # FFmpeg says the WebM muxer has no tag for VP8, then writes VP8
            writer = cv2.VideoWriter(dest, cv2.VideoWriter.fourcc(*WEBM_FOURCC), fps, (width, height))
        if not writer.isOpened():
            return "this OpenCV cannot write VP8 WebM"
        try:
            while ok:
                writer.write(frame)
                ok, frame = cap.read()
        finally:
            writer.release()
    finally:
        cap.release()
    return None


def vtt_time(us: int) -> str:
    ms = max(0, int(us)) // 1000
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def webvtt(cues: list[tuple[int, int, str]]) -> str:
    """A WebVTT file of ``(start_us, end_us, text)`` cues; ``-->`` in text cannot end a cue."""
    blocks = ["WEBVTT", ""]
    for i, (start, end, text) in enumerate(cues, 1):
        body = " ".join(str(text).split()).replace("-->", "->") or "-"
        blocks += [str(i), f"{vtt_time(start)} --> {vtt_time(max(end, start + 1000))}", body, ""]
    return "\n".join(blocks)


def vtt_data_uri(text: str) -> str:
    return "data:text/vtt;charset=utf-8," + urllib.parse.quote(text)


def subtitle_cues(record: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(int(s["start_us"]), int(s["start_us"]) + int(s["duration_us"]), str(s.get("text") or ""))
            for s in record.get("subtitles") or [] if s and s.get("start_us") is not None
            and s.get("duration_us") is not None]


def chapter_cues(record: dict[str, Any], fps: float | None) -> list[tuple[int, int, str]]:
    """The aligned sub-segments (``segment_align``'s ``alignment``) on the video's timeline."""
    cues = []
    for a in record.get("alignment") or []:
        if not a:
            continue
        if fps and a.get("video_frame_start") is not None and a.get("video_frame_end") is not None:
            start, end = int(a["video_frame_start"] * 1e6 / fps), int(a["video_frame_end"] * 1e6 / fps)
        elif a.get("start_us") is not None and a.get("duration_us") is not None:
            start, end = int(a["start_us"]), int(a["start_us"]) + int(a["duration_us"])
        else:
            continue
        cues.append((start, end, str(a.get("text") or "")))
    return cues
