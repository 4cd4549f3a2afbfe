"""Stage ``decode_media``: decode and resize media into arrays for the scorers (CPU).

Consumes ``kind``, ``media``, ``manifest_root``, ``boxes`` (or ``boxes_xyxy``), ``start_us`` and
``duration_us``. Produces, on object, segment and document rows:

- ``decoded_images``: RGB uint8 ``image_size x image_size x 3`` pixels (raw bytes), resized
  exactly as open_clip's eval transform does (``resize_mode``, ``interpolation``): the first
  image of an object row, every image of a document row in media order, and ``video_frames``
  frames of a segment row's first video, sampled at the centres of equal slices of the segment;
- ``decoded_frame_us``: the time of each sampled frame (segments);
- ``decoded_crops``: one square crop per box (object rows), ``crop_margin`` around the box,
  empty bytes where a box cannot be cropped (non-finite or empty after clipping);
- ``decoded_image_spec``: ``"<size>/<resize_mode>/<interpolation>/<fill>"``, checked by
  ``clip_score`` against its model;
- ``decoded_audio``: mono float32 samples of every audio ref in media order, cut to the
  segment's window, resampled with librosa to ``audio_sample_rate`` and capped at
  ``max_audio_s``; ``decoded_audio_rate``.

Rejects with ``ERR_CROSS_MDL_MEDIA`` a row whose media cannot be read or decoded, or whose
header breaks a decoding limit (``access.media_limits``, the same params as ``media_check``:
image pixels, audio sample rate and duration, video frame size, count and duration), checked
before any pixel or sample is allocated; audio is read only for the segment's window. The
scorers null these columns once they have used them, so the arrays never reach a release.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from access.io import MediaFile, local_copy, open_media, resolve_media_uri
from access.media_limits import MediaHeaderError, MediaLimits, VideoHeader, audio_header, image_header, video_capture
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows

US = 1_000_000
DECODED_FIELDS: list[pa.Field] = [
    pa.field("decoded_images", pa.list_(pa.binary())),
    pa.field("decoded_frame_us", pa.list_(pa.int64())),
    pa.field("decoded_crops", pa.list_(pa.binary())),
    pa.field("decoded_image_spec", pa.string()),
    pa.field("decoded_audio", pa.list_(pa.list_(pa.float32()))),
    pa.field("decoded_audio_rate", pa.int32()),
]
IMAGE_COLUMNS = ("decoded_images", "decoded_frame_us", "decoded_crops", "decoded_image_spec")
AUDIO_COLUMNS = ("decoded_audio", "decoded_audio_rate")


class MediaDecodeError(ValueError):
    """A media ref that cannot be read or decoded (the row gets ``ERR_CROSS_MDL_MEDIA``)."""


@contextmanager
def opened_media(ref: dict[str, Any], root: str | None, max_bytes: int) -> Iterator[MediaFile]:
    """The ref's media, opened through the policy; errors name the ref (a limit's measured value,
    a size over ``max_bytes``, a ref outside the roots, a missing file)."""
    try:
        with open_media(resolve_media_uri(ref["uri"], root), max_bytes) as media:
            yield media
    except MediaDecodeError:
        raise
    except (ValueError, OSError) as exc:
        raise MediaDecodeError(f"{ref.get('modality')} {ref['uri']}: {exc}") from None


def image_spec(size: int, resize_mode: str, interpolation: str, fill_color: int) -> str:
    return f"{size}/{resize_mode}/{interpolation}/{fill_color}"


def geometric_transform(size: int, resize_mode: str, interpolation: str, fill_color: int) -> Any:
    """open_clip's eval transform without ToTensor/Normalize: PIL in, RGB PIL out."""
    from open_clip.transform import image_transform
    from torchvision.transforms import Compose

    full = image_transform(size, is_train=False, resize_mode=resize_mode,
                           interpolation=interpolation, fill_color=fill_color)
    keep = [t for t in full.transforms
            if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]
    return Compose(keep)


def pixels(image: Any) -> bytes:
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise MediaDecodeError(f"decoded image has shape {array.shape}, expected HxWx3")
    return array.tobytes()


def open_image(media: MediaFile, uri: str, limits: MediaLimits) -> Any:
    """The decoded image; its header is checked against the pixel limit first."""
    try:
        image = image_header(media.stream, limits)
        image.load()
    except MediaHeaderError as exc:
        raise MediaDecodeError(f"image {uri} {exc}") from None
    except (OSError, SyntaxError) as exc:
        raise MediaDecodeError(f"image {uri} is undecodable: {exc}") from None
    return image


