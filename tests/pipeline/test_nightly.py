"""Nightly builds on a real local Ray: byte-identical output, a published night skipped, a killed
build resumed after its last completed stage, a failed night recorded, the version lock (local
flock and S3 lease on a real S3 server), and retention."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from pipeline import cli
from pipeline.cluster.locks import LockHeld, lock_uri, version_lock
from pipeline.cluster.nightly import EXIT_LOCKED, FAILURE_RECORD, apply_retention, build_dir_uri, build_nightly
from pipeline.release.writer import InputFingerprint, write_release
from pipeline.run.config import RunConfig, parse_config
from schemas.records import ROW_SCHEMA
from tests.integration.example_world import write_world

DATE = "2026-11-20"
STAGES = ["placeholder_lint", "media_check", "segment_checks"]  # the kill lands in the slow last one
BIN = Path(sys.executable).parent


def make_inputs(tmp: Path, examples_dir: Path, copies: int = 1) -> list[str]:
    """Object and segment examples with their media (segment_checks is the slow stage)."""
    return [str(write_world(tmp, examples_dir, copies, ("objects.jsonl", "segments.jsonl")))]


def make_config(inputs: list[str], output: Path, stages: list[str] = STAGES) -> RunConfig:
    return parse_config({"dataset": "world", "version": "unused", "inputs": inputs, "stages": stages,
                         "release": {"output": str(output)}})


def shard_hashes(manifest: dict) -> dict[str, str]:
    return {s["path"]: s["sha256"] for s in manifest["shards"]}


def publish_tiny(root: str, version: str) -> None:
    """A one-row release written by the release step itself (no Ray): a night already built."""
    row: dict[str, object] = {f.name: None for f in ROW_SCHEMA}
    row.update(id="t-1", kind="text", content="plain", status="ok", source="s", license="CC0-1.0", media=[])
    write_release(pa.Table.from_pylist([row], schema=ROW_SCHEMA), root=root, dataset="world", version=version,
                  inputs=[InputFingerprint("m", 1, "x", 1)], config_hash="c", code_version="v",
                  vocab={"image": 8192, "audio": 8192, "video": 8192})


@pytest.fixture(scope="module")
def reference(ray_local: None, examples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict]:
    """One uninterrupted build of DATE: the inputs and the manifest the other builds must match."""
    tmp = tmp_path_factory.mktemp("reference")
    inputs = make_inputs(tmp, examples_dir, copies=2)
    result = build_nightly(make_config(inputs, tmp / "rel"), DATE)
    assert result.state == "built"
    return inputs, result.manifest


def test_same_date_builds_byte_identical_and_a_published_night_is_skipped(
    reference: tuple[list[str], dict], tmp_path: Path
) -> None:
    inputs, first = reference
    cfg = make_config(inputs, tmp_path / "rel")
    again = build_nightly(cfg, DATE)
    assert again.state == "built" and again.version == DATE
    assert shard_hashes(again.manifest) == shard_hashes(first)
    assert first["counts"]["input_records"] == 32 == first["counts"]["kept"] + first["counts"]["rejected"]
    release = tmp_path / "rel" / "world" / DATE
    for path, digest in shard_hashes(again.manifest).items():
        assert hashlib.sha256((release / path).read_bytes()).hexdigest() == digest
    assert not (tmp_path / "rel" / "world" / f".build-{DATE}").exists()  # checkpoints removed once published

    before = (release / "manifest.json").stat().st_mtime_ns
    skipped = build_nightly(cfg, DATE)
    assert skipped.state == "skipped" and shard_hashes(skipped.manifest) == shard_hashes(first)
    assert (release / "manifest.json").stat().st_mtime_ns == before


def test_killed_build_resumes_after_its_last_completed_stage(
    reference: tuple[list[str], dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import ray

    inputs, first = reference
    cfg = make_config(inputs, tmp_path / "rel")
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))
    stages_dir = Path(build_dir_uri(str(tmp_path / "rel"), "world", DATE)) / "stages"
    # The build runs as its own driver on the session's Ray; SIGKILL gives it no chance to clean up.
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen([str(BIN / "xmodal"), "nightly", str(tmp_path / "cfg.yaml"), "--date", DATE],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(stages_dir.glob("02-media_check-*/_done.json")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the build never finished media_check"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    release = tmp_path / "rel" / "world" / DATE
    assert not (release / "manifest.json").exists(), "the build finished before it could be killed"
    done = sorted(p.parent.name.split("-")[1] for p in stages_dir.glob("*/_done.json"))
    assert done == ["ingest", "media_check", "placeholder_lint"]

    with caplog.at_level(logging.INFO, logger="pipeline.run.ray_runner"):
        resumed = build_nightly(cfg, DATE)  # the kernel dropped the dead build's lock
    assert resumed.state == "built"
    assert "resuming after step 2/3 (media_check)" in caplog.text
    finished = [r.getMessage() for r in caplog.records if " done: " in r.getMessage()]
    assert len(finished) == 1 and finished[0].startswith("stage 3/3 segment_checks done")
    assert shard_hashes(resumed.manifest) == shard_hashes(first)


def test_failed_night_publishes_nothing_and_records_why(
    ray_local: None, examples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = make_inputs(tmp_path, examples_dir)
    root = tmp_path / "rel"
    publish_tiny(str(root), "2026-11-19")
    # Without placeholder_lint, rows with broken placeholders reach the release lint: it refuses.
    bad = make_config(inputs, root, ["media_check"])
    (tmp_path / "bad.yaml").write_text(json.dumps(bad.model_dump(mode="json")))
    assert cli.main(["nightly", str(tmp_path / "bad.yaml"), "--date", DATE]) == 2
    assert "placeholder lint failed" in capsys.readouterr().err
    assert not (root / "world" / DATE).exists()
    assert (root / "world" / "latest").read_text().strip() == "2026-11-19"
    record = json.loads((Path(build_dir_uri(str(root), "world", DATE)) / FAILURE_RECORD).read_text())
    assert record["version"] == DATE and "ReleaseError: placeholder lint failed" in record["error"]
    assert [s.split("-")[1] for s in record["checkpointed_steps"]] == ["ingest", "media_check"]
    with version_lock(str(root), "world", DATE):  # released despite the failure
        pass


def test_second_scheduler_is_locked_out(tmp_path: Path, examples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = make_inputs(tmp_path, examples_dir)
    (tmp_path / "cfg.yaml").write_text(json.dumps(make_config(inputs, tmp_path / "rel").model_dump(mode="json")))
    with version_lock(str(tmp_path / "rel"), "world", DATE):
        assert cli.main(["nightly", str(tmp_path / "cfg.yaml"), "--date", DATE]) == EXIT_LOCKED
        assert f"pid {os.getpid()}" in capsys.readouterr().err
        with pytest.raises(LockHeld):
            with version_lock(str(tmp_path / "rel"), "world", DATE):
                pass
    assert not (tmp_path / "rel" / "world" / f".build-{DATE}").exists()
    with version_lock(str(tmp_path / "rel"), "world", DATE):  # free again
        pass


@pytest.mark.s3
def test_s3_lease_excludes_renews_and_is_taken_over_when_stale(s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/nightly-lock"
    with version_lock(root, "world", DATE, lease_s=3.0):
        time.sleep(4.0)  # past one lease: only the heartbeat (every 1 s) keeps it held
        with pytest.raises(LockHeld, match="held by"):
            with version_lock(root, "world", DATE):
                pass
    with version_lock(root, "world", DATE):  # released on exit
        pass
    # A holder that died leaves its lease behind; once expired it is taken over.
    key = lock_uri(root, "world", DATE).removeprefix(f"s3://{s3_bucket}/")
    stale = {"owner": "dead", "host": "elsewhere", "pid": 1, "acquired_at": 0, "expires_at": time.time() - 1}
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(stale).encode())
    with version_lock(root, "world", DATE):
        body = json.loads(boto3.client("s3").get_object(Bucket=s3_bucket, Key=key)["Body"].read())
        assert body["pid"] == os.getpid()


def test_a_backfill_leaves_latest_on_the_newest_dated_version(tmp_path: Path) -> None:
    root = str(tmp_path / "rel")
    latest = tmp_path / "rel" / "world" / "latest"
    publish_tiny(root, "2026-11-19")
    publish_tiny(root, "2026-11-16")  # a backfill: published, but not the newest
    assert (tmp_path / "rel" / "world" / "2026-11-16" / "manifest.json").is_file()
    assert latest.read_text() == "2026-11-19\n"
    publish_tiny(root, "2026-11-20")
    assert latest.read_text() == "2026-11-20\n"
    publish_tiny(root, "demo")  # an undated version is always published as latest
    assert latest.read_text() == "demo\n"
    publish_tiny(root, "2026-11-18")  # and a dated one after it moves latest again
    assert latest.read_text() == "2026-11-18\n"


def test_retention_keeps_the_newest_dated_versions(tmp_path: Path) -> None:
    root = str(tmp_path / "rel")
    for version in ("2026-11-17", "demo", "2026-11-18", "2026-11-19", "2026-11-16"):
        publish_tiny(root, version)
    # An operator rolled ``latest`` back to 2026-11-16: it survives although it is the oldest.
    (tmp_path / "rel" / "world" / "latest").write_text("2026-11-16\n")
    removed = apply_retention(root, "world", keep=2, protect=set())
    assert removed == ["2026-11-17"]
    left = sorted(p.name for p in (tmp_path / "rel" / "world").iterdir() if p.is_dir())
    assert left == ["2026-11-16", "2026-11-18", "2026-11-19", "demo"]
    assert apply_retention(root, "world", keep=0, protect=set()) == []
