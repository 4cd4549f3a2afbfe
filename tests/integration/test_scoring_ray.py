"""decode_media -> clip_score -> clap_score on a real local Ray: the scorers run as actor pools
with fractional CPUs, give the scores of the in-process runner, and release their embeddings but
not the decoded arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.build import run_config
from pipeline.run.config import parse_config
from pipeline.world import generate_world
from tests.stages.tiny_models import (
    CLAP_RATE,
    CLIP_IMAGE_SIZE,
    sha256_of,
    write_tiny_clap,
    write_tiny_open_clip,
)

pytestmark = [pytest.mark.ray]


def released_rows(root: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted((root / "jsonl").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


def test_scoring_actors_on_local_ray_match_the_local_runner(ray_local: None, tmp_path: Path) -> None:
    generate_world(tmp_path / "world", n=20, fault_rate=0.1, seed=11)
    clip = write_tiny_open_clip(tmp_path / "clip")
    clap = write_tiny_clap(tmp_path / "clap")
    actor = {"num_cpus": 0.5, "actors": [1, 1], "batch_size": 8}
    config = {
        "dataset": "scoring", "version": "ray", "inputs": [str(tmp_path / "world" / "manifest.jsonl")],
        "stages": [
            "placeholder_lint",
            "media_check",
            {"name": "decode_media", "params": {"image_size": CLIP_IMAGE_SIZE, "video_frames": 4,
                                                "audio_sample_rate": CLAP_RATE, "max_audio_s": 2.0},
             "resources": {"num_cpus": 0.5, "batch_size": 8}},
            {"name": "clip_score", "params": {
                "checkpoint": str(clip), "num_threads": 1,
                "checkpoint_sha256": sha256_of(clip / "open_clip_model.safetensors")},
             "resources": actor},
            {"name": "clap_score", "params": {
                "checkpoint": str(clap), "num_threads": 1,
                "checkpoint_sha256": sha256_of(clap / "model.safetensors")},
             "resources": actor},
        ],
        "release": {"output": str(tmp_path / "rel"), "overwrite": True},
    }
    on_ray = run_config(parse_config(config))
    local = run_config(parse_config({**config, "version": "local"}), local=True)
    assert on_ray.manifest["counts"] == local.manifest["counts"]
    assert on_ray.manifest["counts"]["kept"] >= 17
    ray_rows, local_rows = released_rows(Path(on_ray.uri)), released_rows(Path(local.uri))
    assert ray_rows.keys() == local_rows.keys()
    scored = {"object": 0, "segment": 0, "document": 0}
    for rid, row in ray_rows.items():
        assert all(row.get(c) is None for c in ("decoded_images", "decoded_crops", "decoded_audio"))
        if row["kind"] in scored:
            scored[row["kind"]] += 1
            assert row["clip_score"] == pytest.approx(local_rows[rid]["clip_score"], abs=1e-5)
            emb = np.atleast_2d(np.asarray(row["clip_image_emb"], np.float32))  # fixed-size: one vector per row
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
        if row["kind"] == "segment":
            assert row["clap_score"] == pytest.approx(local_rows[rid]["clap_score"], abs=1e-5)
    assert all(scored.values()), scored
