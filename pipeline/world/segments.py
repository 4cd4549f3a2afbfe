"""Segment records: a ball that moves only during timed events, a tone burst during each event,
and one subtitle per event, all on one integer-microsecond timeline.

Events sit on the 100 ms frame grid, so a frame index is ``start_us // FRAME_US`` exactly. Each
event has its own pitch. The last event ends by ``LAST_EVENT_END_US`` so that the audio-offset
fault (tones ``AUDIO_OFFSET_US`` late) still fits inside the 8 s of audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.world import render

FPS = 10.0
FRAME_US = 100_000
DURATION_US = 8_000_000
FRAME_COUNT = DURATION_US // FRAME_US
VIDEO_WIDTH, VIDEO_HEIGHT = 96, 64
BALL_RADIUS = 7
SAMPLE_RATE = 16_000
TONE_AMPLITUDE = 0.5
# Faint noise between bursts: real recordings are never digitally silent, and an all-zero gap
# would make per-frame audio features zero vectors (undefined cosine similarity).
NOISE_AMPLITUDE = 0.002
RAMP_US = 10_000
PITCHES_HZ: tuple[int, ...] = (330, 440, 550, 660, 880)
LAST_EVENT_END_US = 6_000_000
AUDIO_OFFSET_US = 1_500_000
SUBTITLE_AFTER_END_US = 500_000
FEATURES_SHARE = 0.35
FEATURE_GRID = (4, 4)
# Dark neutral grey: every ball colour differs from it by 40+ grey levels (a red ball on a green
# field differs by ~5, and its motion then drowns in codec noise), yet no frame is near black.
BACKGROUND_BGR = (40, 40, 40)
STEP_PX = {"left": (-28, 0), "right": (28, 0), "up": (0, -20), "down": (0, 20)}
COUNT_WORDS = {2: "two", 3: "three"}


@dataclass(frozen=True)
class BallEvent:
    """The ball moves ``direction`` from ``start_us`` for ``duration_us`` with a tone."""

    start_us: int
    duration_us: int
    direction: str
    pitch_hz: int

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    def subtitle_text(self) -> str:
        return f"the ball moves {self.direction} with a {self.pitch_hz} Hz tone"


@dataclass(frozen=True)
class SegmentScene:
    """Everything needed to render a segment record."""

    record_id: str
    ball_colour: str
    events: tuple[BallEvent, ...]
    with_features: bool
    noise_seed: int


def _grid_us(rng: np.random.Generator, low_ms: int, high_ms: int) -> int:
    """A random time in [low, high] ms on the 100 ms frame grid, in microseconds."""
    return int(rng.integers(low_ms // 100, high_ms // 100, endpoint=True)) * FRAME_US


def plan_segment_scene(record_id: str, rng: np.random.Generator) -> SegmentScene:
    """Two or three events with distinct pitches and directions that keep the ball in frame."""
    wanted = int(rng.integers(2, 4))
    pitches = rng.choice(PITCHES_HZ, size=wanted, replace=False)
    x, y = VIDEO_WIDTH // 2, VIDEO_HEIGHT // 2
    events: list[BallEvent] = []
    start = _grid_us(rng, 400, 800)
    for index in range(wanted):
        duration = _grid_us(rng, 800, 1200)
        if start + duration > LAST_EVENT_END_US:
            break
        allowed = [name for name, (dx, dy) in STEP_PX.items()
                   if BALL_RADIUS + 2 <= x + dx <= VIDEO_WIDTH - BALL_RADIUS - 2
                   and BALL_RADIUS + 2 <= y + dy <= VIDEO_HEIGHT - BALL_RADIUS - 2]
        direction = allowed[int(rng.integers(len(allowed)))]
        x, y = x + STEP_PX[direction][0], y + STEP_PX[direction][1]
        events.append(BallEvent(start, duration, direction, int(pitches[index])))
        start += duration + _grid_us(rng, 800, 1200)
    colours = list(render.COLOURS_BGR)
    return SegmentScene(
        record_id=record_id,
        ball_colour=colours[int(rng.integers(len(colours)))],
        events=tuple(events),
        with_features=bool(rng.random() < FEATURES_SHARE),
        noise_seed=int(rng.integers(2**31)),
    )


def ball_position(events: tuple[BallEvent, ...], time_us: int) -> tuple[float, float]:
    """Ball centre at ``time_us``: still between events, linear motion during one."""
    x, y = VIDEO_WIDTH / 2, VIDEO_HEIGHT / 2
    for event in events:
        dx, dy = STEP_PX[event.direction]
        if time_us >= event.end_us:
            x, y = x + dx, y + dy
            continue
        if time_us > event.start_us:
            fraction = (time_us - event.start_us) / event.duration_us
            x, y = x + dx * fraction, y + dy * fraction
        break
    return x, y


def render_frames(scene: SegmentScene, black: bool) -> list[np.ndarray]:
    """One BGR frame per 100 ms; ``black`` is the FUSION fault (every pixel zero)."""
    frames: list[np.ndarray] = []
    for index in range(FRAME_COUNT):
        if black:
            frames.append(np.zeros((VIDEO_HEIGHT, VIDEO_WIDTH, 3), dtype=np.uint8))
            continue
        frame = render.blank_canvas(VIDEO_WIDTH, VIDEO_HEIGHT, BACKGROUND_BGR)
        x, y = ball_position(scene.events, index * FRAME_US)
        render.draw_shape(frame, "circle", (int(round(x)), int(round(y))), BALL_RADIUS,
                          render.COLOURS_BGR[scene.ball_colour])
        frames.append(frame)
    return frames


def render_audio(scene: SegmentScene, offset_us: int, silent: bool) -> np.ndarray:
    """Mono float32 samples: faint noise plus one ramped tone per event, shifted by
    ``offset_us`` (the TEMPORAL fault) and truncated to the segment length."""
    total = DURATION_US * SAMPLE_RATE // 1_000_000
    if silent:
        return np.zeros(total, dtype=np.float32)
    noise_rng = np.random.default_rng(scene.noise_seed)
    samples = noise_rng.normal(0.0, NOISE_AMPLITUDE, total)
    ramp = RAMP_US * SAMPLE_RATE // 1_000_000
    for event in scene.events:
        first = (event.start_us + offset_us) * SAMPLE_RATE // 1_000_000
        count = event.duration_us * SAMPLE_RATE // 1_000_000
        times = np.arange(count) / SAMPLE_RATE
        envelope = np.ones(count)
        envelope[:ramp] = np.linspace(0.0, 1.0, ramp)
        envelope[-ramp:] = np.linspace(1.0, 0.0, ramp)
        tone = TONE_AMPLITUDE * envelope * np.sin(2 * np.pi * event.pitch_hz * times)
        stop = min(first + count, total)
        samples[first:stop] += tone[: stop - first]
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def frame_features(frames: list[np.ndarray]) -> np.ndarray:
    """Per-frame features (grey levels on a coarse grid, in [0, 1]), shape (frames, 16)."""
    rows, cols = FEATURE_GRID
    features = np.empty((len(frames), rows * cols), dtype=np.float32)
    for index, frame in enumerate(frames):
        grey = frame.mean(axis=2)
        cells = grey.reshape(rows, VIDEO_HEIGHT // rows, cols, VIDEO_WIDTH // cols)
        features[index] = (cells.mean(axis=(1, 3)) / 255.0).ravel()
    return features


def article_for(word: str) -> str:
    """``a`` or ``an`` before ``word``."""
    return "an" if word[:1] in "aeiou" else "a"


def segment_content(scene: SegmentScene) -> str:
    """Video span, then audio span (the order of the media refs), then one sentence."""
    count = COUNT_WORDS.get(len(scene.events), str(len(scene.events)))
    return (
        "<|video_start|><|video_pad|><|video_end|><|audio_start|><|audio_pad|><|audio_end|>"
        f" {article_for(scene.ball_colour).capitalize()} {scene.ball_colour} ball moves"
        f" {count} times."
    )


def build_segment_record(
    scene: SegmentScene, out_dir: Path, fault: str | None, common: dict[str, object]
) -> dict[str, object]:
    """Render video, audio (and features) and return the record.

    Faults handled here: ``audio_offset``, ``silent_audio``, ``black_video``, ``nan_features``,
    ``subtitles_reversed`` and ``subtitle_after_end``; other faults are applied later.
    """
    frames = render_frames(scene, black=fault == "black_video")
    video_uri = f"media/{scene.record_id}.mp4"
    audio_uri = f"media/{scene.record_id}.wav"
    offset_us = AUDIO_OFFSET_US if fault == "audio_offset" else 0
    samples = render_audio(scene, offset_us, silent=fault == "silent_audio")
    video_ref: dict[str, object] = {
        "modality": "video", "uri": video_uri,
        "sha256": render.write_media(out_dir / video_uri, render.encode_mp4(frames, FPS)),
        "width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "fps": FPS, "duration_us": DURATION_US,
    }
    if scene.with_features or fault == "nan_features":
        features = frame_features(frames)
        if fault == "nan_features":
            features[FRAME_COUNT // 4: FRAME_COUNT // 2] = np.nan
        features_uri = f"media/{scene.record_id}.features.npy"
        render.write_media(out_dir / features_uri, render.encode_npy(features))
        video_ref["features_path"] = features_uri
    audio_ref: dict[str, object] = {
        "modality": "audio", "uri": audio_uri,
        "sha256": render.write_media(out_dir / audio_uri, render.encode_wav(samples, SAMPLE_RATE)),
        "sample_rate": SAMPLE_RATE, "duration_us": DURATION_US,
    }
    subtitles = [
        {"start_us": event.start_us, "duration_us": event.duration_us,
         "text": event.subtitle_text()}
        for event in scene.events
    ]
    if fault == "subtitles_reversed":
        subtitles.reverse()
    if fault == "subtitle_after_end":
        subtitles[-1]["start_us"] = DURATION_US + SUBTITLE_AFTER_END_US
    return {
        "id": scene.record_id,
        "kind": "segment",
        "content": segment_content(scene),
        "media": [video_ref, audio_ref],
        **common,
        "start_us": 0,
        "duration_us": DURATION_US,
        "subtitles": subtitles,
    }
