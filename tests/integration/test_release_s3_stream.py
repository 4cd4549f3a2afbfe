"""A release streamed to S3 (no ``build_dir``), on a real server (moto, server mode, 127.0.0.1):
each file goes up as it is written and no local copy is made; the manifest comes last, so a
release that fails after its shards leaves no manifest; running it again skips every file that
is already up (in one PUT or in parts) and commits."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest

from pipeline.release.writer import ReleaseError
from tests.integration.test_release_s3 import MIB, SMALL_PARTS, assert_complete, get, keys, release, text_manifest

pytestmark = [pytest.mark.s3]


def _no_local_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the temp dir at an empty folder: a streamed release must leave nothing there."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_streamed_release_uploads_as_it_writes_without_a_local_copy(s3_bucket: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = _no_local_copy(monkeypatch, tmp_path)
    root = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}"
    result = release(root, text_manifest(tmp_path), shard_target_bytes=1500, report_html="<html>r</html>")
    prefix = root.removeprefix(f"s3://{s3_bucket}/") + "/ds/v1"
    manifest = assert_complete(s3_bucket, prefix)
    assert result.uri == f"{root}/ds/v1" and manifest == result.manifest
    assert len([s for s in manifest["shards"] if s["kind"] == "text"]) > 2
    assert get(s3_bucket, prefix.removesuffix("/v1") + "/latest") == b"v1\n"
    files = len(manifest["shards"]) + 1 + (manifest["card"] is not None)  # + the report, the card
    assert result.publish["files_uploaded"] == files and result.publish["files_skipped"] == 0
    assert list(scratch.iterdir()) == []


def test_a_release_failing_after_its_shards_has_no_manifest_and_resumes(s3_bucket: str, tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}"
    prefix = root.removeprefix(f"s3://{s3_bucket}/") + "/ds/v1"
    manifest_path = text_manifest(tmp_path)

    def broken_report(found: object) -> str:
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError, match="report failed"):
        release(root, manifest_path, shard_target_bytes=1500, report_html=broken_report)
    up = keys(s3_bucket, prefix)
    assert up and f"{prefix}/manifest.json" not in up  # shards are up, the version is not committed
    assert not keys(s3_bucket, prefix.removesuffix("/v1") + "/latest")
    result = release(root, manifest_path, shard_target_bytes=1500, report_html="<html>r</html>")
    assert result.publish["files_skipped"] == len(up)  # same inputs, same shard bytes: not sent again
    manifest = assert_complete(s3_bucket, prefix)
    files = [s["path"] for s in manifest["shards"]] + ["manifest.json", "report/index.html"]
    files += [manifest["card"]["path"]] if manifest["card"] else []
    assert sorted(keys(s3_bucket, prefix)) == sorted(f"{prefix}/{f}" for f in files)


def test_large_shards_go_up_in_parts_and_an_overwrite_of_the_same_bytes_skips_them(s3_bucket: str,
                                                                                  tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}"
    prefix = root.removeprefix(f"s3://{s3_bucket}/") + "/ds/v1"
    manifest_path = text_manifest(tmp_path, n=200, payload=60_000)
    first = release(root, manifest_path, upload=SMALL_PARTS)
    assert first.publish["parts_uploaded"] >= 4  # two shards over 5 MiB, in 5 MiB parts
    big = [s for s in first.manifest["shards"] if s["bytes"] >= 5 * MIB]
    assert big and assert_complete(s3_bucket, prefix) == first.manifest
    with pytest.raises(ReleaseError, match="already exists"):
        release(root, manifest_path, upload=SMALL_PARTS)
    again = release(root, manifest_path, upload=SMALL_PARTS, overwrite=True)
    assert again.publish["files_uploaded"] == 0 and again.publish["parts_uploaded"] == 0
    assert again.publish["files_skipped"] == first.publish["files_uploaded"]
    assert assert_complete(s3_bucket, prefix) == again.manifest