def square_crop(image: Any, box: list[float], margin: float) -> Any | None:
    """A square region centred on the box, ``margin`` of its longer side added on each side,
    padded with black outside the image; None for a box that is non-finite or empty."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(box)):
        return None
    width, height = image.size
    x1, x2 = max(0.0, min(x1, x2)), min(float(width), max(x1, x2))
    y1, y2 = max(0.0, min(y1, y2)), min(float(height), max(y1, y2))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    region = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    return image.convert("RGB").crop(region)


def segment_window(row: dict[str, Any]) -> tuple[int, int | None]:
    start = int(row.get("start_us") or 0) if row.get("kind") == "segment" else 0
    duration = row.get("duration_us") if row.get("kind") == "segment" else None
    return start, int(duration) if duration else None


def sample_video_frames(path: str, fps_hint: float | None, start_us: int, duration_us: int | None,
                        count: int, limits: MediaLimits | None = None) -> tuple[list[np.ndarray], list[int]]:
    """``count`` RGB frames at the centres of equal slices of ``[start, start + duration)``;
    the container's frame size, count and duration are checked against ``limits`` first."""
    try:
        with video_capture(path, limits or MediaLimits()) as (capture, header):
            return _sample_frames(capture, header, path, fps_hint, start_us, duration_us, count)
    except MediaHeaderError:
        raise MediaDecodeError(f"video {path} cannot be opened") from None


