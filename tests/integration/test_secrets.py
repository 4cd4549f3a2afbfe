"""No S3 credential reaches a file or log that a Ray run writes.

A fresh driver (its own process, its own local Ray under a temp dir of the test) runs a config
whose manifest and media are on a real S3 server (moto, 127.0.0.1), with canary credentials in
its environment. Its workers must still see them (they inherit the driver's environment), and
not one canary may appear in Ray's temp folder (session logs, runtime_env_agent.log), the
release, the output folder or what the driver printed. Before the fix the secret was passed in
the runtime_env and Ray wrote it to runtime_env_agent.log in plain text.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from pipeline.run.config import parse_config
from pipeline.run.ray_runner import CREDENTIAL_ENV, worker_env

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.slow]
PROJECT = Path(__file__).resolve().parents[2]

DRIVER = """
import hashlib, json, os, sys
import ray
from pipeline.build import run_config
from pipeline.run.config import load_config

result = run_config(load_config(sys.argv[1]))

@ray.remote(num_cpus=0.25)
def secret_digest():
    return hashlib.sha256(os.environ.get("AWS_SECRET_ACCESS_KEY", "").encode()).hexdigest()

print("SUMMARY " + json.dumps({"counts": result.manifest["counts"], "worker_digest": ray.get(secret_digest.remote())}))
ray.shutdown()
"""


def upload_examples(bucket: str, examples_dir: Path, prefix: str) -> str:
    s3 = boto3.client("s3")
    for media in (examples_dir / "media").glob("obj-*.png"):
        s3.upload_file(str(media), bucket, f"{prefix}/media/{media.name}")
    s3.upload_file(str(examples_dir / "objects.jsonl"), bucket, f"{prefix}/objects.jsonl")
    return f"s3://{bucket}/{prefix}/objects.jsonl"


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {n[:12]!r}…" for n in needles if n in data]
    return hits


def test_worker_env_never_carries_credentials() -> None:
    base = {"dataset": "d", "version": "v", "inputs": ["m.jsonl"]}
    environ = {"AWS_ENDPOINT_URL": "http://s3:9000", "AWS_DEFAULT_REGION": "eu-west-1",
               "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    assert worker_env(parse_config(base), environ) == {"AWS_ENDPOINT_URL": "http://s3:9000",
                                                        "AWS_DEFAULT_REGION": "eu-west-1"}
    cfg = parse_config({**base, "ray": {"s3_credentials_file": "/etc/xmodal/aws-credentials"}})
    env = worker_env(cfg, environ)
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/xmodal/aws-credentials"
    assert not set(env) & set(CREDENTIAL_ENV)


def test_a_ray_run_writes_no_credential_anywhere(s3_server: str, s3_bucket: str, examples_dir: Path,
                                                 tmp_path: Path) -> None:
    canaries = {"AWS_ACCESS_KEY_ID": f"AKIACANARY{secrets.token_hex(5).upper()}",
                "AWS_SECRET_ACCESS_KEY": f"canary-secret-{secrets.token_hex(16)}",
                "AWS_SESSION_TOKEN": f"canary-session-{secrets.token_hex(16)}"}
    manifest = upload_examples(s3_bucket, examples_dir, f"canary-{secrets.token_hex(4)}")
    ray_temp = Path("/tmp") / f"xr-{secrets.token_hex(4)}"  # short: Ray's socket paths are length-limited
    output = tmp_path / "rel"
    config = tmp_path / "canary.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "canary", "version": "v1", "inputs": [manifest],
        "stages": ["placeholder_lint", {"name": "media_check", "resources": {"num_cpus": 0.25}}],
        "ray": {"num_cpus": 2, "temp_dir": str(ray_temp)},
        "release": {"output": str(output)},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(canaries, AWS_ENDPOINT_URL=s3_server, AWS_DEFAULT_REGION="us-east-1", PYTHONUNBUFFERED="1")
    try:
        done = subprocess.run([sys.executable, "-c", DRIVER, str(config)], capture_output=True, text=True,
                              env=env, cwd=PROJECT, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("SUMMARY ")]
        assert lines, done.stdout[-3000:] + done.stderr[-3000:]
        summary = json.loads(lines[-1].removeprefix("SUMMARY "))
        counts = summary["counts"]
        assert counts["input_records"] == 13 == counts["kept"] + counts["rejected"]
        assert counts["rejected_by_code"]["ERR_CROSS_MDL_MEDIA"] == 2  # traversal + checksum, read from S3
        # The workers had the secret all along: inherited from the driver, not sent to them.
        assert summary["worker_digest"] == hashlib.sha256(canaries["AWS_SECRET_ACCESS_KEY"].encode()).hexdigest()

        needles = [v.encode() for v in canaries.values()]
        assert (ray_temp / "session_latest" / "logs").is_dir()
        assert list(ray_temp.rglob("runtime_env_agent.log"))  # the log the secret used to be in
        assert files_containing(ray_temp, needles) == []
        assert files_containing(output, needles) == []
        assert not any(n.decode() in done.stdout + done.stderr for n in needles)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
