"""segment_checks: temporal and fusion faults get their exact reason code, clean rows pass."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import soundfile

from pipeline.run.ingest import read_manifest
from schemas.reason_codes import ReasonCode
from stages.registry import MODEL_FREE_CHECKS, get_stage_class
from stages.segment_checks import SegmentChecks, check_timed_text
from tests.stages.segment_media import SR, examples_dir, rows_table, write_segment

US = 1_000_000
SEGMENT_FAULTS = {"audio_offset", "subtitles_reversed", "subtitle_after_end", "silent_audio",
                  "black_video", "nan_features"}


def _by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in table.to_pylist()}


def _check(records: list[dict[str, Any]], root: Path, **params: Any) -> dict[str, dict[str, Any]]:
    table = rows_table(records, root)
    out = SegmentChecks(params)(table)
    assert out.num_rows == table.num_rows
    return _by_id(out)


def test_registered_as_a_model_free_check() -> None:
    assert get_stage_class("segment_checks") is SegmentChecks
    assert "segment_checks" in MODEL_FREE_CHECKS


def test_examples_come_out_as_expected() -> None:
    root = examples_dir()
    with open(root / "expected.tsv", newline="") as handle:
        expected = {r["id"]: r for r in csv.DictReader(handle, delimiter="\t")
                    if r["id"].startswith("seg-")}
    out = _by_id(SegmentChecks()(read_manifest(str(root / "segments.jsonl"))))
    assert set(expected) <= set(out)
    for seg_id, want in expected.items():
        assert out[seg_id]["status"] == want["status"], out[seg_id]["reject_detail"]
        assert (out[seg_id]["reject_code"] or "") == want["code"]
    assert "lags video by 1.5" in out["seg-offset"]["reject_detail"]
    assert "out of time order" in out["seg-reversed"]["reject_detail"]
    assert abs(out["seg-clean"]["av_offset_us"]) < 200_000


@pytest.mark.parametrize(("media", "words"), [
    ({"audio": "silent"}, "audio is silent: 95th percentile frame level -120.0 dBFS"),
    ({"audio": "noise"}, "audio is noise only: spectral flatness"),
    ({"video": "black"}, "video is all black: brightest frame mean grey 0.0"),
    ({"video": "frozen"}, "video is frozen: max motion energy 0.000"),
])
def test_fusion_faults_are_rejected_with_the_measured_value(tmp_path: Path, media: dict[str, str],
                                                            words: str) -> None:
    rows = _check([write_segment(tmp_path, "clean"), write_segment(tmp_path, "bad", **media)],
                  tmp_path)
    assert rows["clean"]["status"] == "ok" and rows["clean"]["reject_code"] is None
    assert rows["bad"]["reject_code"] == ReasonCode.FUSION
    assert rows["bad"]["reject_stage"] == "segment_checks"
    assert words in rows["bad"]["reject_detail"]


@pytest.mark.parametrize("values", [np.nan, np.inf, 1e9])
def test_bad_precomputed_features_are_fusion(tmp_path: Path, values: float) -> None:
    record = write_segment(tmp_path, "npy")
    features = np.zeros((150, 16), np.float32)
    features[40:50] = values
    np.save(tmp_path / "media" / "npy.npy", features)
    record["media"][0]["features_path"] = "media/npy.npy"
    row = _check([record], tmp_path)["npy"]
    assert row["reject_code"] == ReasonCode.FUSION
    assert "features_path media/npy.npy" in row["reject_detail"]


def test_non_finite_audio_samples_are_fusion(tmp_path: Path) -> None:
    record = write_segment(tmp_path, "nanwav")
    samples = np.zeros(15 * SR, np.float32)
    samples[1000:2000] = np.nan
    soundfile.write(str(tmp_path / "media" / "nanwav.wav"), samples, SR, subtype="FLOAT")
    row = _check([record], tmp_path)["nanwav"]
    assert row["reject_code"] == ReasonCode.FUSION
    assert "non-finite values" in row["reject_detail"]


def test_offset_beyond_tolerance_is_temporal_with_the_offset(tmp_path: Path) -> None:
    rows = _check([write_segment(tmp_path, "late", offset_us=1_500_000),
                   write_segment(tmp_path, "early", offset_us=-1_500_000),
                   write_segment(tmp_path, "near", offset_us=200_000)], tmp_path)
    assert rows["late"]["reject_code"] == ReasonCode.TEMPORAL
    assert "audio lags video by 1." in rows["late"]["reject_detail"]
    assert abs(rows["late"]["av_offset_us"] - 1_500_000) <= 100_000
    assert rows["early"]["reject_code"] == ReasonCode.TEMPORAL
    assert "audio leads video" in rows["early"]["reject_detail"]
    assert rows["near"]["status"] == "ok"
    loose = _check([write_segment(tmp_path, "late", offset_us=1_500_000)], tmp_path,
                   max_offset_us=2_000_000)
    assert loose["late"]["status"] == "ok"


@pytest.mark.parametrize(("subtitles", "words"), [
    ([(5, 1), (2, 1)], "out of time order"),
    ([(2, 2), (3, 1)], "overlap"),
    ([(2, 1), (15, 1)], "after the media ends at 15.000 s"),
    ([(14, 2)], "after the media ends"),
])
def test_subtitle_faults_are_temporal(tmp_path: Path, subtitles: list[tuple[int, int]],
                                      words: str) -> None:
    subs = [{"start_us": s * US, "duration_us": d * US, "text": f"s{k}"}
            for k, (s, d) in enumerate(subtitles)]
    row = _check([write_segment(tmp_path, "subs", subtitles=subs)], tmp_path)["subs"]
    assert row["reject_code"] == ReasonCode.TEMPORAL
    assert words in row["reject_detail"]


def test_timed_text_checks_use_the_segment_window() -> None:
    subs = [{"start_us": 1 * US, "duration_us": US, "text": "a"}]
    assert check_timed_text(subs, "words", 0, None) is None
    verdict = check_timed_text(subs, "words", 2 * US, 10 * US)
    assert verdict is not None and verdict.code == ReasonCode.TEMPORAL
    assert "before the segment starts" in verdict.detail


def test_missing_media_is_media_and_other_rows_pass_untouched(tmp_path: Path) -> None:
    record = write_segment(tmp_path, "gone")
    (tmp_path / "media" / "gone.wav").unlink()
    table = rows_table([record, {"id": "txt", "kind": "text", "content": "hello",
                                 "source": "t", "license": "CC0-1.0"}], tmp_path)
    rows = _by_id(SegmentChecks()(table))
    assert rows["gone"]["reject_code"] == ReasonCode.MEDIA
    assert rows["txt"]["status"] == "ok" and rows["txt"]["av_offset_us"] is None


def test_sample_world_segment_faults_are_all_caught(tmp_path: Path) -> None:
    sample_world = pytest.importorskip("pipeline.world")
    caught: set[str] = set()
    clean_seen = 0
    for seed in (3, 4):  # between them these two worlds plant all six segment faults
        out_dir = tmp_path / f"world-{seed}"
        sample_world.generate_world(out_dir, n=60, fault_rate=0.3, seed=seed)
        with open(out_dir / "faults.tsv", newline="") as handle:
            faults = {r["id"]: r for r in csv.DictReader(handle, delimiter="\t")}
        table = read_manifest(str(out_dir / "manifest.jsonl"))
        table = table.filter(pc.fill_null(pc.equal(table["kind"], "segment"), False))
        rows = _by_id(SegmentChecks()(table))
        for seg_id, row in rows.items():
            fault = faults.get(seg_id)
            if fault is None:
                clean_seen += 1
                assert row["status"] == "ok", (seg_id, row["reject_detail"])
            elif fault["fault"] in SEGMENT_FAULTS:
                assert row["reject_code"] == fault["expected_code"], (seg_id, fault, row)
                caught.add(fault["fault"])
    assert clean_seen >= 5
    assert len(caught) >= 4, caught  # the generator planted several kinds
