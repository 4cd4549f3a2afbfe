"""The Ray Data runner on a real local Ray, reading a manifest and its media from a real S3
server (moto) on 127.0.0.1, releasing to disk; a re-run overwrites rather than appends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest

from pipeline.build import run_config
from pipeline.release.writer import ReleaseError
from pipeline.run.config import parse_config

pytestmark = [pytest.mark.ray, pytest.mark.s3]


def upload_examples(bucket: str, examples_dir: Path) -> str:
    s3 = boto3.client("s3")
    for media in (examples_dir / "media").glob("obj-*.png"):
        s3.upload_file(str(media), bucket, f"world/media/{media.name}")
    lines = (examples_dir / "objects.jsonl").read_text().splitlines()
    lines.append('{"id": "obj-truncated", "kind": "object", "content": "')
    s3.put_object(Bucket=bucket, Key="world/objects.jsonl", Body=("\n".join(lines) + "\n").encode())
    return f"s3://{bucket}/world/objects.jsonl"


def test_ray_run_from_s3_reconciles_and_overwrites(
    ray_local: None, s3_bucket: str, examples_dir: Path, tmp_path: Path
) -> None:
    manifest = upload_examples(s3_bucket, examples_dir)
    cfg = parse_config(
        {
            "dataset": "examples",
            "version": "v1",
            "inputs": [manifest],
            "stages": ["placeholder_lint", {"name": "media_check", "resources": {"num_cpus": 0.25, "actors": [1, 1]}}],
            "release": {"output": str(tmp_path / "rel"), "overwrite": True},
        }
    )
    result = run_config(cfg)
    counts = result.manifest["counts"]
    assert counts["input_records"] == 14 == counts["kept"] + counts["rejected"]
    assert counts["rejected_by_code"]["ERR_CROSS_MDL_SCHEMA"] == 2  # obj-schema + the truncated line
    assert counts["rejected_by_code"]["ERR_CROSS_MDL_TOKEN_FMT"] == 3
    assert counts["rejected_by_code"]["ERR_CROSS_MDL_MEDIA"] == 2  # traversal + checksum, read from S3
    root = Path(result.uri)
    rows = [json.loads(line) for line in (root / "jsonl" / "object-00000.jsonl").read_text().splitlines()]
    assert len(rows) == counts["kept"]
    # media read from S3, copied into the release (release.media: copy, the default)
    refs = [ref["uri"] for r in rows for ref in r["media"]]
    assert refs and all(u.startswith("media/") and (root / u).is_file() for u in refs), refs
    first = {s["path"]: s["sha256"] for s in result.manifest["shards"]}
    for path, digest in first.items():
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest

    again = run_config(cfg)  # overwrite: same rows, not doubled
    assert again.manifest["counts"] == counts
    assert {s["path"]: s["sha256"] for s in again.manifest["shards"]} == first
    assert not [p for p in (tmp_path / "rel" / "examples").iterdir() if p.name.startswith(".")]

    with pytest.raises(ReleaseError, match="already exists"):
        run_config(cfg.model_copy(update={"release": cfg.release.model_copy(update={"overwrite": False})}))
