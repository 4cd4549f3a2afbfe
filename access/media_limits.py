"""Decoding limits, checked on a media file's header before its pixels or samples are allocated.

A header can claim anything: a 30 KB PNG that inflates to 16000x16000 pixels, a 32 KB WAV whose
sample rate is 2^31-1, a sparse 1 GiB WAV of nine hours. Each probe here reads only the header
(Pillow's lazy open, libsndfile's ``info``, OpenCV's container properties) and raises
:class:`MediaLimitError`, whose message gives the measured value and the limit, when a limit is
exceeded; :class:`MediaHeaderError` when there is no header to read. The limits are a pydantic
model that the stages which open media (``media_check``, ``decode_media``) extend, so they are
set per stage in the run config.

Imports neither ``pipeline`` nor Ray.
"""

from __future__ import annotations

import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MediaLimitError(ValueError):
    """A header that claims more than a limit allows (the message says how much)."""


class MediaHeaderError(ValueError):
    """Bytes without a readable header of the declared modality."""


class MediaLimits(BaseModel):
    """What one media file may claim in its header, and how many bytes of it are read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_media_bytes: int = Field(default=1 << 30, gt=0, description="refuse a media object larger than "
                                 "this before reading it (it is read as a stream)")
    max_image_pixels: int = Field(default=50_000_000, gt=0, description="width x height of an image "
                                  "or a video frame, from the header")
    max_audio_sample_rate: int = Field(default=384_000, gt=0, description="audio sample rate (Hz), from "
                                       "the header")
    max_audio_duration_s: float = Field(default=4 * 3600.0, gt=0, description="audio length, from the "
                                        "header's frame count and rate")
    max_video_frames: int = Field(default=1_000_000, gt=0, description="video frame count, from the "
                                  "container")
    max_video_duration_s: float = Field(default=4 * 3600.0, gt=0, description="video length, from the "
                                        "container's frame count and rate")


def _check_pixels(what: str, width: int, height: int, limits: MediaLimits) -> None:
    if width * height > limits.max_image_pixels:
        raise MediaLimitError(f"{what} is {width}x{height} = {width * height} pixels, over the limit "
                              f"of {limits.max_image_pixels}")


def image_header(stream: BinaryIO, limits: MediaLimits) -> Any:
    """A lazily opened Pillow image (header read, no pixels yet) within the pixel limit."""
    from PIL import Image, UnidentifiedImageError

    head = stream.read(24)
    stream.seek(0)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":  # its size, before Pillow's own stop
        width, height = struct.unpack(">II", head[16:24])
        _check_pixels("image", width, height, limits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream)
        except Image.DecompressionBombError as err:  # Pillow's own hard stop, past ~179 MP
            found = re.search(r"\((\d+) pixels\)", str(err))
            pixels = found.group(1) if found else "too many"
            raise MediaLimitError(f"image has {pixels} pixels, over the limit of "
                                  f"{limits.max_image_pixels}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise MediaHeaderError(f"is not a decodable image ({err})") from None
    width, height = image.size
    _check_pixels("image", width, height, limits)
    return image


def audio_header(stream: BinaryIO, limits: MediaLimits) -> Any:
    """libsndfile's header info (rate, frames, channels) within the rate and duration limits."""
    import soundfile

    try:
        info = soundfile.info(stream)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise MediaHeaderError(f"is not decodable audio ({err})") from None
    finally:
        stream.seek(0)
    if info.samplerate > limits.max_audio_sample_rate:
        raise MediaLimitError(f"audio sample rate is {info.samplerate} Hz, over the limit of "
                              f"{limits.max_audio_sample_rate}")
    duration = info.frames / info.samplerate if info.samplerate > 0 else 0.0
    if duration > limits.max_audio_duration_s:
        raise MediaLimitError(f"audio is {duration:.1f} s long, over the limit of "
                              f"{limits.max_audio_duration_s:g} s")
    return info


@dataclass(frozen=True)
class VideoHeader:
    fps: float
    frames: int
    width: int
    height: int


@contextmanager
def video_capture(path: str, limits: MediaLimits) -> Iterator[tuple[Any, VideoHeader]]:
    """An open OpenCV capture of a local video and its header, within the frame-size, frame
    count and duration limits; released on exit."""
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise MediaHeaderError("is not a decodable video")
        header = VideoHeader(
            fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
            frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
        _check_pixels("video frame", header.width, header.height, limits)
        if header.frames > limits.max_video_frames:
            raise MediaLimitError(f"video has {header.frames} frames, over the limit of "
                                  f"{limits.max_video_frames}")
        if header.fps > 0 and header.frames / header.fps > limits.max_video_duration_s:
            raise MediaLimitError(f"video is {header.frames / header.fps:.1f} s long, over the limit "
                                  f"of {limits.max_video_duration_s:g} s")
        yield capture, header
    finally:
        capture.release()
