"""Shared fixtures: a real S3-compatible server (moto, server mode) and a real local Ray.

Both listen on 127.0.0.1 only and are stopped by the fixture that started them. Ray gets its own
temp dir under the test's tmp dir and explicit token-auth settings; nothing here runs `ray stop`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray caches its auth mode for the whole process the first time it reads it, and the cluster
# tests delete RAY_* variables for their own client checks. The in-process local Ray therefore
# runs with auth explicitly disabled (loopback/sandbox only, stopped by its fixture); token auth
# is tested against the real head started by tests/integration/test_cluster.py.
os.environ["RAY_AUTH_MODE"] = "disabled"

# The example records and the vendored KubeRay CRDs live in the project (tests/fixtures, with
# their provenance): a lone clone runs every test, and nothing reads a folder beside the checkout.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = FIXTURES / "examples"
CRDS = FIXTURES / "crds"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def crds_dir() -> Path:
    return CRDS


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1; sets the AWS_* environment for boto3, pyarrow and Ray."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    from access import io as xio

    xio._s3_filesystem.cache_clear()
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        xio._s3_filesystem.cache_clear()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: str) -> str:
    import boto3

    name = "xmodal-test"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[None]:
    """A real local Ray (2 CPUs) for the session. Depends on the S3 server so that its
    environment is in place before ``ray.init()`` (workers inherit it). Auth settings are
    set at the top of this file."""
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the same value Ray cached at its first read
    import ray

    temp_dir = Path("/tmp") / f"xr-{secrets.token_hex(4)}"  # short: Ray's socket paths are length-limited
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp_dir), log_to_driver=False)
    try:
        yield None
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
