"""Video-text scoring with the shipped demo CLIP: each segment's sampled frames against its
sentence. On a world the model never saw, a sentence that names another ball colour than the
video shows (``video_caption_wrong_colour``) falls under the demo config's ``min_video_score``
and every clean clip stays above it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import yaml

from pipeline.run.local_runner import read_inputs, run_stages
from pipeline.world import generate_world
from schemas.reason_codes import ReasonCode
from stages.clip_score import ClipScore
from stages.decode_media import DecodeMedia

REPO = Path(__file__).resolve().parents[2]


def _demo_stage_params(name: str) -> dict[str, Any]:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    for stage in cfg["stages"]:
        if isinstance(stage, dict) and stage["name"] == name:
            params = dict(stage["params"])
            if "checkpoint" in params:
                params["checkpoint"] = str(REPO / params["checkpoint"])
            return params
    raise AssertionError(f"{name} is not in the demo config")


@pytest.mark.slow
def test_a_sentence_with_the_wrong_ball_colour_is_low_score_and_clean_clips_pass(tmp_path: Path) -> None:
    world = generate_world(tmp_path / "world", n=600, fault_rate=0.5, seed=91)
    with open(world.manifest_path.parent / "faults.tsv", newline="") as fh:
        faults = {r["id"]: r["fault"] for r in csv.DictReader(fh, delimiter="\t")}
    # clips whose sentence names the colour the video shows: clean ones and those with a fault
    # elsewhere (audio, subtitles) that clip_score must not see
    colour_true = {"audio_from_other_clip", "subtitle_from_other_clip", "audio_offset", "subtitles_reversed",
                   "subtitle_after_end", "silent_audio", "nan_features"}
    rows = read_inputs([str(world.manifest_path)], 4 << 20)
    segments = rows.filter(pc.fill_null(pc.equal(rows["kind"], "segment"), False))
    wanted = [i for i, rid in enumerate(segments["id"].to_pylist())
              if faults.get(rid, "clean") in colour_true | {"clean", "video_caption_wrong_colour"}]
    segments = segments.take(wanted)
    decode = _demo_stage_params("decode_media")
    decode["audio"] = False
    clip = _demo_stage_params("clip_score")
    assert clip["min_video_score"] > 0
    out = run_stages(segments, [DecodeMedia(decode), ClipScore({**clip, "device": "cpu"})]).table
    verdicts = {r["id"]: r for r in out.select(["id", "status", "reject_code", "reject_detail"]).to_pylist()}
    wrong = [rid for rid in verdicts if faults.get(rid) == "video_caption_wrong_colour"]
    right = [rid for rid in verdicts if faults.get(rid, "clean") != "video_caption_wrong_colour"]
    assert len(wrong) >= 8 and len(right) >= 60, (len(wrong), len(right))
    for rid in wrong:
        assert verdicts[rid]["reject_code"] == ReasonCode.LOW_SCORE, verdicts[rid]
        assert "video" in verdicts[rid]["reject_detail"], verdicts[rid]
    assert [rid for rid in right if verdicts[rid]["status"] != "ok"] == []
