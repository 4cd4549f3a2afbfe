"""segment_align: sub-segments, caps and quota, continuity, temporal-shift negatives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.reason_codes import ReasonCode
from stages.dtw_plan import choose_downsample, chunk_bounds, stitch
from stages.registry import get_stage_class
from stages.segment_align import SegmentAlign, kendall_continuity, shifted_window
from stages.segment_checks import SegmentChecks
from tests.stages.segment_media import EVENTS_US, SR, examples_dir, rows_table, write_segment

US = 1_000_000


def _parents(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in table.filter(pc.is_null(table["parent_id"])).to_pylist()}


def _negatives(table: pa.Table) -> list[dict[str, Any]]:
    return table.filter(pc.is_valid(table["parent_id"])).to_pylist()


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("align")
    return root, write_segment(root, "clean")


def test_registered() -> None:
    assert get_stage_class("segment_align") is SegmentAlign


def test_clean_segment_gives_subsegments_in_integer_microseconds(
        clean_world: tuple[Path, dict[str, Any]]) -> None:
    root, record = clean_world
    out = SegmentAlign()(rows_table([record], root))
    row = _parents(out)["clean"]
    assert row["status"] == "ok" and row["dtw_method"] == "exact"
    assert row["dtw_downsample"] == 1 and row["continuity_tau"] == 1.0
    assert row["dtw_path_length"] >= 750 and row["dtw_cost"] > 0
    assert len(row["alignment"]) == len(EVENTS_US)
    for entry, (start, end) in zip(row["alignment"], EVENTS_US, strict=True):
        assert (entry["start_us"], entry["duration_us"]) == (start, end - start)
        assert (entry["video_frame_start"], entry["video_frame_end"]) == (start // 100_000,
                                                                          end // 100_000)
        # in sync: the audio stretch matches the subtitle within 0.3 s at both ends
        assert abs(entry["audio_start_us"] - start) <= 300_000
        assert abs(entry["audio_start_us"] + entry["audio_duration_us"] - end) <= 300_000
        assert entry["audio_sample_start"] == entry["audio_start_us"] * SR // US
        assert entry["audio_sample_end"] > entry["audio_sample_start"]
        assert entry["path_length"] > 0 and entry["dtw_cost"] >= 0
        assert all(isinstance(entry[k], int) for k in entry if k.endswith(("_us", "_start",
                                                                            "_end")))


def test_negatives_are_shifted_windows_with_a_parent(clean_world: tuple[Path, dict[str, Any]]
                                                     ) -> None:
    root, record = clean_world
    table = rows_table([record], root)
    out = SegmentAlign({"negative_guard_us": 500_000})(table)
    assert out.filter(pc.is_null(out["parent_id"])).num_rows == table.num_rows
    negatives = _negatives(out)
    assert len(negatives) == len(EVENTS_US)
    for neg in negatives:
        assert neg["parent_id"] == "clean" and neg["negative_type"] == "temporal_shift"
        k = int(neg["id"].rsplit("tneg", 1)[1])
        start, end = EVENTS_US[k]
        (window,) = neg["subtitles"]
        assert window["text"] == record["subtitles"][k]["text"]
        w0, w1 = window["start_us"], window["start_us"] + window["duration_us"]
        assert w1 <= start - 500_000 or w0 >= end + 500_000  # no overlap, guard kept
        assert 0 <= w0 and w1 <= 15 * US
        assert neg["negative_shift_us"] == w0 - start
        assert neg["alignment"][0]["video_frame_start"] == w0 * 10 // US
    again = _negatives(SegmentAlign({"negative_guard_us": 500_000})(table))
    assert [n["subtitles"] for n in again] == [n["subtitles"] for n in negatives]


def test_memory_quota_downsamples_then_rejects(clean_world: tuple[Path, dict[str, Any]]
                                               ) -> None:
    root, record = clean_world
    table = rows_table([record], root)
    tight = _parents(SegmentAlign({"memory_quota_bytes": 40_000})(table))["clean"]
    assert tight["status"] == "ok" and tight["dtw_downsample"] > 1
    oom = _parents(SegmentAlign({"memory_quota_bytes": 14_000})(table))["clean"]
    assert oom["reject_code"] == ReasonCode.DTW_OOM
    assert "over the quota" in oom["reject_detail"]


@pytest.mark.parametrize("params", [
    {"max_whole_us": 10 * US, "chunk_us": 6 * US, "chunk_overlap_us": 2 * US},
    {"max_whole_us": 10 * US, "long_mode": "band", "long_band_us": 500_000},
    {"method": "fastdtw", "radius": 10},
])
def test_long_modes_and_fastdtw_still_align(clean_world: tuple[Path, dict[str, Any]],
                                            params: dict[str, Any]) -> None:
    if params.get("method") == "fastdtw":
        pytest.importorskip("fastdtw")
    root, record = clean_world
    row = _parents(SegmentAlign(params)(rows_table([record], root)))["clean"]
    assert row["status"] == "ok" and row["continuity_tau"] == 1.0
    for entry, (start, _) in zip(row["alignment"], EVENTS_US, strict=True):
        assert abs(entry["audio_start_us"] - start) <= 500_000


def test_reversed_subtitles_lower_the_continuity_score(tmp_path: Path) -> None:
    subs = [{"start_us": a, "duration_us": b - a, "text": f"e{k}"}
            for k, (a, b) in enumerate(EVENTS_US)][::-1]
    record = write_segment(tmp_path, "rev", subtitles=subs)
    row = _parents(SegmentAlign()(rows_table([record], tmp_path)))["rev"]
    assert row["continuity_tau"] == -1.0


def test_checks_then_align_on_the_examples() -> None:
    root = examples_dir()
    from pipeline.run.ingest import read_manifest

    out = SegmentAlign()(SegmentChecks()(read_manifest(str(root / "segments.jsonl"))))
    parents = _parents(out)
    assert [r["status"] for r in parents.values()] == ["ok", "rejected", "rejected"]
    assert parents["seg-offset"]["alignment"] is None  # rejected rows pass untouched
    assert {n["parent_id"] for n in _negatives(out)} == {"seg-clean"}


def test_missing_audio_is_media(tmp_path: Path) -> None:
    record = write_segment(tmp_path, "mute")
    record["media"] = record["media"][:1]
    row = _parents(SegmentAlign()(rows_table([record], tmp_path)))["mute"]
    assert row["reject_code"] == ReasonCode.MEDIA


# ---- pure helpers ------------------------------------------------------------------------
@given(duration=st.integers(1, 10**9), chunk=st.integers(1, 10**8), overlap=st.integers(0, 10**8))
def test_chunks_cover_the_segment(duration: int, chunk: int, overlap: int) -> None:
    overlap = min(overlap, chunk - 1)
    if duration // max(1, chunk - overlap) > 5000:
        return
    bounds = chunk_bounds(duration, chunk, overlap)
    assert bounds[0][0] == 0 and bounds[-1][1] == duration
    for (a0, a1), (b0, _) in zip(bounds, bounds[1:], strict=False):
        assert b0 <= a1 and b0 > a0  # contiguous or overlapping, always advancing


@given(start=st.integers(0, 10**7), duration=st.integers(1, 10**7), clip=st.integers(1, 10**8),
       guard=st.integers(0, 10**6), seed=st.integers(0, 2**32))
def test_shifted_window_never_overlaps_the_guarded_span(start: int, duration: int, clip: int,
                                                       guard: int, seed: int) -> None:
    window = shifted_window(start, duration, clip, guard, np.random.default_rng(seed))
    if window is None:
        return
    assert 0 <= window and window + duration <= clip
    assert window + duration <= start - guard or window >= start + duration + guard


def test_choose_downsample_and_continuity() -> None:
    assert choose_downsample(900, 1500, 3, "exact", 50, 10, 10**9, 8)[0] == 1
    assert choose_downsample(90_000, 150_000, 3, "exact", 50, 10, 8 * 2**20, 8)[0] > 1
    assert kendall_continuity([1, 2, 3]) == 1.0 and kendall_continuity([5]) == 1.0
    assert kendall_continuity([3, 2, 1]) == -1.0


def test_stitch_is_monotone() -> None:
    a = np.array([[0, 0], [10, 12], [20, 25], [30, 31]])
    b = np.array([[15, 14], [25, 24], [35, 36], [45, 44]])
    path, costs = stitch([(0, a, np.ones(4)), (22, b, np.ones(4))])
    assert (np.diff(path, axis=0) >= 0).all() and len(path) == len(costs)
    assert path[-1].tolist() == [45, 44]


def test_record_window_limits_alignment_and_negatives(tmp_path: Path) -> None:
    subs = [{"start_us": 6_500_000, "duration_us": 1_500_000, "text": "middle event"}]
    record = {**write_segment(tmp_path, "win", subtitles=subs), "start_us": 5 * US,
              "duration_us": 6 * US}
    out = SegmentAlign({"negative_guard_us": 0})(rows_table([record], tmp_path))
    row = _parents(out)["win"]
    assert row["status"] == "ok" and 300 <= row["dtw_path_length"] < 60 + 300  # 6 s only
    (neg,) = _negatives(out)
    w0 = neg["subtitles"][0]["start_us"]
    assert 5 * US <= w0 and w0 + 1_500_000 <= 11 * US
    outside = {**record, "start_us": 20 * US}
    row = _parents(SegmentAlign()(rows_table([outside], tmp_path)))["win"]
    assert row["reject_code"] == ReasonCode.TEMPORAL
