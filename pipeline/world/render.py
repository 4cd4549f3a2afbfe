"""Drawing and encoding for the sample world: shapes on a canvas, PNG, MP4 and WAV bytes.

Every encoder here is deterministic for the same input array (PNG through ``cv2.imencode``,
MP4 through ``cv2.VideoWriter`` with the ``mp4v`` codec, WAV through soundfile as 16-bit PCM),
which is what makes the same seed give byte-identical media.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import soundfile

# Colour names are whole words that are not substrings of other words used in captions, so a
# word-boundary search for "red" never hits "centred" or similar.
COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "red": (40, 40, 220),
    "green": (60, 170, 40),
    "blue": (220, 80, 40),
    "yellow": (40, 210, 240),
    "orange": (30, 140, 245),
    "purple": (180, 60, 140),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PAPER_BGR: tuple[int, int, int] = (232, 232, 232)
FILM_BGR: tuple[int, int, int] = (34, 34, 34)

VIDEO_FOURCC = "mp4v"


def sha256_hex(data: bytes) -> str:
    """Lower-case hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def blank_canvas(width: int, height: int, bgr: tuple[int, int, int]) -> np.ndarray:
    """A ``height x width`` BGR uint8 image filled with one colour."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:, :] = bgr
    return canvas


def draw_shape(
    canvas: np.ndarray, shape: str, centre: tuple[int, int], radius: int, bgr: tuple[int, int, int]
) -> None:
    """Draw a filled shape whose tight bounding box is ``centre +- radius`` on both axes."""
    cx, cy = centre
    if shape == "circle":
        cv2.circle(canvas, (cx, cy), radius, bgr, thickness=-1, lineType=cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(canvas, (cx - radius, cy - radius), (cx + radius, cy + radius), bgr, -1)
    elif shape == "triangle":
        # Apex at the top, base at the bottom: the box is exactly centre +- radius.
        points = np.array(
            [[cx, cy - radius], [cx - radius, cy + radius], [cx + radius, cy + radius]],
            dtype=np.int32,
        )
        cv2.fillPoly(canvas, [points], bgr, lineType=cv2.LINE_AA)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_laterality_marker(canvas: np.ndarray) -> None:
    """Draw a white "L" in the top-left corner, as radiographers mark the patient's left."""
    cv2.putText(canvas, "L", (10, 32), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (245, 245, 245), 2)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a BGR image."""
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("cv2 could not encode a PNG")
    return bytes(buffer.tobytes())


def encode_mp4(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """MP4 (mp4v) bytes of equally sized BGR frames.

    ``cv2.VideoWriter`` only writes to a path, so the video goes through a temporary file.
    """
    if not frames:
        raise ValueError("a video needs at least one frame")
    height, width = frames[0].shape[:2]
    with tempfile.TemporaryDirectory(prefix="xmodal-video-") as tmp:
        path = Path(tmp) / "video.mp4"
        writer = cv2.VideoWriter(
            str(path), cv2.VideoWriter.fourcc(*VIDEO_FOURCC), fps, (width, height)
        )
        if not writer.isOpened():
            raise RuntimeError(f"cv2.VideoWriter cannot open the {VIDEO_FOURCC} codec")
        for frame in frames:
            writer.write(frame)
        writer.release()
        return path.read_bytes()


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV bytes of float samples in [-1, 1]."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (the format ``np.load`` reads)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_media(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` (creating parents) and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha256_hex(data)