def _sample_frames(capture: Any, header: VideoHeader, path: str, fps_hint: float | None, start_us: int,
                   duration_us: int | None, count: int) -> tuple[list[np.ndarray], list[int]]:
    import cv2

    fps = float(fps_hint or header.fps)
    total = header.frames
    if fps <= 0 or total <= 0:
        raise MediaDecodeError(f"video {path}: unknown frame rate or frame count")
    span = duration_us if duration_us else int(total * US / fps) - start_us
    times = [start_us + (2 * k + 1) * span // (2 * count) for k in range(count)]
    wanted = {min(total - 1, int(t * fps // US)): t for t in times}
    frames: dict[int, np.ndarray] = {}
    for index in range(max(wanted) + 1):
        if not capture.grab():
            break
        if index in wanted:
            ok, frame = capture.retrieve()
            if ok:
                frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if len(frames) != len(wanted):
        raise MediaDecodeError(f"video {path}: decoded {len(frames)} of {len(wanted)} frames")
    order = sorted(wanted)
    return [frames[i] for i in order], [int(wanted[i]) for i in order]


def decode_audio(data: bytes | MediaFile, uri: str, rate: int, start_us: int, duration_us: int | None,
                 max_s: float, limits: MediaLimits | None = None) -> np.ndarray:
    """Mono float32 samples at ``rate`` of the window, at most ``max_s`` seconds long. The
    header is checked against ``limits`` first, then only the window is read."""
    import librosa
    import soundfile

    stream: Any = io.BytesIO(data) if isinstance(data, bytes) else data.stream
    try:
        info = audio_header(stream, limits or MediaLimits())
        sr = int(info.samplerate)
        first = start_us * sr // US
        last = info.frames if duration_us is None else (start_us + duration_us) * sr // US
        last = min(last, first + int(max_s * sr), info.frames)
        with soundfile.SoundFile(stream) as sound:
            if last > first:
                sound.seek(first)
            samples = sound.read(max(0, last - first), dtype="float32", always_2d=True)
    except MediaHeaderError as exc:
        raise MediaDecodeError(f"audio {uri} {exc}") from None
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise MediaDecodeError(f"audio {uri} is undecodable: {exc}") from None
    mono = samples.mean(axis=1)
    if mono.size == 0:
        raise MediaDecodeError(f"audio {uri}: no samples in the window")
    if sr != rate:
        # librosa refuses non-finite input; resample the zero-filled signal and put NaN back
        # where the bad samples land, so that the scorer's FUSION guard still sees them.
        bad = np.flatnonzero(~np.isfinite(mono))
        mono = librosa.resample(np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0),
                                orig_sr=sr, target_sr=rate)
        if bad.size:
            mono[np.minimum(bad * rate // sr, mono.size - 1)] = np.nan
    return np.ascontiguousarray(mono[: int(max_s * rate)], dtype=np.float32)


class DecodeMediaParams(StageParams, MediaLimits):
    """How images, frames and audio are decoded; image settings must match the CLIP model. The
    decoding limits are those of ``media_check``; only ``max_media_bytes`` is smaller here."""

    images: bool = Field(default=True, description="decode images, box crops and video frames")
    image_size: int = Field(default=224, ge=8, le=1024, description="side of the square model input")
    resize_mode: Literal["shortest", "longest", "squash"] = Field(
        default="shortest", description="open_clip resize mode of the model's preprocess config")
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    fill_color: int = Field(default=0, ge=0, le=255, description="padding grey level ('longest')")
    box_crops: bool = Field(default=True, description="crop every box of object rows")
    crop_margin: float = Field(default=0.1, ge=0, le=1, description="crop margin, share of box side")
    video_frames: int = Field(default=8, ge=1, le=256, description="frames sampled per segment")
    audio: bool = Field(default=True, description="decode audio refs")
    audio_sample_rate: int = Field(default=48_000, ge=1000, description="the CLAP model's rate")
    max_audio_s: float = Field(default=10.0, gt=0, description="longest audio kept per ref")
    max_media_bytes: int = Field(default=256 << 20, gt=0, description="larger media are rejected unread")


class DecodeMedia(Stage):
    """Decode media into array columns (see the module docstring)."""

    name: ClassVar[str] = "decode_media"
    params_model: ClassVar[type[StageParams]] = DecodeMediaParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=64)
    output_fields: ClassVar[list[pa.Field]] = DECODED_FIELDS
    error_code: ClassVar[ReasonCode] = ReasonCode.MEDIA

    def setup(self) -> None:
        p: DecodeMediaParams = self.params  # type: ignore[assignment]
        self._transform: Any = geometric_transform(p.image_size, p.resize_mode, p.interpolation,
                                              p.fill_color) if p.images else None

    def process(self, rows: pa.Table) -> pa.Table:
        p: DecodeMediaParams = self.params  # type: ignore[assignment]
        out: dict[str, list[Any]] = {f.name: [] for f in DECODED_FIELDS}
        verdicts: list[Verdict | None] = []
        names = ["kind", "media", "manifest_root", "boxes", "start_us", "duration_us"]
        names += ["boxes_xyxy"] if "boxes_xyxy" in rows.column_names else []
        for row in rows.select(names).to_pylist():
            try:
                decoded = self._decode(row, p)
                verdicts.append(None)
            except (MediaDecodeError, OSError, ValueError) as exc:
                decoded = {}
                verdicts.append(Verdict(ReasonCode.MEDIA, str(exc)[:300]))
            for field in DECODED_FIELDS:
                out[field.name].append(decoded.get(field.name))
        for field in DECODED_FIELDS:
            idx = rows.schema.get_field_index(field.name)
            rows = rows.set_column(idx, field, pa.array(out[field.name], field.type))
        return reject_rows(rows, verdicts, self.name)

    def _decode(self, row: dict[str, Any], p: DecodeMediaParams) -> dict[str, Any]:
        kind = row["kind"]
        refs = [r for r in row.get("media") or [] if r]
        root = row.get("manifest_root")
        out: dict[str, Any] = {}
        if kind not in ("object", "segment", "document"):
            return out
        start_us, duration_us = segment_window(row)
        if p.images:
            out.update(self._decode_images(row, refs, root, start_us, duration_us, p))
        if p.audio:
            clips = []
            for ref in refs:
                if ref.get("modality") != "audio":
                    continue
                with opened_media(ref, root, p.max_media_bytes) as media:
                    clips.append(decode_audio(media, ref["uri"], p.audio_sample_rate, start_us,
                                              duration_us, p.max_audio_s, p))
            if clips:
                out["decoded_audio"] = clips
                out["decoded_audio_rate"] = p.audio_sample_rate
        return out

    def _decode_images(self, row: dict[str, Any], refs: list[dict[str, Any]], root: str | None,
                       start_us: int, duration_us: int | None,
                       p: DecodeMediaParams) -> dict[str, Any]:
        from PIL import Image

        from stages.object_boxes import row_boxes_xyxy

        out: dict[str, Any] = {}
        images: list[bytes] = []
        if row["kind"] == "segment":
            video = next((r for r in refs if r.get("modality") == "video"), None)
            if video is None:
                return out
            frames, times = self._video_frames(video, root, start_us, duration_us, p)
            images = [pixels(self._transform(Image.fromarray(f))) for f in frames]
            out["decoded_frame_us"] = times
        else:
            image_refs = [r for r in refs if r.get("modality") == "image"]
            opened = []
            for ref in image_refs[:1] if row["kind"] == "object" else image_refs:
                with opened_media(ref, root, p.max_media_bytes) as media:
                    opened.append(open_image(media, ref["uri"], p))
            images = [pixels(self._transform(image)) for image in opened]
            if row["kind"] == "object" and p.box_crops and opened and row.get("boxes"):
                boxes = row_boxes_xyxy(row) or [[float("nan")] * 4 for _ in row["boxes"]]
                crops = [square_crop(opened[0], box, p.crop_margin) for box in boxes]
                out["decoded_crops"] = [b"" if c is None else pixels(self._transform(c))
                                        for c in crops]
        if images:
            out["decoded_images"] = images
            out["decoded_image_spec"] = image_spec(p.image_size, p.resize_mode,
                                                   p.interpolation, p.fill_color)
        return out

    def _video_frames(self, ref: dict[str, Any], root: str | None, start_us: int,
                      duration_us: int | None, p: DecodeMediaParams
                      ) -> tuple[list[np.ndarray], list[int]]:
        # OpenCV reads files only: an S3 video is copied to a temp file in pieces.
        with opened_media(ref, root, p.max_media_bytes) as media, \
                local_copy(media, os.path.splitext(ref["uri"])[1] or ".mp4") as path:
            return sample_video_frames(path, ref.get("fps"), start_us, duration_us, p.video_frames, p)
