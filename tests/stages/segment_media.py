"""Small synthetic segments for the segment tests: a square that moves while a tone sounds.

``write_segment`` renders a short video (MJPG in .avi, which every OpenCV build writes) and a
16 kHz WAV into a directory and returns the segment record that points at them. Faults are
made in the media themselves: shifted, silent or noise-only audio, black or frozen video.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import soundfile

from schemas.records import ROW_SCHEMA

US = 1_000_000
FPS = 10
SR = 16_000
EVENTS_US = ((2_000_000, 4_000_000), (6_500_000, 8_000_000), (11_000_000, 13_500_000))


def _active(t_us: np.ndarray, events: tuple[tuple[int, int], ...]) -> np.ndarray:
    return np.any([(t_us >= a) & (t_us < b) for a, b in events], axis=0)


def render_video(path: Path, duration_us: int, events: tuple[tuple[int, int], ...],
                 video: str = "clean") -> None:
    frames = duration_us * FPS // US
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    x = 10
    for k in range(frames):
        t = k * US // FPS
        frame = np.full((48, 64, 3), 60, np.uint8)
        # moves during events: frame k shows the motion made in [t_{k-1}, t_k)
        if k and _active(np.array([t - US // FPS]), events)[0] and video != "frozen":
            x = 10 + (x - 10 + 3) % 40
        cv2.rectangle(frame, (x, 16), (x + 12, 28), (40, 200, 240), -1)
        if video == "black":
            frame[:] = 0
        writer.write(frame)
    writer.release()


def render_audio(path: Path, duration_us: int, events: tuple[tuple[int, int], ...],
                 audio: str = "clean", offset_us: int = 0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = duration_us * SR // US
    t_us = np.arange(n, dtype=np.int64) * US // SR
    shifted = tuple((a + offset_us, b + offset_us) for a, b in events)
    tone = np.sin(2 * np.pi * 440.0 * t_us / US) * 0.3 * _active(t_us, shifted)
    samples = tone + rng.normal(0, 0.003, n)
    if audio == "silent":
        samples = np.zeros(n)
    elif audio == "noise":
        samples = rng.normal(0, 0.1, n)
    soundfile.write(str(path), samples.astype(np.float32), SR, subtype="PCM_16")


def write_segment(directory: Path, seg_id: str, duration_us: int = 15 * US,
                  events: tuple[tuple[int, int], ...] = EVENTS_US, video: str = "clean",
                  audio: str = "clean", offset_us: int = 0,
                  subtitles: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Render media into ``directory/media`` and return the record (relative URIs)."""
    media = directory / "media"
    media.mkdir(parents=True, exist_ok=True)
    render_video(media / f"{seg_id}.avi", duration_us, events, video)
    render_audio(media / f"{seg_id}.wav", duration_us, events, audio, offset_us)
    if subtitles is None:
        subtitles = [{"start_us": a, "duration_us": b - a, "text": f"event {k}"}
                     for k, (a, b) in enumerate(events)]
    return {
        "id": seg_id, "kind": "segment",
        "content": "<|video_start|><|video_pad|><|video_end|>"
                   "<|audio_start|><|audio_pad|><|audio_end|> a square moves",
        "media": [{"modality": "video", "uri": f"media/{seg_id}.avi", "fps": float(FPS),
                   "duration_us": duration_us},
                  {"modality": "audio", "uri": f"media/{seg_id}.wav", "sample_rate": SR,
                   "duration_us": duration_us}],
        "source": "tests", "license": "CC0-1.0", "subtitles": subtitles,
    }


def rows_table(records: list[dict[str, Any]], root: Path | str) -> pa.Table:
    """Records as ok ROW_SCHEMA rows whose media resolve against ``root``."""
    rows = [{**r, "status": "ok", "manifest_root": str(root)} for r in records]
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def jsonl_table(path: Path) -> pa.Table:
    """A JSONL manifest as ok rows (what ingest gives for valid records)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows_table(records, path.parent)


def examples_dir() -> Path:
    """The project's example records (``tests/fixtures/examples``, see its PROVENANCE.md)."""
    return Path(__file__).resolve().parents[1] / "fixtures" / "examples"
