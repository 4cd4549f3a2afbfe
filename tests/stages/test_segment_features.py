"""Segment features: frame times in integer microseconds, shapes, and the A/V offset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.segment_features import (
    audio_activity,
    audio_features,
    estimate_av_offset_us,
    frame_times_us,
    load_segment_media,
    video_activity,
)
from tests.stages.segment_media import FPS, SR, examples_dir, write_segment

US = 1_000_000


@given(count=st.integers(0, 5000), num=st.integers(1, 10_000), den=st.integers(1, 96_000))
def test_frame_times_are_exact_integer_microseconds(count: int, num: int, den: int) -> None:
    times = frame_times_us(count, num, den)
    assert times.dtype == np.int64 and len(times) == count
    for k in (0, count // 2, count - 1) if count else ():
        assert times[k] == (k * num * US) // den


def _media(tmp_path: Path, seg_id: str, **kwargs: object) -> tuple[dict[str, object], object]:
    record = write_segment(tmp_path, seg_id, **kwargs)  # type: ignore[arg-type]
    return record, load_segment_media({**record, "manifest_root": str(tmp_path)})


def test_features_have_matching_timelines(tmp_path: Path) -> None:
    _, media = _media(tmp_path, "clean")
    audio, video = media.audio, media.video
    assert audio.sample_rate == SR and audio.hop_length == 320  # 20 ms
    assert audio.frame_us.dtype == np.int64 and audio.frame_us[1] == 20_000
    assert audio.spectral.shape == (len(audio.frame_us), 64)
    assert video.fps == FPS and video.frame_us[1] == 100_000
    assert video.descriptor.shape == (video.num_frames, 15)
    assert audio.duration_us == video.duration_us == 15 * US
    assert np.isfinite(audio.spectral).all() and np.isfinite(video.descriptor).all()
    assert audio_activity(audio).shape[1] == video_activity(video).shape[1] == 2


def test_mfcc_is_available() -> None:
    tone = np.sin(np.arange(SR) * 2 * np.pi * 440 / SR).astype(np.float32)
    feats = audio_features(tone, SR, hop_us=10_000, kind="mfcc", n_mfcc=13)
    assert feats.spectral.shape[1] == 13 and feats.hop_length == 160


@pytest.mark.parametrize("offset_us", [1_500_000, -1_500_000, 0])
def test_injected_offset_is_recovered_within_100_ms(tmp_path: Path, offset_us: int) -> None:
    _, media = _media(tmp_path, "shifted", offset_us=offset_us)
    measured, score = estimate_av_offset_us(media.audio, media.video)
    assert abs(measured - offset_us) <= 100_000, measured
    assert score > 0.3


def test_offset_of_the_example_is_recovered() -> None:
    root = examples_dir()
    row = {"manifest_root": str(root),
           "media": [{"modality": "video", "uri": "media/seg-offset.mp4", "fps": 10.0},
                     {"modality": "audio", "uri": "media/seg-offset.wav"}]}
    media = load_segment_media(row)
    measured, _ = estimate_av_offset_us(media.audio, media.video)
    assert abs(measured - 1_500_000) <= 100_000
