"""Audio that belongs to its video, on clean sample-world segments: audio swapped between pairs
of clips (the offset-by-one bug) is LOW_SCORE with a detail naming the audio and the measured
agreement, a real offset stays TEMPORAL with the offset, and the clean clips pass."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import soundfile

from access.io import resolve_media_uri
from pipeline.run.ingest import read_manifest
from pipeline.world import generate_world
from schemas.reason_codes import ReasonCode
from stages.av_correspondence import Agreement, audio_odd_one_out
from stages.segment_checks import SegmentChecks

US = 1_000_000
CLIPS = 12  # six swapped pairs
MEASURED = re.compile(r"\d+ of \d+ audio events match the (video|subtitles)'s? \d+")


@pytest.fixture(scope="module")
def clean_segments(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """Clean segments of a world seed the thresholds were not tuned on."""
    root = tmp_path_factory.mktemp("av-world")
    world = generate_world(root, n=5 * CLIPS, fault_rate=0.0, seed=31)
    table = read_manifest(str(world.manifest_path))
    segments = table.filter(pc.fill_null(pc.equal(table["kind"], "segment"), False))
    assert segments.num_rows >= CLIPS
    return segments.slice(0, CLIPS)


def _audio_ref(row: dict[str, Any]) -> dict[str, Any]:
    return next(ref for ref in row["media"] if ref["modality"] == "audio")


def _check(rows: list[dict[str, Any]], schema: pa.Schema) -> dict[str, dict[str, Any]]:
    out = SegmentChecks()(pa.Table.from_pylist(rows, schema=schema))
    return {row["id"]: row for row in out.to_pylist()}


def test_clean_segments_pass_with_every_event_matched(clean_segments: pa.Table) -> None:
    rows = _check(clean_segments.to_pylist(), clean_segments.schema)
    assert all(row["status"] == "ok" for row in rows.values()), {
        k: r["reject_detail"] for k, r in rows.items() if r["status"] != "ok"}
    assert all(row["av_event_match"] == 1.0 for row in rows.values())
    assert all(abs(row["av_offset_us"]) <= 200_000 for row in rows.values())


@pytest.mark.slow
def test_audio_swapped_between_pairs_is_low_score_naming_the_audio(clean_segments: pa.Table) -> None:
    rows = copy.deepcopy(clean_segments.to_pylist())
    for a, b in zip(rows[::2], rows[1::2], strict=True):  # each clip hears its neighbour
        ref_a, ref_b = _audio_ref(a), _audio_ref(b)
        for key in ("uri", "sha256"):
            ref_a[key], ref_b[key] = ref_b[key], ref_a[key]
    out = _check(rows, clean_segments.schema)
    wrong = {k: (r["reject_code"], r["reject_detail"]) for k, r in out.items()
             if r["reject_code"] != ReasonCode.LOW_SCORE
             or not (r["reject_detail"] or "").startswith("audio does not belong to its video")}
    assert not wrong
    for row in out.values():
        assert MEASURED.search(row["reject_detail"]), row["reject_detail"]
        assert "lags video" not in row["reject_detail"]  # no bogus offset
        assert "leads video" not in row["reject_detail"]


def _shift_audio(row: dict[str, Any], offset_us: int, out_dir: Path) -> dict[str, Any]:
    """``row`` with its audio moved later by ``offset_us`` (earlier when negative)."""
    row = copy.deepcopy(row)
    ref = _audio_ref(row)
    samples, rate = soundfile.read(resolve_media_uri(ref["uri"], row["manifest_root"]),
                                   dtype="float32")
    shift = offset_us * rate // US
    moved = np.zeros_like(samples)
    if shift >= 0:
        moved[shift:] = samples[:samples.size - shift]
    else:
        moved[:shift] = samples[-shift:]
    path = out_dir / f"{row['id']}-shifted.wav"
    soundfile.write(str(path), moved, rate, subtype="PCM_16")
    ref["uri"], ref["sha256"] = str(path), None
    return row


@pytest.mark.slow
@pytest.mark.parametrize(("offset_us", "words"), [(800_000, "audio lags video by 0.8"),
                                                   (1_500_000, "audio lags video by 1.5")])
def test_a_real_offset_stays_temporal_with_the_offset(clean_segments: pa.Table, tmp_path: Path,
                                                      offset_us: int, words: str) -> None:
    # Clips whose events all stay inside the clip once shifted: an event pushed past the clip's
    # edge leaves the streams with unequal event counts, which reads as foreign audio. (The
    # world's first event starts 0.4-0.8 s in, so audio that leads by more is not tested here;
    # test_segment_checks covers a lead on clips with room.)
    room = [row for row in clean_segments.to_pylist()
            if row["subtitles"][0]["start_us"] + min(offset_us, 0) > 200_000
            and row["subtitles"][-1]["start_us"] + row["subtitles"][-1]["duration_us"]
            + max(offset_us, 0) < row["duration_us"] - 200_000]
    assert len(room) >= 2
    rows = [_shift_audio(row, offset_us, tmp_path) for row in room[:4]]
    out = _check(rows, clean_segments.schema)
    for row in out.values():
        assert row["reject_code"] == ReasonCode.TEMPORAL, row["reject_detail"]
        assert words in row["reject_detail"]
        assert abs(row["av_offset_us"] - offset_us) <= 100_000


def test_subtitles_that_match_the_video_but_not_the_audio_name_the_audio() -> None:
    matched = Agreement(lag_us=0, first=2, second=2, matched=2, max_error_us=10_000)
    missed = Agreement(lag_us=100_000, first=2, second=2, matched=0, max_error_us=0)
    verdict = audio_odd_one_out(missed, matched, 500_000, 75_000)
    assert verdict is not None and verdict.code == ReasonCode.LOW_SCORE
    assert verdict.detail.startswith("audio does not belong to its video")
    assert "2 of 2 video events match the subtitles' 2" in verdict.detail
    assert "0 of 2 audio events match the subtitles' 2" in verdict.detail
    assert audio_odd_one_out(matched, matched, 500_000, 75_000) is None  # the audio agrees
    assert audio_odd_one_out(missed, missed, 500_000, 75_000) is None  # the subtitles are foreign
