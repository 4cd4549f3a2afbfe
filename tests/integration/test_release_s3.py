"""Releases to S3 on a real server (moto, server mode, 127.0.0.1): shards then manifest then
``latest``; no overwrite unless asked; multipart, skip and resume of interrupted uploads; retries
with backoff while the server is down; a failed upload keeps its build and is finished by
``python -m pipeline.release.publish``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from pipeline.build import run_config
from pipeline.release.gates import GateError
from pipeline.release.publish import PublishError, UploadSettings, publish_directory, s3_client
from pipeline.release.writer import InputFingerprint, ReleaseError, write_release
from pipeline.run.config import parse_config
from pipeline.run.ingest import fingerprint_input
from pipeline.run.local_runner import read_inputs, run_stages
from stages.placeholder_lint import PlaceholderLint
from tests.ports import free_port

pytestmark = [pytest.mark.s3]
VOCAB = {"image": 8192, "audio": 8192, "video": 8192}
MIB = 2**20
SMALL_PARTS = UploadSettings(multipart_threshold=5 * MIB, part_size=5 * MIB, attempts=3, backoff_s=0.05)


def text_manifest(tmp_path: Path, n: int = 30, payload: int = 0, seed: int = 0) -> str:
    """Text records; ``payload`` random base64 characters each make the shards large."""
    import base64
    import random

    rng = random.Random(seed)
    lines = []
    for i in range(n):
        body = base64.b64encode(rng.randbytes(payload * 3 // 4)).decode() if payload else ""
        lines.append(json.dumps({"id": f"t-{i:04d}", "kind": "text", "content": f"text {i} {body}",
                                 "source": "s", "license": "CC0-1.0"}))
    path = tmp_path / f"m-{seed}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def release(root: str, manifest: str, **kw: Any) -> Any:
    table = run_stages(read_inputs([manifest], 1 << 24), [PlaceholderLint()]).table
    return write_release(table, root=root, dataset="ds", version="v1",
                         inputs=[InputFingerprint(manifest, *fingerprint_input(manifest))],
                         config_hash="c" * 64, code_version="test", vocab=VOCAB, **kw)


def get(bucket: str, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def assert_complete(bucket: str, prefix: str) -> dict:
    """The manifest is there, and every shard's bytes in the bucket match its entry."""
    manifest = json.loads(get(bucket, f"{prefix}/manifest.json"))
    for shard in manifest["shards"] + ([manifest["report"]] if manifest["report"] else []):
        blob = get(bucket, f"{prefix}/{shard['path']}")
        assert hashlib.sha256(blob).hexdigest() == shard["sha256"] and len(blob) == shard["bytes"]
    return manifest


def test_release_to_s3_writes_shards_manifest_and_latest(s3_bucket: str, tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}"
    result = release(root, text_manifest(tmp_path), shard_target_bytes=1500, build_dir=str(tmp_path / "build"),
                     report_html="<html>r</html>")
    prefix = root.removeprefix(f"s3://{s3_bucket}/") + "/ds/v1"
    manifest = assert_complete(s3_bucket, prefix)
    assert result.uri == f"{root}/ds/v1" and manifest == result.manifest
    assert len([s for s in manifest["shards"] if s["kind"] == "text"]) > 2
    assert get(s3_bucket, prefix.removesuffix("/v1") + "/latest") == b"v1\n"
    assert result.publish["files_uploaded"] == len(manifest["shards"]) + 2  # + the report and the card
    assert not (tmp_path / "build" / "ds" / "v1").exists()  # the local build is removed after upload


def test_existing_version_is_kept_unless_overwrite_and_stale_shards_go(s3_bucket: str, tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}"
    prefix = root.removeprefix(f"s3://{s3_bucket}/") + "/ds/v1"
    release(root, text_manifest(tmp_path), shard_target_bytes=1500)
    many = keys(s3_bucket, prefix)
    with pytest.raises(ReleaseError, match="already exists"):
        release(root, text_manifest(tmp_path), shard_target_bytes=1500)
    assert keys(s3_bucket, prefix) == many
    result = release(root, text_manifest(tmp_path), overwrite=True)  # one shard per kind now
    assert keys(s3_bucket, prefix) == sorted(f"{prefix}/{p}" for p in
                                             ["manifest.json", "README.md", "data/text-00000.parquet",
                                              "jsonl/text-00000.jsonl"])
    assert result.publish["stale_deleted"] == len(many) - 4
    assert len(assert_complete(s3_bucket, prefix)["shards"]) == 2


def build_local(tmp_path: Path, payload: int = 60_000, n: int = 200) -> Path:
    """A local release whose two shards are ~12 and ~16 MB (random text compresses little)."""
    result = release(str(tmp_path / "local"), text_manifest(tmp_path, n=n, payload=payload))
    return Path(result.uri)


def test_multipart_upload_then_skip_of_identical_files(s3_bucket: str, tmp_path: Path) -> None:
    local = build_local(tmp_path)
    uri = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/ds/v1"
    prefix = uri.removeprefix(f"s3://{s3_bucket}/")
    first = publish_directory(local, uri, settings=SMALL_PARTS)
    assert first.files_uploaded == 3 and first.parts_uploaded >= 5  # two shards and the card
    etag = boto3.client("s3").head_object(Bucket=s3_bucket, Key=f"{prefix}/jsonl/text-00000.jsonl")["ETag"]
    assert etag.strip('"').endswith("-3") or etag.strip('"').endswith("-4")  # went up in parts
    assert_complete(s3_bucket, prefix)
    boto3.client("s3").delete_object(Bucket=s3_bucket, Key=f"{prefix}/manifest.json")  # as if cut short
    again = publish_directory(local, uri, settings=SMALL_PARTS)
    assert (again.files_skipped, again.files_uploaded, again.parts_uploaded) == (3, 0, 0)
    assert json.loads(get(s3_bucket, f"{prefix}/manifest.json"))["version"] == "v1"


def test_interrupted_multipart_upload_is_resumed_part_by_part(s3_bucket: str, tmp_path: Path) -> None:
    local = build_local(tmp_path)
    uri = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/ds/v1"
    key = f"{uri.removeprefix(f's3://{s3_bucket}/')}/jsonl/text-00000.jsonl"
    data = (local / "jsonl" / "text-00000.jsonl").read_bytes()
    s3 = boto3.client("s3")
    upload = s3.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=1, Body=data[:5 * MIB])
    s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=2, Body=b"x" * (5 * MIB))  # stale bytes
    lines: list[str] = []
    stats = publish_directory(local, uri, settings=SMALL_PARTS, progress=lines.append)
    assert "resume jsonl/text-00000.jsonl: 1 of" in "\n".join(lines)
    assert stats.parts_reused == 1  # part 1 matched; part 2 did not and went up again
    assert get(s3_bucket, key) == data
    assert not s3.list_multipart_uploads(Bucket=s3_bucket, Prefix=key).get("Uploads")


def test_requests_are_retried_with_backoff_until_the_server_answers(s3_bucket: str, tmp_path: Path) -> None:
    """The endpoint refuses connections until the client has been refused twice; only then does a
    server come up there (moto servers in one process share their buckets). The server's start is
    driven by the refusals, not by a clock, so a slow machine cannot make the test pass or fail."""
    from moto.server import ThreadedMotoServer

    local = build_local(tmp_path, payload=100, n=20)
    port = free_port()
    late = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    client = s3_client(f"http://127.0.0.1:{port}")
    refused: list[str] = []

    def on_attempt(caught_exception: Exception | None = None, **_: object) -> None:
        if caught_exception is not None and len(refused) < 2:
            refused.append(type(caught_exception).__name__)
            if len(refused) == 2:
                late.start()

    client.meta.events.register("needs-retry.s3", on_attempt)
    try:
        settings = UploadSettings(attempts=8, backoff_s=0.05)
        stats = publish_directory(local, f"s3://{s3_bucket}/late/ds/v1", settings=settings,
                                  client=client)
    finally:
        late.stop()
    assert refused == ["EndpointConnectionError", "EndpointConnectionError"]
    assert stats.retries >= 2
    assert json.loads(get(s3_bucket, "late/ds/v1/manifest.json"))["dataset"] == "ds"


def test_a_backfill_does_not_move_latest_back(s3_bucket: str, tmp_path: Path) -> None:
    local = build_local(tmp_path, payload=100, n=5)
    base = f"{uuid.uuid4().hex[:8]}/ds"
    lines: list[str] = []
    publish_directory(local, f"s3://{s3_bucket}/{base}/2026-11-19")
    publish_directory(local, f"s3://{s3_bucket}/{base}/2026-11-16", progress=lines.append)
    assert get(s3_bucket, f"{base}/2026-11-16/manifest.json") == (local / "manifest.json").read_bytes()
    assert get(s3_bucket, f"{base}/latest") == b"2026-11-19\n"
    assert "latest stays on 2026-11-19 (2026-11-16 is older)" in lines
    publish_directory(local, f"s3://{s3_bucket}/{base}/2026-11-20")
    assert get(s3_bucket, f"{base}/latest") == b"2026-11-20\n"


def test_retries_give_up_with_a_clear_error(tmp_path: Path) -> None:
    local = build_local(tmp_path, payload=100, n=5)
    settings = UploadSettings(attempts=2, backoff_s=0.01)
    with pytest.raises(PublishError, match="failed after 2 attempts"):
        publish_directory(local, "s3://nobody/ds/v1", settings=settings,
                          client=s3_client(f"http://127.0.0.1:{free_port()}"))


def test_failed_upload_keeps_the_build_and_the_publish_command_finishes_it(s3_server: str, tmp_path: Path) -> None:
    bucket = f"later-{uuid.uuid4().hex[:8]}"  # does not exist yet: every PUT fails
    with pytest.raises(ReleaseError) as err:
        release(f"s3://{bucket}/rel", text_manifest(tmp_path), build_dir=str(tmp_path / "build"))
    message = str(err.value)
    built = tmp_path / "build" / "ds" / "v1"
    assert f"The built release is kept at {built}" in message
    assert f"xmodal publish {built} s3://{bucket}/rel/ds/v1" in message
    assert (built / "manifest.json").is_file()
    boto3.client("s3").create_bucket(Bucket=bucket)
    done = subprocess.run([sys.executable, "-m", "pipeline.release.publish", str(built), f"s3://{bucket}/rel/ds/v1"],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy(),
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["files_uploaded"] == 3  # a shard, the report, the card
    assert assert_complete(bucket, "rel/ds/v1") == json.loads((built / "manifest.json").read_text())


def test_run_to_s3_with_gates(s3_bucket: str, examples_dir: Path, tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}"
    cfg = parse_config({
        "dataset": "ex", "version": "v1", "inputs": [str(examples_dir / "objects.jsonl")],
        "stages": ["placeholder_lint", "media_check", "object_hallucination"],
        "release": {"output": root, "build_dir": str(tmp_path / "build")}, "gates": {"kept_min": 100},
    })
    with pytest.raises(GateError, match="kept_min FAILED"):
        run_config(cfg, local=True)
    prefix = root.removeprefix(f"s3://{s3_bucket}/")
    assert keys(s3_bucket, f"{prefix}/ex/") == [f"{prefix}/ex/_failed/v1/gates.json",
                                                f"{prefix}/ex/_failed/v1/report/index.html"]
    result = run_config(cfg.model_copy(update={"gates": cfg.gates.model_copy(update={"kept_min": 1})}), local=True)
    manifest = assert_complete(s3_bucket, f"{prefix}/ex/v1")
    assert manifest["gates"][0]["passed"] and result.publish and result.publish["files_uploaded"] >= 3
    assert not [k for k in keys(s3_bucket, f"{prefix}/ex/") if "/_failed/" in k]
